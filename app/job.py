"""One job execution: plan (account, day) units, take this task's share, skip what is already
stored, fetch the rest, run the second pass, store parts, compose the result, write the summary.

Nothing below this module knows about Cloud Run tasks; this module knows nothing about HTTP or
where bytes end up (that is `involve_asia`/`http` and `sinks`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import summary as summary_mod
from app.config import Account, Settings
from app.errors import AlreadyExists, FatalFetchError, JobError, StorageError
from app.http import HttpClient
from app.involve_asia import AccountClient, Page
from app.logs import current_language, get_logger, register_secret
from app.messages import error_class_label
from app.monitor import ResourceMonitor, Watchdog
from app.output import Layout, UnitOutput, count_lines, put_json, read_json
from app.pager import Pager, RunState, UnitOutcome
from app.ratelimit import RateLimiter
from app.retry import RetryPolicy
from app.sinks import ObjectInfo, Sink, is_compose_scratch
from app.writer import UnitWriter

PAGE_WINDOW_FACTOR = 4
"""Pages handed out ahead per request slot (see pager.py: back-off waits hold no slot)."""
UNIT_LANES = 2
"""Units of one account in progress at once (see Job._main_pass); each holds a writer, so two
open writers (and their id sets) at most per account."""


@dataclass(frozen=True)
class Unit:
    account: Account
    day: dt.date

    @property
    def date(self) -> str:
        return self.day.isoformat()


def plan_units(settings: Settings) -> list[Unit]:
    """Every (account, day) of the run, in a fixed order: accounts as configured, days ascending."""
    return [Unit(account, day) for account in settings.accounts for day in settings.days()]


def task_share(units: list[Unit], index: int, count: int) -> list[Unit]:
    """The units task `index` of `count` owns: dealt round-robin so big ranges spread evenly."""
    return units[index::count]


class RecordBudget:
    """MAX_RECORDS_LIMIT across every account of the task."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                return False
            self.used += 1
            return True


