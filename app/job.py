"""One job execution: plan (account, day) units, take this task's share, reuse the fresh day
snapshots, fetch the rest (one `AccountRun` per account, side by side), then finish: the task
summary, and when this task is the last, the execution's result and `summary.json` (`RunResult`).

Nothing below this module knows about Cloud Run tasks. This module knows no HTTP (that is the
fetch layer, opened by `account_run`) and stores nothing itself but the task summary (days:
`account_run` and `store`; the result: `result`). The run's status and exit code are decided in
`outcome.decide`, from the unit states the account runs report.

The job creates the run's stop token (`runstate.RunStop`) and requests it for the run-wide stops
(SIGTERM/SIGINT, a storage failure, an account's JobError); it creates the run's fetch tally
(`runstate.FetchTally`), which only the fetch layer writes, and reads it for the status and summary.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import summary as summary_mod
from app.account_run import (
    AccountRun,
    RecordBudget,
    RunContext,
    Unit,
    serve_copy,
)
from app.config import Account, Settings
from app.errors import JobError, StorageError
from app.fetch import TOKEN_TTL
from app.logs import get_logger
from app.outcome import EXIT_OK, Status, StopReason, UnitState, decide
from app.output import put_json, read_json
from app.progress import Progress
from app.resources import ResourceMonitor
from app.result import RunResult
from app.runstate import FetchTally, RunStop
from app.sinks import ObjectInfo, Sink, StorageRetry
from app.store import RACE_ATTEMPTS, DayStore, RunLayout, Snapshot, iso_utc, recorded_change
from app.summary import UnitReport
from app.telemetry import Telemetry
from app.watchdog import Watchdog
from app.writer import CHUNK_BYTES

if TYPE_CHECKING:
    from app.http import HttpClient

__all__ = ["Job", "JobResult", "Unit", "plan_units", "task_share"]


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
        stop: RunStop | None = None,
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
        self.stop = stop or RunStop()
        self._sleep = sleep or (self.stop.wait)
        self.tally = FetchTally(max_skipped_pages=settings.max_skipped_pages, stop=self.stop)
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
        self._started = clock()
        self._progress = Progress(clock=clock)
        self.telemetry = Telemetry(
            progress=self._progress, log=self.log, status=self._status,
            records=lambda: self.budget.used if self.budget.limit else None)
        self._context = RunContext(
            settings=settings, sink=sink, store=self.store, layout=self.layout,
            run_id=self.run_id, currency=self.currency, stop=self.stop, tally=self.tally,
            budget=self.budget, clients=self._clients, listener=self.telemetry,
            add_report=self._add_report,
            clock=clock, wall_clock=wall_clock, sleep=self._sleep, token_ttl=token_ttl,
            chunk_bytes=chunk_bytes)
        self.result = RunResult(
            settings=settings, sink=sink, layout=self.layout, run_id=self.run_id,
            currency=self.currency, monitor=self.monitor, log=self.log, clock=clock,
            started=self._started,
            plan=lambda: [(u.account.name, u.date) for u in plan_units(settings)])
        self._earlier_task: dict[str, Any] | None = None
        sink.health.watch(on_retry=self._storage_retry, on_failure=self._storage_failed)

    # ------------------------------------------------------------------ control

    def interrupt(self, signal_name: str = "SIGTERM") -> None:
        """SIGTERM or SIGINT (Ctrl-C): take no new page, abort requests in flight, finish up."""
        self.log.warning("sigint_received" if signal_name == "SIGINT" else "sigterm_received")
        self.stop.request(StopReason.INTERRUPTED)
        for client in list(self._clients):
            client.abort_all()

    def _storage_failed(self, error: StorageError) -> None:
        """An operation used up its retries (the sink has cut its own requests already):
        nothing more is fetched or stored; the summary is tried once (`_end`)."""
        self.log.error("storage_failed", error_class=error.error_class, error=str(error))
        self.stop.request(StopReason.FATAL)
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
                            clock=self.clock, status=self.telemetry.status)
        watchdog.start()
        self.telemetry.watchdog = watchdog
        # Back-off and throttle waits are declared to the watchdog: waiting is not a stall.
        self._context.sleep = watchdog.backoff_sleep(self._sleep)
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
        for attempt in range(RACE_ATTEMPTS):
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
        return serve_copy(self.store, self.layout, unit, snapshot, self.run_id, attempt=attempt)

    def _fetch_account(self, account: Account, units: list[Unit], scratch: Path) -> None:
        """One account's units (app.account_run): what became of each comes back as a report. A
        JobError (bad credentials, an unreachable API, a failed day) stops the whole run."""
        try:
            AccountRun(self._context, account, scratch, self.log.bind(account=account.name)).run(units)
        except JobError:
            self.stop.request(StopReason.FATAL)
            raise

    def _add_report(self, report: UnitReport) -> None:
        with self._reports_lock:
            self.reports.append(report)

    def _status(self) -> dict[str, Any]:
        with self._reports_lock:
            done = len(self.reports)
        return {"units_total": self._progress.units_total, "units_done": done,
                **self.tally.as_dict(), "stop_reason": self.stop.reason}

    # ------------------------------------------------------------------ ending

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
        outcome = decide((r.state for r in self.reports), self.stop.reason, self._fatal,
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
        outcome = decide((r.state for r in self.reports), self.stop.reason, self._fatal,
                         fail_on_skipped=settings.fail_on_skipped_pages)
        task = self._task_summary(outcome.status)
        put_json(self.sink, self.layout.task_summary(settings.task.index), task,
                 replace_if=lambda _existing: True)

        result_summary: dict[str, Any] = task
        if outcome.status != Status.FAILED:
            composed = self.result.compose_if_last()
            if composed is not None:
                result_summary = composed
        elif settings.task.count == 1:
            result_summary = self.result.write_run_summary(outcome, [task], None)
        if outcome.status == Status.FAILED and not isinstance(self._fatal, StorageError):
            # An interrupted or failed attempt leaves no scratch: nothing of it is resumed
            # (a retry reuses the day store). Another task of the execution may still compose
            # from its own day copies, so with several tasks only this attempt's go.
            self.result.sweep_scratch(own_only=settings.task.count > 1)

        self.log.info("run_finished", status=outcome.status.value, records=task["records"],
                      pages=task["pages"], skipped=len(task["skipped_pages"]),
                      duration_seconds=task["duration_seconds"], exit_code=outcome.exit_code)
        return JobResult(outcome.exit_code, outcome.status.value, result_summary)

    def _task_summary(self, status: Status) -> dict[str, Any]:
        state = self.tally.as_dict()
        storage_retries = self.sink.health.retries  # the sink's, start-up probe included
        if storage_retries:
            state["retries"] = dict(sorted({**state["retries"], "storage": storage_retries}.items()))
        return summary_mod.task_summary(
            self.reports, state, status=status, task=self.settings.task,
            run_id=self.run_id, stop_reason=self.stop.reason,
            duration=self.clock() - self._started, error=self._fatal)
