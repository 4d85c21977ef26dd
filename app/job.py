"""One job execution: plan (account, day) units, take this task's share, reuse the fresh day
snapshots, fetch the rest, run the second pass, replace day snapshots, compose the run's result,
write the summary.

Nothing below this module knows about Cloud Run tasks; this module knows nothing about HTTP or
where bytes end up (that is `involve_asia`/`http`, and `store`/`sinks`). The run's status and
exit code are decided in `outcome.decide`, from the unit states this module records.
"""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import summary as summary_mod
from app.api import TOKEN_TTL
from app.config import Account, Settings
from app.errors import AlreadyExists, JobError, StorageError
from app.fetch import AccountFetch, OpenUnit, RecordBudget
from app.http import HttpClient
from app.logs import current_language, get_logger
from app.messages import render_message
from app.models import Page
from app.monitor import ResourceMonitor, Watchdog
from app.outcome import (
    EXIT_OK,
    DayFetch,
    Disposition,
    KeepReason,
    Outcome,
    Status,
    StopReason,
    StoredDay,
    UnitState,
    Verdict,
    decide,
    settle,
)
from app.output import put_json, read_json
from app.pager import RunState, UnitOutcome
from app.progress import Progress
from app.sinks import ObjectInfo, Sink, StorageRetry, is_compose_scratch
from app.store import (
    DayChange,
    DayStore,
    Replacement,
    RunLayout,
    Snapshot,
    SnapshotMeta,
    iso_utc,
    recorded_change,
    stored_days,
)
from app.summary import UnitReport
from app.volume import VOLUME_LOOKBACK_DAYS, volume_drop
from app.writer import CHUNK_BYTES

PROGRESS_EVERY = 10
"""A progress line every this many pages done of a day, and when the day's last page is in."""


@dataclass(frozen=True)
class Unit:
    account: Account
    day: dt.date

    @property
    def date(self) -> str:
        return self.day.isoformat()


def _records(snapshot: Snapshot) -> int | None:
    return snapshot.meta.records if snapshot.meta is not None else None


def plan_units(settings: Settings) -> list[Unit]:
    """Every (account, day) of the run, in a fixed order: accounts as configured, days ascending."""
    return [Unit(account, day) for account in settings.accounts for day in settings.days()]


def task_share(units: list[Unit], index: int, count: int) -> list[Unit]:
    """The units task `index` of `count` owns: dealt round-robin so big ranges spread evenly."""
    return units[index::count]


@dataclass
class JobResult:
    exit_code: int
    status: str
    summary: dict[str, Any]


