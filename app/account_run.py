"""One account's fetch, as the job runs it: the consumer of the fetch loop's events.

`AccountRun` opens the account's client stack (`fetch.open_account`), runs its days through the fetch loop
and turns the events into data: each day's pages go into its writer (`writer.UnitWriter`, chunks through
`output.UnitOutput`), and each ended day is settled (`outcome.settle` decides; this module carries it out):
dropped, stored in the run's folder and then in the day store when it ranks above the snapshot there
(`store.DayStore.replace`), read once more, or kept from the complete snapshot there. What became of each
day is handed to the job as a `UnitReport`.

It reads the run's stop token (`runstate.RunStop`) and asks for a stop only through the loop
(`FetchLoop.stop`: MAX_RECORDS_LIMIT reached); the run's `runstate.FetchTally` it hands to the fetch
layer, which alone writes it.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import Account, Settings
from app.errors import AlreadyExists, JobError, StorageError
from app.fetch import (
    PAGE_WINDOW_FACTOR,
    TOKEN_TTL,
    UNIT_LANES,
    DayEnded,
    DayNotStarted,
    DayStarted,
    FetchEvent,
    FetchListener,
    FetchLoop,
    PageArrived,
    PageFetch,
    open_account,
)
from app.outcome import (
    DayFetch,
    Disposition,
    KeepReason,
    StopReason,
    StoredDay,
    UnitState,
    Verdict,
    settle,
)
from app.output import UnitOutput
from app.plans import Query, UnitOutcome
from app.runstate import FetchTally, RunStop
from app.sinks import ObjectInfo, Sink
from app.store import (
    RACE_ATTEMPTS,
    DayChange,
    DayStore,
    Replacement,
    RunLayout,
    Snapshot,
    SnapshotMeta,
    iso_utc,
    stored_days,
)
from app.summary import UnitReport
from app.volume import VOLUME_LOOKBACK_DAYS, volume_drop
from app.window import Window
from app.writer import CHUNK_BYTES, UnitWriter

if TYPE_CHECKING:
    from app.http import HttpClient

@dataclass(frozen=True)
class Unit:
    """One (account, day) of the job."""

    account: Account
    day: dt.date

    @property
    def date(self) -> str:
        return self.day.isoformat()


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
class OpenUnit:
    """A unit being fetched: its writer, where its chunks go, and when its fetch started."""

    unit: Unit
    writer: UnitWriter
    output: UnitOutput
    started_at: float
    """Wall clock at the start of the fetch: the snapshot's `fetched_at`."""
    read_again: bool = False
    """The unit's second read (its first would have lost records of the stored day)."""

    def discard(self) -> None:
        """Nothing of it is kept: the writer's scratch and the chunks uploaded so far go."""
        self.writer.discard()
        self.output.discard()


def serve_copy(store: DayStore, layout: RunLayout, unit: Unit, snapshot: Snapshot, run_id: str, *,
               attempt: int) -> ObjectInfo | None:
    """This run's own copy of a snapshot it serves (reused or kept); None when the day's snapshot was
    replaced meanwhile."""
    target = layout.part(unit.account.name, unit.date, f"{run_id}-s{attempt}")
    return store.copy_for_run(snapshot, target)


@dataclass
class RunContext:
    """What every account run of a task shares with the job."""

    settings: Settings
    sink: Sink
    store: DayStore
    layout: RunLayout
    run_id: str
    currency: str
    stop: RunStop
    """The run's stop token: read here; the job and the fetch layer request it."""
    tally: FetchTally
    """The run's fetch bookkeeping, for the fetch layer (it alone writes it)."""
    budget: RecordBudget
    clients: list[HttpClient]
    """Every account's HTTP client, for SIGTERM and a storage failure to abort."""
    listener: FetchListener
    """Telemetry: progress, retry and skip diagnoses."""
    add_report: Callable[[UnitReport], None]
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    sleep: Callable[[float], object] = time.sleep
    token_ttl: float = TOKEN_TTL
    chunk_bytes: int = CHUNK_BYTES