@dataclass
class UnitReport:
    account: str
    date: str
    state: str  # done | partial | missing | resumed
    records: int = 0
    pages: int = 0
    duplicates: int = 0
    object: str | None = None
    size: int = 0
    missing_pages: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
        chunk_bytes: int | None = None,
        token_ttl: float | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.layout = Layout(settings.range_name)
        self.clock = clock
        self.stop = stop or threading.Event()
        self._sleep = sleep or (self.stop.wait)
        self.state = RunState(max_skipped_pages=settings.max_skipped_pages, stop=self.stop)
        self.budget = RecordBudget(settings.max_records)
        self.run_id = (f"{settings.task.execution}-t{settings.task.index}"
                       f"-a{settings.task.attempt}-{secrets.token_hex(4)}")
        self.log = get_logger()
        self.monitor = ResourceMonitor(
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
        self._progress = {"units_total": 0, "units_done": 0}
        self._watchdog: Watchdog | None = None

    # ------------------------------------------------------------------ control

    def interrupt(self) -> None:
        """SIGTERM: take no new page, abort requests in flight, finish up."""
        self.log.warning("sigterm_received")
        self.state.request_stop("interrupted")
        for client in list(self._clients):
            client.abort_all()

    # ------------------------------------------------------------------ the run

    def run(self) -> JobResult:
        settings = self.settings
        all_units = plan_units(settings)
        mine = task_share(all_units, settings.task.index, settings.task.count)
        self._progress["units_total"] = len(mine)
        self.log.info("job_started", start_date=settings.start_date.isoformat(),
                      end_date=settings.end_date.isoformat(),
                      accounts=[a.name for a in settings.accounts], units=len(mine),
                      task_index=settings.task.index, task_count=settings.task.count,
                      output=self.sink.root, run_id=self.run_id)

        existing = read_json(self.sink, self.layout.summary)
        if existing is not None and existing.get("status") == summary_mod.SUCCEEDED:
            self.log.info("range_already_complete", object=self.layout.summary)
            return JobResult(summary_mod.EXIT_OK, summary_mod.SUCCEEDED, existing)

        done = {info.name for info in self.sink.list(self.layout.parts_prefix)}
        todo: dict[str, list[Unit]] = {}
        for unit in mine:
            if self.layout.part(unit.account.name, unit.date) in done:
                self._resume(unit)
            else:
                todo.setdefault(unit.account.name, []).append(unit)

        watchdog = Watchdog(monitor=self.monitor, log=self.log,
                            stall_timeout=settings.stall_timeout,
                            report_interval=settings.resource_report_interval,
                            clock=self.clock, status=self._status)
        watchdog.start()
        self._watchdog = watchdog
        scratch = Path(tempfile.mkdtemp(prefix="involve-asia-"))
        try:
            self._fetch_all(todo, scratch)
        finally:
            watchdog.stop()
            for client in self._clients:
                client.close()
            shutil.rmtree(scratch, ignore_errors=True)
        return self._finish()

    def _fetch_all(self, todo: dict[str, list[Unit]], scratch: Path) -> None:
        accounts = {a.name: a for a in self.settings.accounts}
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="account") as pool:
            futures = [pool.submit(self._run_account, accounts[name], units, scratch / name)
                       for name, units in todo.items()]
            for future in futures:
                exc = future.exception()
                if exc is not None and self._fatal is None:
                    self._fatal = exc
        if self._fatal is not None and not isinstance(self._fatal, JobError):
            raise self._fatal

    def _resume(self, unit: Unit) -> None:
        name = unit.account.name
        manifest = read_json(self.sink, self.layout.manifest(name, unit.date))
        if manifest is None:
            # Killed between the part and its manifest: count the part once and write it.
            part = self.layout.part(name, unit.date)
            info = self.sink.stat(part)
            manifest = {"account": name, "date": unit.date, "records": count_lines(self.sink, part),
                        "pages": 0, "object": part, "size": info.size if info else 0,
                        "crc32c": info.crc32c if info else ""}
            with contextlib.suppress(AlreadyExists):
                put_json(self.sink, self.layout.manifest(name, unit.date), manifest)
        self.log.info("unit_already_done", account=name, date=unit.date,
                      records=manifest.get("records"))
        self._add_report(UnitReport(name, unit.date, "resumed",
                                    records=int(manifest.get("records", 0)),
                                    object=str(manifest.get("object")),
                                    size=int(manifest.get("size", 0))))

    def _run_account(self, account: Account, units: list[Unit], scratch: Path) -> None:
        settings = self.settings
        log = self.log.bind(account=account.name)
        register_secret(account.secret)
        http = HttpClient(timeout=settings.request_timeout, clock=self.clock,
                          pool_size=settings.fetch_concurrency + 2)
        self._clients.append(http)
        if self.stop.is_set():
            http.abort_all()
        limiter = RateLimiter(per_minute=settings.requests_per_minute,
                              min_interval=settings.request_delay,
                              clock=self.clock, sleep=self._sleep)
        extra: dict[str, Any] = {}
        if self._token_ttl is not None:
            extra["token_ttl"] = self._token_ttl
        client = AccountClient(base_url=settings.base_url, key=account.key, secret=account.secret,
                               http=http, limiter=limiter, clock=self.clock,
                               on_token=register_secret, log=log, **extra)
        policy = RetryPolicy(max_retries=settings.max_retry_attempts,
                             backoff=settings.retry_backoff,
                             rate_limit_delay=settings.rate_limit_delay)
        held: list[tuple[Unit, UnitWriter, UnitOutput, UnitOutcome]] = []
        # Workers beyond FETCH_CONCURRENCY only wait (back-off or the in-flight cap); they let
        # the pages behind a retrying page go ahead.
        with ThreadPoolExecutor(max_workers=settings.fetch_concurrency * PAGE_WINDOW_FACTOR,
                                thread_name_prefix=f"fetch-{account.name}") as pool:
            pager = Pager(client=client, policy=policy, state=self.state, account=account.name,
                          page_limit=settings.page_limit, concurrency=settings.fetch_concurrency,
                          pool=pool, sleep=self._sleep, clock=self.clock, log=log,
                          on_trouble=self._trouble, on_page=self._on_page)
            try:
                self._main_pass(account, units, pager=pager, scratch=scratch, held=held, log=log)
                held.sort(key=lambda entry: entry[0].date)
                if held and not self.stop.is_set():
                    log.info("second_pass_started", pages=sum(len(o.skipped) for *_, o in held))
                for unit, writer, output, first in held:
                    if self.stop.is_set() and self.state.stop_reason != "max_records":
                        writer.discard()
                        output.discard()
                        self._add_report(UnitReport(account.name, unit.date, "missing",
                                                    missing_pages=first.skipped))
                        continue
                    outcome = self._drain(pager.retry(unit.day, first.skipped), writer, log)
                    outcome.pages += first.pages
                    self._store(unit, writer, output, outcome, log)
            except FatalFetchError as exc:
                log.error("run_failed", error_class=exc.error_class, error=str(exc))
                self.state.request_stop("fatal")
                raise

    def _main_pass(self, account: Account, units: list[Unit], *, pager: Pager, scratch: Path,
                   held: list[Any], log: Any) -> None:
        """Every unit of the account once, in UNIT_LANES lanes: unit n+1 starts as soon as
        unit n is down to its last round of requests, so n's last answers, a page of n waiting
        out a back-off and n's upload overlap n+1's requests instead of idling the account."""
        lanes: list[Future[None]] = []
        with ThreadPoolExecutor(max_workers=UNIT_LANES,
                                thread_name_prefix=f"unit-{account.name}") as pool:
            previous: threading.Event | None = None
            for unit in units:
                if previous is not None:
                    previous.wait()  # set by the lane, at the latest when it ends
                if any(lane.done() and lane.exception() is not None for lane in lanes):
                    break  # a unit failed (storage, say): start no more; raised below
                if self.stop.is_set():
                    self._add_report(UnitReport(account.name, unit.date, "missing"))
                    continue
                submitted = threading.Event()
                lanes.append(pool.submit(self._main_pass_unit, unit, pager=pager,
                                         scratch=scratch, held=held, log=log,
                                         submitted=submitted))
                previous = submitted
        for lane in lanes:
            lane.result()  # the first lane's fatal error, if any

    def _main_pass_unit(self, unit: Unit, *, pager: Pager, scratch: Path, held: list[Any],
                        log: Any, submitted: threading.Event) -> None:
        try:
            log.info("unit_started", date=unit.date)
            writer, output = self._open_unit(unit, scratch)
            outcome = self._drain(pager.unit(unit.day, on_tail=submitted.set), writer, log)
            self._after_main_pass(unit, writer, output, outcome=outcome, held=held, log=log)
        except FatalFetchError:
            self.state.request_stop("fatal")  # no lane starts or requests anything more
            raise
        finally:
            submitted.set()

    def _open_unit(self, unit: Unit, scratch: Path) -> tuple[UnitWriter, UnitOutput]:
        output = UnitOutput(sink=self.sink, layout=self.layout, account=unit.account.name,
                            day=unit.date, run_id=self.run_id)
        kwargs: dict[str, Any] = {}
        if self._chunk_bytes is not None:
            kwargs["chunk_bytes"] = self._chunk_bytes
        writer = UnitWriter(account=unit.account.name, scratch_dir=scratch,
                            on_chunk=output.on_chunk,
                            take_record=self.budget.take if self.budget.limit else None, **kwargs)
        return writer, output

    def _drain(self, run: Any, writer: UnitWriter, log: Any) -> UnitOutcome:
        for item in run:
            if isinstance(item, Page) and item.records:
                writer.write(item.records)
                if writer.capped and self.state.stop_reason is None:
                    log.warning("max_records_reached", limit=self.budget.limit)
                    self.state.request_stop("max_records")
        outcome: UnitOutcome = run.outcome
        return outcome

    def _after_main_pass(self, unit: Unit, writer: UnitWriter, output: UnitOutput, *,
                         outcome: UnitOutcome, held: list[Any], log: Any) -> None:
        capped = self.state.stop_reason == "max_records"
        if outcome.complete and not writer.capped:
            self._store(unit, writer, output, outcome, log)
        elif capped:
            self._store(unit, writer, output, outcome, log, partial=True)
        elif outcome.interrupted:
            writer.discard()
            output.discard()
            self._add_report(UnitReport(unit.account.name, unit.date, "missing"))
        else:
            held.append((unit, writer, output, outcome))

    def _store(self, unit: Unit, writer: UnitWriter, output: UnitOutput, outcome: UnitOutcome,
               log: Any, *, partial: bool = False) -> None:
        name = unit.account.name
        partial = partial or not outcome.complete or writer.capped
        if partial and outcome.interrupted and self.state.stop_reason != "max_records":
            writer.discard()
            output.discard()
            self._add_report(UnitReport(name, unit.date, "missing", missing_pages=outcome.skipped))
            return
        writer.close()
        target = (self.layout.partial(name, unit.date, self.run_id) if partial
                  else self.layout.part(name, unit.date))
        try:
            info = output.finish(target)
        except AlreadyExists:
            info = self._existing(target)
        report = UnitReport(name, unit.date, "partial" if partial else "done",
                            records=writer.records, pages=outcome.pages,
                            duplicates=writer.duplicates, object=info.name, size=info.size,
                            missing_pages=list(outcome.skipped))
        if not partial:
            with contextlib.suppress(AlreadyExists):
                put_json(self.sink, self.layout.manifest(name, unit.date),
                         {"account": name, "date": unit.date, "records": writer.records,
                          "pages": outcome.pages, "object": info.name, "size": info.size,
                          "crc32c": info.crc32c})
        log.info("part_uploaded", date=unit.date, object=info.uri, bytes=info.size,
                 records=writer.records, partial=partial)
        log.info("unit_finished", date=unit.date, records=writer.records, pages=outcome.pages,
                 duplicates=writer.duplicates, skipped=len(outcome.skipped),
                 rereads=outcome.rereads)
        self._add_report(report)

    def _existing(self, name: str) -> ObjectInfo:
        info = self.sink.stat(name)
        if info is None:
            raise StorageError(f"{name}: create-only write refused but the object is absent")
        return info

    def _add_report(self, report: UnitReport) -> None:
        with self._reports_lock:
            self.reports.append(report)
            if report.state != "missing":
                self._progress["units_done"] += 1

    # ------------------------------------------------------------------ events

    def _on_page(self, account: str, day: dt.date, page: Page, duration: float) -> None:
        if self._watchdog is not None:
            self._watchdog.progress()
        if page.page % 10 == 0 or page.next_page is None:
            elapsed = max(self.clock() - self._started, 1e-6)
            pages_done = self.state.pages
            rate = pages_done / elapsed * 60
            total = self._progress["units_total"] or 1
            run_fraction = min(1.0, (self._progress["units_done"]
                                     + page.page / max(page.pages, 1)) / total)
            self.log.info(
                "progress", account=account, date=day.isoformat(), page=page.page, pages=page.pages,
                percent=round(100 * page.page / max(page.pages, 1), 1),
                records=self.budget.used if self.budget.limit else None,
                rate=round(rate, 1),
                eta_seconds=round((page.pages - page.page) / rate * 60, 1) if rate else None,
                run_percent=round(100 * run_fraction, 1),
                run_eta_seconds=round(elapsed / run_fraction - elapsed, 1) if run_fraction else None,
            )

    def _trouble(self, kind: str, fields: dict[str, Any]) -> None:
        lang = current_language()
        label = error_class_label(str(fields.get("error_class")), lang)
        page, attempt = fields.get("page"), fields.get("attempt")
        if lang == "zh":
            action = f"重试{attempt}" if kind == "retry" else "跳过"
            title = f"[{fields.get('account')}] {fields.get('date')} 第{page}页{label}{action}"
        else:
            action = f"retry {attempt}" if kind == "retry" else "skipped"
            title = f"[{fields.get('account')}] {fields.get('date')} page {page} {label}, {action}"
        self.monitor.report(title, self.log, level="warning" if kind == "retry" else "error")

    def _status(self) -> dict[str, Any]:
        return {**self._progress, **self.state.as_dict(), "stop_reason": self.state.stop_reason}

    # ------------------------------------------------------------------ ending

    def _finish(self) -> JobResult:
        settings = self.settings
        fatal = isinstance(self._fatal, FatalFetchError)
        if self._fatal is not None and not fatal:
            assert isinstance(self._fatal, JobError)
            self.log.error("run_failed", error_class=self._fatal.error_class,
                           error=str(self._fatal))
        missing = [r for r in self.reports if r.state == "missing"]
        partial = [r for r in self.reports if r.state == "partial"]
        reason = self.state.stop_reason
        failed = (self._fatal is not None or bool(missing) or reason in ("skip_cap", "interrupted"))
        if reason == "max_records":
            failed = self._fatal is not None
            partial = []
        status = summary_mod.status_of(failed=failed, partial=bool(partial))
        task = self._task_summary(status)
        put_json(self.sink, self.layout.task_summary(settings.task.index), task,
                 replace_if=lambda _existing: True)

        result_summary: dict[str, Any] = task
        if status != summary_mod.FAILED:
            composed = self._compose_if_last()
            if composed is not None:
                result_summary = composed
        elif settings.task.count == 1:
            result_summary = self._write_run_summary(status, [task], None)

        exit_code = summary_mod.exit_code_for(status, fatal=fatal,
                                              fail_on_skipped=settings.fail_on_skipped_pages)
        self.log.info("run_finished", status=status, records=task["records"],
                      pages=task["pages"], skipped=len(task["skipped_pages"]),
                      duration_seconds=task["duration_seconds"], exit_code=exit_code)
        return JobResult(exit_code, status, result_summary)

    def _task_summary(self, status: str) -> dict[str, Any]:
        state = self.state.as_dict()
        reports = sorted(self.reports, key=lambda r: (r.account, r.date))
        return {
            "status": status,
            "task_index": self.settings.task.index,
            "task_count": self.settings.task.count,
            "execution": self.settings.task.execution,
            "attempt": self.settings.task.attempt,
            "run_id": self.run_id,
            "stop_reason": self.state.stop_reason,
            "records": sum(r.records for r in reports),
            "duplicates": sum(r.duplicates for r in reports),
            "bytes_written": sum(r.size for r in reports if r.state != "resumed"),
            "pages": state["pages"],
            "requests": state["requests"],
            "rereads": state["rereads"],
            "retries": state["retries"],
            "skipped_pages": state["skipped_pages"],
            "units": {"total": len(reports),
                      "done": sum(r.state in ("done", "resumed") for r in reports),
                      "partial": sum(r.state == "partial" for r in reports),
                      "failed": sum(r.state == "missing" for r in reports)},
            "unit_reports": [r.as_dict() for r in reports],
            "duration_seconds": round(self.clock() - self._started, 3),
            "error": str(self._fatal) if self._fatal else None,
        }

    def _compose_if_last(self) -> dict[str, Any] | None:
        """If every task of this execution has finished, compose the result and write the summary.

        Several tasks may get here at once; create-only writes let exactly one of them win.
        """
        settings = self.settings
        tasks: list[dict[str, Any]] = []
        for index in range(settings.task.count):
            task = read_json(self.sink, self.layout.task_summary(index))
            if (task is None or task.get("execution") != settings.task.execution
                    or task.get("task_count") != settings.task.count
                    or task.get("status") == summary_mod.FAILED):
                return None
            tasks.append(task)
        by_unit: dict[tuple[str, str], str] = {}
        for task in tasks:
            for unit in task.get("unit_reports", []):
                if unit.get("object"):
                    by_unit[(unit["account"], unit["date"])] = unit["object"]
        sources = [by_unit[(u.account.name, u.date)] for u in plan_units(settings)
                   if (u.account.name, u.date) in by_unit]
        merged = summary_mod.merge(tasks)
        status = (summary_mod.PARTIAL if merged["skipped_pages"] or merged["units"]["partial"]
                  else summary_mod.SUCCEEDED)
        if any(t.get("stop_reason") == "max_records" for t in tasks):
            status = summary_mod.SUCCEEDED
        previous = read_json(self.sink, self.layout.summary)
        if previous is not None and previous.get("status") == summary_mod.SUCCEEDED:
            return previous
        try:
            result = self._compose_result(sources)
        except AlreadyExists:
            self.log.info("result_composed_elsewhere", object=self.layout.result)
            return None
        return self._write_run_summary(status, tasks, result)

    def _compose_result(self, sources: list[str]) -> ObjectInfo:
        existing = self.sink.stat(self.layout.result)
        previous = read_json(self.sink, self.layout.summary)
        generation: int | None = 0
        if existing is not None:
            if previous is not None and previous.get("status") == summary_mod.SUCCEEDED:
                raise AlreadyExists(self.layout.result)
            generation = existing.generation  # an earlier partial result: replace that version
        info = self.sink.compose(self.layout.result, sources, if_generation_match=generation)
        self.log.info("result_composed", object=info.uri, bytes=info.size, parts=len(sources))
        self._sweep_leftovers()
        return info

    def _sweep_leftovers(self) -> None:
        """After the result: delete what killed attempts left behind, i.e. the chunks of units
        never finished and the intermediate objects of composes cut short. Nothing else of the
        range is being written now (this is the last task), and each is garbage that costs
        storage (a compose's intermediates are copies of the data). Best effort."""
        prefix = f"{self.layout.range_name}/"
        chunks = self.layout.chunks_prefix
        try:
            leftovers = [o.name for o in self.sink.list(prefix)
                         if o.name.startswith(chunks) or is_compose_scratch(o.name)]
            for name in leftovers:
                self.sink.delete(name)
        except StorageError as exc:
            self.log.warning("cleanup_failed", error=str(exc))
            return
        if leftovers:
            self.log.info("leftovers_deleted", objects=len(leftovers))

    def _write_run_summary(self, status: str, tasks: list[dict[str, Any]],
                           result: ObjectInfo | None) -> dict[str, Any]:
        settings = self.settings
        merged = summary_mod.merge(tasks)
        if result is not None:
            merged["records"] = sum(int(u.get("records", 0)) for t in tasks
                                    for u in t.get("unit_reports", []) if u.get("object"))
        resources = self.monitor.snapshot() if settings.resource_monitor_enabled else {}
        run_summary = {
            "status": status,
            "start_date": settings.start_date.isoformat(),
            "end_date": settings.end_date.isoformat(),
            "accounts": [a.name for a in settings.accounts],
            **merged,
            "duration_seconds": round(self.clock() - self._started, 3),
            "result": ({"uri": result.uri, "name": result.name, "size": result.size,
                        "crc32c": result.crc32c} if result is not None else None),
            "resources": resources,
            "execution": settings.task.execution,
            "task_count": settings.task.count,
            "stop_reason": next((t.get("stop_reason") for t in tasks if t.get("stop_reason")),
                                None),
        }
        try:
            info = put_json(self.sink, self.layout.summary, run_summary,
                            replace_if=lambda old: old.get("status") != summary_mod.SUCCEEDED)
        except AlreadyExists:
            self.log.info("summary_written_elsewhere", object=self.layout.summary)
            return run_summary
        self.log.info("summary_written", object=info.uri, status=status)
        return run_summary