class Job:
    def __init__(
        self,
        settings: Settings,
        *,
        sink: Sink,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        token_ttl: float = TOKEN_TTL,
        monitor: ResourceMonitor | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.layout = RunLayout(settings.range_name, settings.task.execution)
        self.store = DayStore(sink)
        self.currency = settings.preferred_currency or ""
        self.clock = clock
        self.wall_clock = wall_clock
        self.stop = stop or threading.Event()
        self._sleep = sleep or (self.stop.wait)
        self.state = RunState(max_skipped_pages=settings.max_skipped_pages, stop=self.stop)
        self.budget = RecordBudget(settings.max_records)
        self.run_id = (f"t{settings.task.index}-a{settings.task.attempt}-{secrets.token_hex(4)}")
        self.log = get_logger()
        self.monitor = monitor or ResourceMonitor(
            output_dir=None if settings.gcs_bucket else settings.output_dir,
            api_url=settings.base_url,
            enabled=settings.resource_monitor_enabled,
        )
        self.reports: list[UnitReport] = []
        self._reports_lock = threading.Lock()
        self._clients: list[HttpClient] = []
        self._fatal: BaseException | None = None
        self._chunk_bytes = chunk_bytes
        self._token_ttl = token_ttl
        self._started = clock()
        self._progress = Progress(clock=clock)
        self._watchdog: Watchdog | None = None
        self._fetch_sleep: Callable[[float], object] = self._sleep
        self._earlier_task: dict[str, Any] | None = None
        sink.health.watch(on_retry=self._storage_retry, on_failure=self._storage_failed)

    # ------------------------------------------------------------------ control

    def interrupt(self, signal_name: str = "SIGTERM") -> None:
        """SIGTERM or SIGINT (Ctrl-C): take no new page, abort requests in flight, finish up."""
        self.log.warning("sigint_received" if signal_name == "SIGINT" else "sigterm_received")
        self.state.request_stop(StopReason.INTERRUPTED)
        for client in list(self._clients):
            client.abort_all()

    def _storage_failed(self, error: StorageError) -> None:
        """An operation used up its retries (the sink has cut its own requests already):
        nothing more is fetched or stored; the summary is tried once (`_end`)."""
        self.log.error("storage_failed", error_class=error.error_class, error=str(error))
        self.state.request_stop(StopReason.FATAL)
        for client in list(self._clients):
            client.abort_all()

    def _storage_retry(self, retry: StorageRetry) -> None:
        self.log.warning("storage_retry", error_class="storage", operation=retry.operation,
                         object=retry.object, error=retry.error)

    # ------------------------------------------------------------------ the run

    def run(self) -> JobResult:
        settings = self.settings
        mine = task_share(plan_units(settings), settings.task.index, settings.task.count)
        self.log.info("job_started", start_date=settings.start_date.isoformat(),
                      end_date=settings.end_date.isoformat(),
                      accounts=[a.name for a in settings.accounts], units=len(mine),
                      task_index=settings.task.index, task_count=settings.task.count,
                      output=self.sink.root, run_id=self.run_id,
                      currency=self.currency or None)

        todo: dict[str, list[Unit]] = {}
        try:
            existing = read_json(self.sink, self.layout.summary)
            if existing is not None and existing.get("status") == Status.SUCCEEDED:
                self.log.info("range_already_complete", object=self.layout.summary)
                return JobResult(EXIT_OK, Status.SUCCEEDED, existing)
            for unit in mine:
                if not self._reuse(unit):
                    todo.setdefault(unit.account.name, []).append(unit)
        except StorageError as exc:
            if self.sink.health.failure is None:
                raise
            self._fatal = exc
            return self._end()
        for name, units in todo.items():
            self._progress.plan(name, len(units))

        watchdog = Watchdog(monitor=self.monitor, log=self.log,
                            stall_timeout=settings.stall_timeout,
                            report_interval=settings.resource_report_interval,
                            clock=self.clock, status=self._status)
        watchdog.start()
        self._watchdog = watchdog
        # Back-off and throttle waits are declared to the watchdog: waiting is not a stall.
        self._fetch_sleep = watchdog.backoff_sleep(self._sleep)
        scratch = Path(tempfile.mkdtemp(prefix="involve-asia-"))
        try:
            self._fetch_all(todo, scratch)
        finally:
            watchdog.stop()
            for client in self._clients:
                client.close()
            shutil.rmtree(scratch, ignore_errors=True)
        return self._end()

    def _fetch_all(self, todo: dict[str, list[Unit]], scratch: Path) -> None:
        accounts = {a.name: a for a in self.settings.accounts}
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="account") as pool:
            futures = [pool.submit(self._fetch_account, accounts[name], units, scratch / name)
                       for name, units in todo.items()]
            for future in futures:
                exc = future.exception()
                if exc is not None and self._fatal is None:
                    self._fatal = exc
        if self._fatal is not None and not isinstance(self._fatal, JobError):
            raise self._fatal

    # ------------------------------------------------------------------ reuse

    def _reuse(self, unit: Unit) -> bool:
        """Serve the unit from its day snapshot if that is complete, in this currency, and
        fresh (or this execution's own): resume, and the overlap of two ranges."""
        name = unit.account.name
        for attempt in range(3):
            snapshot = self.store.look(name, unit.date)
            if not self.store.reusable(snapshot, now=self.wall_clock(),
                                       max_age=self.settings.snapshot_max_age,
                                       execution=self.settings.task.execution,
                                       currency=self.currency):
                return False
            assert snapshot is not None and snapshot.meta is not None
            info = self._serve(unit, snapshot, attempt=attempt)
            if info is None:
                continue  # replaced meanwhile: look again
            if self._earlier_attempts_report(unit, snapshot, info):
                return True
            self.log.info("snapshot_reused", account=name, date=unit.date,
                          records=snapshot.meta.records,
                          fetched_at=iso_utc(snapshot.meta.fetched_at),
                          execution=snapshot.meta.execution)
            self._add_report(UnitReport(name, unit.date, UnitState.REUSED,
                                        records=snapshot.meta.records, object=info.name,
                                        size=info.size, crc32c=info.crc32c,
                                        fetched_at=iso_utc(snapshot.meta.fetched_at)))
            return True
        return False

    def _earlier_attempts_report(self, unit: Unit, snapshot: Snapshot, info: ObjectInfo) -> bool:
        """A snapshot an earlier attempt of this execution wrote is this execution's fetch, not
        a reused day: report it as fetched, with the changes the snapshot records (logged as
        `day_changed` unless that attempt's task summary already reported them)."""
        name = unit.account.name
        change = recorded_change(snapshot, name, unit.date, self.settings.task.execution)
        if change is None or snapshot.meta is None:
            return False
        meta = snapshot.meta
        self.log.info("snapshot_from_earlier_attempt", account=name, date=unit.date,
                      records=meta.records, fetched_at=iso_utc(meta.fetched_at))
        if self._earlier_task is None:
            self._earlier_task = read_json(self.sink, self.layout.task_summary(
                self.settings.task.index)) or {}
        reported = [u.get("change") for u in self._earlier_task.get("unit_reports", [])
                    if (u.get("account"), u.get("date")) == (name, unit.date)]
        if change.changed and change.as_dict() not in reported:
            self.log.info("day_changed", account=name, date=unit.date, added=change.added,
                          removed=change.removed, transitions=dict(change.transitions),
                          changed=sum(change.transitions.values()))
        self._add_report(UnitReport(name, unit.date, UnitState.FETCHED, records=meta.records,
                                    object=info.name, size=info.size, crc32c=info.crc32c,
                                    fetched_at=iso_utc(meta.fetched_at),
                                    change=change.as_dict()))
        return True

    def _serve(self, unit: Unit, snapshot: Snapshot, *, attempt: int) -> ObjectInfo | None:
        """This run's own copy of a snapshot it serves (reused or kept)."""
        target = self.layout.part(unit.account.name, unit.date, f"{self.run_id}-s{attempt}")
        return self.store.copy_for_run(snapshot, target)

    # ------------------------------------------------------------------ one account

    def _fetch_account(self, account: Account, units: list[Unit], scratch: Path) -> None:
        """One account's units (app.fetch): each fetched unit comes back to `_finish_unit`."""
        log = self.log.bind(account=account.name)
        AccountFetch[Unit](
            self.settings, account, state=self.state, budget=self.budget, sink=self.sink,
            layout=self.layout, run_id=self.run_id, scratch=scratch, clients=self._clients,
            log=log, on_unit_done=lambda open_unit, outcome: self._finish_unit(
                open_unit, outcome, log),
            on_unit_missing=self._missing, on_page=self._on_page, on_trouble=self._trouble,
            clock=self.clock, wall_clock=self.wall_clock, sleep=self._fetch_sleep,
            token_ttl=self._token_ttl, chunk_bytes=self._chunk_bytes,
        ).run(units)

    def _missing(self, unit: Unit, missing_pages: Iterable[int] = ()) -> None:
        """A unit not delivered: never started, or cut short (SIGTERM, the skip cap)."""
        self._add_report(UnitReport(unit.account.name, unit.date, UnitState.MISSING,
                                    missing_pages=list(missing_pages)))

    # ------------------------------------------------------------------ one unit's data

    def _finish_unit(self, open_unit: OpenUnit[Unit], outcome: UnitOutcome, log: Any) -> bool:
        """Settle a fetched day (`outcome.settle` decides, this carries it out): drop it, store it
        in the run's folder and then in the day store if it ranks above the snapshot there, or
        keep the complete snapshot there. True: read the day once more (a refresh that would
        lose records of the stored day)."""
        unit, writer = open_unit.unit, open_unit.writer
        name = unit.account.name
        stop = self._stop_reason()
        day = DayFetch(interrupted=outcome.interrupted, skipped=bool(outcome.skipped),
                       capped=writer.capped, records=writer.records, count=outcome.count,
                       second_pass_done=True, read_again=open_unit.read_again, stop_reason=stop)
        if settle(day).disposition is Disposition.DROP:  # cut short: nothing of it is kept
            open_unit.discard()
            self._missing(unit, outcome.skipped)
            return False
        capped = stop is StopReason.MAX_RECORDS and (writer.capped or not outcome.complete)
        if day.short and not (outcome.interrupted or outcome.skipped or writer.capped):
            log.warning("day_short", date=unit.date, records=writer.records, count=outcome.count)
        writer.close()
        part = self.layout.part(name, unit.date,
                                f"{self.run_id}-again" if open_unit.read_again else self.run_id)
        try:
            info = open_unit.output.finish(part)
        except AlreadyExists:
            info = self._existing(part)
        statuses = writer.statuses
        counts = collections.Counter(statuses.values())
        meta = SnapshotMeta(fetched_at=open_unit.started_at,
                            execution=self.settings.task.execution, records=writer.records,
                            complete=day.complete, currency=self.currency, statuses=counts)
        verdicts: list[Verdict] = []

        def accept(current: Snapshot | None, change: DayChange | None) -> bool:
            stored = None if current is None else StoredDay(
                complete=current.complete, ranks_higher=change is None,
                missing=change.removed if change is not None else 0)
            verdicts.append(settle(day, stored,
                                   allow_shrink=self.settings.allow_snapshot_shrink))
            return verdicts[-1].disposition is Disposition.STORE

        replacement = self.store.replace(name, unit.date, info, meta, statuses, accept=accept)
        writer.release()
        verdict = verdicts[-1]
        report = UnitReport(name, unit.date, UnitState.FETCHED, records=writer.records,
                            pages=outcome.pages, duplicates=writer.duplicates, object=info.name,
                            size=info.size, crc32c=info.crc32c,
                            fetched_at=iso_utc(open_unit.started_at),
                            missing_pages=list(outcome.skipped))
        if not day.complete:
            report.state = UnitState.CAPPED if capped else UnitState.INCOMPLETE
        if verdict.disposition is Disposition.REREAD:
            assert replacement.change is not None and replacement.current is not None
            log.warning("day_reread", date=unit.date, records=writer.records,
                        stored_records=_records(replacement.current),
                        missing=replacement.change.removed)
            self._delete_quietly(info.name, log)
            return True
        if replacement.replaced:
            self._replaced(unit, replacement, report, log)
        elif verdict.disposition is Disposition.KEEP:
            assert replacement.current is not None and verdict.reason is not None
            if verdict.reason is KeepReason.SHRANK:
                assert replacement.change is not None
                log.warning("day_shrank", date=unit.date, kept_records=_records(replacement.current),
                            fetched_records=writer.records, missing=replacement.change.removed)
            kept = self._keep(unit, replacement.current, report, verdict.reason, log)
            if kept is not None:
                report = kept
        log.info("unit_finished", date=unit.date, records=writer.records, pages=outcome.pages,
                 duplicates=writer.duplicates, skipped=len(outcome.skipped),
                 rereads=outcome.rereads, state=report.state.value,
                 snapshot="replaced" if replacement.replaced else "kept")
        self._add_report(report)
        return False

    def _replaced(self, unit: Unit, replacement: Replacement, report: UnitReport, log: Any) -> None:
        """The fetch is the day's snapshot now: say so, and what changed."""
        assert replacement.change is not None and replacement.current is not None
        stored, change = replacement.current, replacement.change
        log.info("snapshot_replaced", date=unit.date, object=stored.info.uri, bytes=stored.info.size,
                 records=report.records, complete=stored.complete)
        report.change = (replacement.total or change).as_dict()
        if change.changed:
            log.info("day_changed", date=unit.date, added=change.added, removed=change.removed,
                     transitions=dict(change.transitions), changed=sum(change.transitions.values()))
        if stored.complete:
            self._check_volume(unit, report.records, log)

    def _keep(self, unit: Unit, current: Snapshot, fetched: UnitReport, reason: KeepReason,
              log: Any) -> UnitReport | None:
        """The refresh stayed incomplete, or would have lost records: serve the older complete
        snapshot instead. None when the day's snapshot changed meanwhile to one that is not
        complete (the fetch is then served as it is)."""
        assert current.meta is not None
        for attempt in range(3):
            info = self._serve(unit, current, attempt=attempt)
            if info is not None:
                log.warning("snapshot_kept", date=unit.date, records=current.meta.records,
                            fetched_at=iso_utc(current.meta.fetched_at), reason=reason.value,
                            missing_pages=fetched.missing_pages)
                self._delete_quietly(fetched.object or "", log)
                return UnitReport(unit.account.name, unit.date, UnitState.KEPT,
                                  records=current.meta.records, pages=fetched.pages,
                                  duplicates=fetched.duplicates, object=info.name,
                                  size=info.size, crc32c=info.crc32c,
                                  fetched_at=iso_utc(current.meta.fetched_at),
                                  missing_pages=fetched.missing_pages, reason=reason.value,
                                  fetched_records=fetched.records)
            found = self.store.look(unit.account.name, unit.date)
            if found is None or not found.complete:
                return None
            current = found
        return None

    def _delete_quietly(self, name: str, log: Any) -> None:
        """Remove a run copy this run will not serve; what stays is swept after the result."""
        if not name:
            return
        try:
            self.sink.delete(name)
        except StorageError as exc:
            log.warning("cleanup_failed", object=name, error=str(exc))

    def _existing(self, name: str) -> ObjectInfo:
        info = self.sink.stat(name)
        if info is None:
            raise StorageError(f"{name}: create-only write refused but the object is absent")
        return info

    def _add_report(self, report: UnitReport) -> None:
        with self._reports_lock:
            self.reports.append(report)

    def _check_volume(self, unit: Unit, records: int, log: Any) -> None:
        """After a complete snapshot was stored: `day_volume_low` (WARNING) when it holds under
        a fifth of the median of the account's complete snapshots among the 14 days before it
        (at least 7 of them; `app.status.volume_drop`, the check `python -m app status` runs).
        One or two listings; a storage error in them is a storage failure like any other."""
        first = unit.day - dt.timedelta(days=VOLUME_LOOKBACK_DAYS)
        _, before = stored_days(self.sink, first, unit.day - dt.timedelta(days=1),
                                [unit.account.name])
        reference = [s.meta.records for s in before.values() if s.meta and s.meta.complete]
        median = volume_drop(records, reference)
        if median is not None:
            log.warning("day_volume_low", date=unit.date, records=records,
                        median=round(median, 1), reference_days=len(reference))

    # ------------------------------------------------------------------ events

    def _on_page(self, account: str, day: dt.date, page: Page, duration: float) -> None:
        if self._watchdog is not None:
            self._watchdog.progress()
        progress = self._progress
        with progress.lock:  # one report at a time, so the lines come out in order
            done, day_done = progress.page_done(account, day.isoformat(), page.page, page.pages)
            if day_done or (done % PROGRESS_EVERY == 0 and done < page.pages):
                self._report_progress(account, day)

    def _report_progress(self, account: str, day: dt.date) -> None:
        """A progress line: the day's pages done (not the page number) and percentage, the
        account's own rate and ETAs, and the run's (app.progress)."""
        date = day.isoformat()
        self.log.info("progress", account=account, date=date,
                      records=self.budget.used if self.budget.limit else None,
                      **self._progress.line(account, date))

    def _trouble(self, kind: str, fields: dict[str, Any]) -> None:
        """A retry or a skip, on a fetch worker: handed to the watchdog's thread, which takes the
        resource snapshot and logs the diagnosis (a retry's as one line, rate-limited per
        account; a skip's in full). This thread never snapshots or probes."""
        if self._watchdog is not None:
            title = render_message(f"trouble_{kind}", fields, current_language())
            self._watchdog.trouble(kind, title, fields)

    def _status(self) -> dict[str, Any]:
        with self._reports_lock:
            done = len(self.reports)
        return {"units_total": self._progress.units_total, "units_done": done,
                **self.state.as_dict(), "stop_reason": self.state.stop_reason,
                "progress": self._progress.status()}

    # ------------------------------------------------------------------ ending

    def _stop_reason(self) -> StopReason | None:
        reason = self.state.stop_reason
        return StopReason(reason) if reason is not None else None

    def _end(self) -> JobResult:
        """`_finish`, unless storage has failed for the run (before or during it): then the
        summary is tried once (`_finish_without_storage`)."""
        if self.sink.health.failure is None:
            try:
                return self._finish()
            except StorageError:
                if self.sink.health.failure is None:
                    raise
        return self._finish_without_storage()

    def _finish_without_storage(self) -> JobResult:
        """Storage failed: the run fails; its summary (the run's for a lone task, else the
        task's) is tried once, through a fresh client with a short deadline."""
        settings = self.settings
        self._fatal = self._fatal or self.sink.health.failure
        outcome = decide((r.state for r in self.reports), self._stop_reason(), self._fatal,
                         fail_on_skipped=settings.fail_on_skipped_pages)
        task = self._task_summary(outcome.status)
        summary: dict[str, Any] = task
        name = self.layout.task_summary(settings.task.index)
        replace_if: Callable[[dict[str, Any]], bool] = lambda _old: True  # noqa: E731
        if settings.task.count == 1:
            summary = summary_mod.run_summary(
                outcome, [task], None, settings=settings, currency=self.currency,
                duration=self.clock() - self._started,
                resources=self.monitor.snapshot() if settings.resource_monitor_enabled else {})
            name = self.layout.summary
            replace_if = lambda old: old.get("status") != Status.SUCCEEDED  # noqa: E731
        try:
            final = self.sink.last_try()
            try:
                info = put_json(final, name, summary, replace_if=replace_if)
            finally:
                final.close()
            self.log.info("summary_written", object=info.uri, status=outcome.status.value)
        except StorageError as exc:
            self.log.error("summary_not_written", error_class=exc.error_class, error=str(exc))
        self.log.info("run_finished", status=outcome.status.value, records=task["records"],
                      pages=task["pages"], skipped=len(task["skipped_pages"]),
                      duration_seconds=task["duration_seconds"], exit_code=outcome.exit_code)
        return JobResult(outcome.exit_code, outcome.status.value, summary)

    def _finish(self) -> JobResult:
        settings = self.settings
        outcome = decide((r.state for r in self.reports), self._stop_reason(), self._fatal,
                         fail_on_skipped=settings.fail_on_skipped_pages)
        task = self._task_summary(outcome.status)
        put_json(self.sink, self.layout.task_summary(settings.task.index), task,
                 replace_if=lambda _existing: True)

        result_summary: dict[str, Any] = task
        if outcome.status != Status.FAILED:
            composed = self._compose_if_last()
            if composed is not None:
                result_summary = composed
        elif settings.task.count == 1:
            result_summary = self._write_run_summary(outcome, [task], None)
        if outcome.status == Status.FAILED and not isinstance(self._fatal, StorageError):
            # An interrupted or failed attempt leaves no scratch: nothing of it is resumed
            # (a retry reuses the day store). Another task of the execution may still compose
            # from its own day copies, so with several tasks only this attempt's go.
            self._sweep_scratch(own_only=settings.task.count > 1)

        self.log.info("run_finished", status=outcome.status.value, records=task["records"],
                      pages=task["pages"], skipped=len(task["skipped_pages"]),
                      duration_seconds=task["duration_seconds"], exit_code=outcome.exit_code)
        return JobResult(outcome.exit_code, outcome.status.value, result_summary)

    def _task_summary(self, status: Status) -> dict[str, Any]:
        state = self.state.as_dict()
        storage_retries = self.sink.health.retries  # the sink's, start-up probe included
        if storage_retries:
            state["retries"] = dict(sorted({**state["retries"], "storage": storage_retries}.items()))
        return summary_mod.task_summary(
            self.reports, state, status=status, task=self.settings.task,
            run_id=self.run_id, stop_reason=self.state.stop_reason,
            duration=self.clock() - self._started, error=self._fatal)

    def _compose_if_last(self) -> dict[str, Any] | None:
        """If every task of this execution has finished, compose the result and write the summary.

        Several tasks may get here at once; create-only writes let exactly one of them win.
        """
        settings = self.settings
        tasks: list[dict[str, Any]] = []
        for index in range(settings.task.count):
            task = read_json(self.sink, self.layout.task_summary(index))
            if (task is None or task.get("task_count") != settings.task.count
                    or task.get("status") == Status.FAILED):
                return None
            tasks.append(task)
        by_unit: dict[tuple[str, str], str] = {}
        states: list[UnitState] = []
        for task in tasks:
            for unit in task.get("unit_reports", []):
                states.append(UnitState(unit["state"]))
                if unit.get("object"):
                    by_unit[(unit["account"], unit["date"])] = unit["object"]
        sources = [by_unit[(u.account.name, u.date)] for u in plan_units(settings)
                   if (u.account.name, u.date) in by_unit]
        reasons = {StopReason(t["stop_reason"]) for t in tasks if t.get("stop_reason")}
        outcome = decide(states, StopReason.MAX_RECORDS if StopReason.MAX_RECORDS in reasons
                         else None, None, fail_on_skipped=settings.fail_on_skipped_pages)
        previous = read_json(self.sink, self.layout.summary)
        if previous is not None and previous.get("status") == Status.SUCCEEDED:
            return previous
        try:
            result = self._compose_result(sources)
        except StorageError:
            # Another task of this execution got here at the same time, composed the result,
            # wrote the summary and swept the day copies this compose was reading.
            written = read_json(self.sink, self.layout.summary)
            if written is None:
                raise
            self.log.info("result_composed_elsewhere", object=self.layout.result)
            return written
        return self._write_run_summary(outcome, tasks, result)

    def _compose_result(self, sources: list[str]) -> ObjectInfo:
        """Compose the execution's result, create-only: the very same compose by a concurrent
        task is recognised as done (the sink's compose marker); a different result left by an
        earlier attempt (a partial one) is replaced by generation."""
        try:
            info = self._write_result(sources, if_generation_match=0)
        except AlreadyExists:
            existing = self.sink.stat(self.layout.result)
            if existing is None:
                raise
            info = self._write_result(sources, if_generation_match=existing.generation)
        self.log.info("result_composed", object=info.uri, bytes=info.size, parts=len(sources))
        return info

    def _write_result(self, sources: list[str], *, if_generation_match: int) -> ObjectInfo:
        if sources:
            return self.sink.compose(self.layout.result, sources,
                                     if_generation_match=if_generation_match)
        return self.sink.put_bytes(self.layout.result, gzip.compress(b""),
                                   content_type="application/gzip",
                                   if_generation_match=if_generation_match)

    def _sweep_scratch(self, *, own_only: bool = False) -> None:
        """After the result: delete this execution's scratch (the day copies it composed, chunks
        of units never finished, intermediates of composes cut short, also those of earlier
        attempts killed outright). Nothing else of the execution is being written now (this is
        the last task). After a failed attempt of one task of several, `own_only`: only this
        attempt's day copies and chunks. Best effort."""
        try:
            leftovers = [o.name for o in self.sink.list(self.layout.prefix)
                         if (o.name.startswith(self.layout.scratch_prefixes)
                             or is_compose_scratch(o.name))
                         and (not own_only or self._own_scratch(o.name))]
            for name in leftovers:
                self.sink.delete(name)
        except StorageError as exc:
            self.log.warning("cleanup_failed", error=str(exc))
            return
        if leftovers:
            self.log.info("scratch_deleted", objects=len(leftovers))

    def _own_scratch(self, name: str) -> bool:
        """Whether `name` is a day copy or chunk of this attempt (named after its run id)."""
        return (name.startswith(self.layout.scratch_prefixes)
                and name.rsplit("/", 1)[-1].startswith((f"{self.run_id}.", f"{self.run_id}-")))

    def _write_run_summary(self, outcome: Outcome, tasks: list[dict[str, Any]],
                           result: ObjectInfo | None) -> dict[str, Any]:
        resources = self.monitor.snapshot() if self.settings.resource_monitor_enabled else {}
        # This task's storage retries since its task summary (reading, composing) count too.
        storage = self.sink.health.retries
        tasks = [{**task, "retries": {**(task.get("retries") or {}), "storage": storage}}
                 if storage and task.get("task_index") == self.settings.task.index else task
                 for task in tasks]
        run_summary = summary_mod.run_summary(
            outcome, tasks, result, settings=self.settings, currency=self.currency,
            duration=self.clock() - self._started, resources=resources)
        try:
            info = put_json(self.sink, self.layout.summary, run_summary,
                            replace_if=lambda old: old.get("status") != Status.SUCCEEDED)
        except AlreadyExists:
            self.log.info("summary_written_elsewhere", object=self.layout.summary)
            return run_summary
        self.log.info("summary_written", object=info.uri, status=outcome.status.value)
        if result is not None:
            # Only now: a task composing beside this one may still read the day copies, and
            # finds this summary when they are gone.
            self._sweep_scratch()
        return run_summary