@dataclass
class AccountRun:
    """One account's units through the fetch loop (see the module docstring)."""

    ctx: RunContext
    account: Account
    scratch: Path
    log: Any
    _units: dict[Query, Unit] = field(default_factory=dict, init=False)
    _open: dict[Query, OpenUnit] = field(default_factory=dict, init=False)
    _started: set[Query] = field(default_factory=set, init=False)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def sink(self) -> Sink:
        return self.ctx.sink

    @property
    def store(self) -> DayStore:
        return self.ctx.store

    @property
    def layout(self) -> RunLayout:
        return self.ctx.layout

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def currency(self) -> str:
        return self.ctx.currency

    def run(self, units: Sequence[Unit]) -> None:
        ctx, settings, name = self.ctx, self.ctx.settings, self.account.name
        stack = open_account(
            base_url=settings.base_url, key=self.account.key, secret=self.account.secret,
            request_timeout=settings.request_timeout, requests_per_minute=settings.requests_per_minute,
            request_delay=settings.request_delay, currency=settings.preferred_currency,
            max_retries=settings.max_retry_attempts, backoff=settings.retry_backoff,
            rate_limit_delay=settings.rate_limit_delay, clock=ctx.clock, sleep=ctx.sleep,
            log=self.log, requests=ctx.tally, token_ttl=ctx.token_ttl,
            pool_size=settings.fetch_concurrency + 2)
        ctx.clients.append(stack.http)
        if ctx.stop.stopped:
            stack.http.abort_all()
        fetch = PageFetch(client=stack.client, policy=stack.policy, stop=ctx.stop, tally=ctx.tally,
                          account=name, page_limit=settings.page_limit, sleep=ctx.sleep, clock=ctx.clock,
                          log=self.log, listener=ctx.listener)
        self._units = {Query(unit.day, unit.day): unit for unit in units}
        depth = settings.fetch_concurrency * PAGE_WINDOW_FACTOR
        try:
            # Workers beyond FETCH_CONCURRENCY only wait (back-off or a request slot): they let the
            # pages behind a retrying page go ahead; one more per lane for the pages that size a day.
            with Window(fetch, concurrency=settings.fetch_concurrency, depth=depth,
                        threads=depth + UNIT_LANES, name=f"fetch-{name}") as window:
                loop = FetchLoop(window=window, stop=ctx.stop, tally=ctx.tally, account=name,
                                 concurrency=settings.fetch_concurrency, log=self.log)
                for event in loop.run(list(self._units)):
                    try:
                        self._take(event, loop)
                    except Exception as exc:  # the loop decides: drop the day, stop on a JobError
                        loop.fail(event.query, exc)
        except JobError as exc:
            self.log.error("run_failed", error_class=exc.error_class, error=str(exc))
            raise  # the job stops the run

    def _take(self, event: FetchEvent, loop: FetchLoop) -> None:
        """One event of the fetch loop."""
        match event:
            case DayStarted(query=query):
                self._start(query)
            case PageArrived(query=query, page=page):
                writer = self._open[query].writer
                if page.records:
                    writer.write(page.records)
                    if writer.capped and self.ctx.stop.reason is None:
                        self.log.warning("max_records_reached", limit=self.ctx.budget.limit)
                        loop.stop(StopReason.MAX_RECORDS)
            case DayEnded(query=query, outcome=outcome):
                if self._finish_unit(self._open.pop(query), outcome, self.log):
                    loop.read_again(query)
            case DayNotStarted(query=query):
                self._missing(self._units[query])

    def _start(self, query: Query) -> None:
        unit, ctx = self._units[query], self.ctx
        self.log.info("unit_started", date=unit.date)
        output = UnitOutput(sink=ctx.sink, chunk_name=functools.partial(
            ctx.layout.chunk, self.account.name, unit.date, ctx.run_id))
        writer = UnitWriter(account=self.account.name, scratch_dir=self.scratch,
                            on_chunk=output.on_chunk,
                            take_record=ctx.budget.take if ctx.budget.limit else None,
                            chunk_bytes=ctx.chunk_bytes)
        self._open[query] = OpenUnit(unit, writer, output, started_at=ctx.wall_clock(),
                                     read_again=query in self._started)
        self._started.add(query)

    def _add_report(self, report: UnitReport) -> None:
        self.ctx.add_report(report)

    def _serve(self, unit: Unit, snapshot: Snapshot, *, attempt: int) -> ObjectInfo | None:
        return serve_copy(self.store, self.layout, unit, snapshot, self.run_id, attempt=attempt)

    def _missing(self, unit: Unit, missing_pages: Iterable[int] = ()) -> None:
        """A unit not delivered: never started, or cut short (SIGTERM, the skip cap)."""
        self._add_report(UnitReport(unit.account.name, unit.date, UnitState.MISSING,
                                    missing_pages=list(missing_pages)))

    def _finish_unit(self, open_unit: OpenUnit, outcome: UnitOutcome, log: Any) -> bool:
        """Settle a fetched day (`outcome.settle` decides, this carries it out): drop it, store it
        in the run's folder and then in the day store if it ranks above the snapshot there, or
        keep the complete snapshot there. True: read the day once more (a refresh that would
        lose records of the stored day)."""
        unit, writer = open_unit.unit, open_unit.writer
        name = unit.account.name
        stop = self.ctx.stop.reason
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
        for attempt in range(RACE_ATTEMPTS):
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


def _records(snapshot: Snapshot) -> int | None:
    return snapshot.meta.records if snapshot.meta is not None else None
