"""Fetching pages: one page with its retries (`PageFetch`), the requests in flight of an account
(`Window`), the loop that runs page plans through them (`FetchLoop`), and one account's units
of the job (`AccountFetch`). The plans themselves, which pages to ask for, are `app.pager`.

- `PageFetch`: one page, every attempt. As tenacity splits it: whether to try again is the
  policy's `should_retry` (the stop), how long to wait first its `wait_before_retry` (the
  wait), the wait itself the injected `sleep`. A page ends `Page` (fetched), `SkippedPage`
  (every attempt failed: recorded in the run state, the run goes on) or `Interrupted` (SIGTERM
  cut the request short, or anything failed while the run is stopping: not a skip, not a retry,
  not counted). Bad credentials and a rejected request are raised (retrying cannot help); so is
  `ApiUnreachable`: while an account has had no page answered, `UNREACHABLE_AFTER` consecutive
  connection-level failures (`ConnectFailed`) mean the API is down. Log lines give the request
  time (`duration_ms`) and the time the attempt waited for a request slot and the account's
  throttle (`wait_ms`) apart.
- `Window`: at most `concurrency` requests of the account at a time, from up to `depth` pages
  handed out; results come back in arrival order. A page waiting out a back-off keeps its worker
  but not its request slot, so the pages behind it go ahead. A page that sizes a query goes out
  beside a full window. Without threads (the original interface) each page is fetched in the
  caller's thread, one after another.
- `FetchLoop`: the main pass over an account's queries, then the second pass. The next query
  starts while the current one is down to its last round of requests (its first page, which
  sizes it, is answered by the time the current one's last pages are), with at most
  `UNIT_LANES` queries open, being fetched or stored; storing runs beside the fetch. A query
  with skipped pages waits for the second pass, after every query's main pass.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from app.api import AccountClient
from app.config import Account, Settings
from app.errors import (
    ApiUnreachable,
    ConnectFailed,
    FatalFetchError,
    FetchError,
    JobError,
    RequestInterrupted,
)
from app.http import HttpClient
from app.logs import register_secret
from app.models import Page, SkippedPage
from app.outcome import StopReason
from app.output import UnitOutput
from app.pager import (
    CountChanged,
    CountUnstable,
    Interrupted,
    Note,
    PagePlan,
    PageResult,
    PastTheEnd,
    Plan,
    Probe,
    Query,
    Recovered,
    Reread,
    RetryPlan,
    RunState,
    UnitOutcome,
)
from app.ratelimit import RateLimiter
from app.retry import RetryPolicy
from app.sinks import Sink
from app.store import RunLayout
from app.writer import UnitWriter

PAGE_WINDOW_FACTOR = 4
"""Pages handed out ahead per request slot: back-off waits hold no slot."""
UNIT_LANES = 2
"""Units of one account open at once (being fetched or stored); each holds a writer."""
UNREACHABLE_AFTER = 3
"""Consecutive connection-level failures, with no page of the account answered yet, that mean
the API is down. With the default back-off that is the first page's first two retries (about
30 s): long enough to ride out a blip at start-up, far shorter than skipping page after page."""


class PageSource(Protocol):
    def fetch_page(self, start: dt.date, end: dt.date, page: int, limit: int) -> Page: ...


@runtime_checkable
class ThrottleReport(Protocol):
    """A page source that can say how long its last `fetch_page` in this thread waited for its
    own throttle (seconds). Optional: without it the wait counts as request time."""

    def throttle_wait(self) -> float: ...


class EventLog(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...
    def debug(self, event: str, **fields: Any) -> Any: ...


class _NullLog:
    def info(self, event: str, **fields: Any) -> None: ...
    def warning(self, event: str, **fields: Any) -> None: ...
    def error(self, event: str, **fields: Any) -> None: ...
    def debug(self, event: str, **fields: Any) -> None: ...


# -- one page, every attempt -------------------------------------------------------------------


class PageFetch:
    """Fetch one page of one account with its retries (see the module docstring)."""

    def __init__(
        self,
        *,
        client: PageSource,
        policy: RetryPolicy,
        state: RunState,
        account: str,
        page_limit: int = 100,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        log: EventLog | None = None,
        on_trouble: Callable[[str, dict[str, Any]], None] | None = None,
        on_page: Callable[[str, dt.date, Page, float], None] | None = None,
        unreachable_after: int = UNREACHABLE_AFTER,
    ) -> None:
        self.client = client
        self.policy = policy
        self.state = state
        self.account = account
        self.page_limit = page_limit
        self._sleep = sleep
        self._clock = clock
        self.log: EventLog = log or _NullLog()
        self._on_trouble = on_trouble
        self._on_page = on_page
        self._throttle = client if isinstance(client, ThrottleReport) else None
        self.unreachable_after = max(1, unreachable_after)
        self._reach_lock = threading.Lock()
        self._reached = False
        """A page of this account has answered: the API is reachable."""
        self._connect_streak = 0
        """Consecutive connection-level failures of this account."""

    def __call__(self, q: Query, page: int,
                 slot: AbstractContextManager[Any] | None = None) -> PageResult:
        """Every attempt at page `page` of `q`, each request sent holding `slot` (a request
        slot of the window; the wait for it counts as `wait_ms`)."""
        attempt = 0
        while True:
            attempt += 1
            queued = self._clock()
            error: FetchError | None = None
            result: Page | None = None
            with slot or nullcontext():
                if self.state.stopped:
                    return Interrupted(page)  # never requested: the unit is simply unfinished
                sent = self._clock()
                try:
                    result = self.client.fetch_page(q.start, q.end, page, self.page_limit)
                except FatalFetchError:
                    raise
                except FetchError as exc:
                    error = exc
                ended = self._clock()
            throttle = self._throttle.throttle_wait() if self._throttle is not None else 0.0
            throttle = min(max(throttle, 0.0), ended - sent)
            duration = ended - sent - throttle
            timing = {"duration_ms": round(duration * 1000),
                      "wait_ms": round((sent - queued + throttle) * 1000)}
            if error is None:
                assert result is not None
                self._reach(None)
                self.state.count_page()
                self.log.info("page_fetched", account=self.account, date=q.label, page=page,
                              pages=result.pages, records=len(result.records), attempt=attempt,
                              count=result.count, **timing)
                if self._on_page is not None:
                    self._on_page(self.account, q.start, result, duration)
                return result
            if isinstance(error, RequestInterrupted) or self.state.stopped:
                self.log.debug("page_interrupted", account=self.account, date=q.label,
                               page=page, attempt=attempt, error_class="interrupted")
                return Interrupted(page)
            self.state.count_error(error.error_class)
            self._reach(error)
            fields = {"account": self.account, "date": q.label, "page": page,
                      "attempt": attempt, "error_class": error.error_class, "error": str(error),
                      **timing}
            if self.policy.should_retry(attempt, error):
                wait_s = self.policy.wait_before_retry(attempt, error)
                self.log.warning("page_retry", **fields, wait=round(wait_s, 3))
                self._trouble("retry", fields)
                self._sleep(wait_s)
                continue  # a stop during the wait: the next attempt is not sent
            self.log.error("page_skipped", **fields, attempts=attempt)
            self._trouble("skip", fields)
            skip = SkippedPage(self.account, q.label, page, attempt, error.error_class,
                               str(error))
            self.state.add_skip(skip)
            return skip

    def _reach(self, error: FetchError | None) -> None:
        """Track whether the account reaches the API; raise ApiUnreachable when it never has
        and its last `unreachable_after` requests failed at the connection level."""
        with self._reach_lock:
            if error is None:
                self._reached = True
                self._connect_streak = 0
                return
            if not isinstance(error, ConnectFailed):
                self._connect_streak = 0
                return
            self._connect_streak += 1
            down = not self._reached and self._connect_streak >= self.unreachable_after
            streak = self._connect_streak
        if down:
            self.state.request_stop(StopReason.FATAL)
            raise ApiUnreachable(
                f"account {self.account}: {streak} connection attempts failed and none has "
                f"ever reached the API ({error})") from error

    def _trouble(self, kind: str, fields: dict[str, Any]) -> None:
        if self._on_trouble is not None:
            self._on_trouble(kind, fields)


# -- the requests in flight --------------------------------------------------------------------


@dataclass(frozen=True)
class Landed:
    """A page handed to the window that came back (or raised: `result()` raises it)."""

    query: Query
    page: int
    sizing: bool
    future: Future[PageResult]

    def result(self) -> PageResult:
        return self.future.result()


class Window:
    """An account's requests in flight (see the module docstring). `threads` 0: serial."""

    def __init__(self, fetch: Callable[[Query, int, AbstractContextManager[Any]], PageResult],
                 *, concurrency: int = 1, depth: int = 1, threads: int = 0,
                 name: str = "fetch") -> None:
        self._fetch = fetch
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self.depth = max(1, depth)
        self._pool = (ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
                      if threads > 0 else None)
        self._landed: queue.SimpleQueue[Landed | None] = queue.SimpleQueue()
        self._serial: collections.deque[tuple[Query, int, bool]] = collections.deque()
        self._out: set[Future[PageResult]] = set()
        self.pending = 0
        """Pages handed out whose result `next()` has not returned yet."""
        self._in_window = 0

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has_room(self) -> bool:
        """Another page (one that does not size a query) may be handed out."""
        return self._in_window < self.depth

    def submit(self, query: Query, page: int, *, sizing: bool = False) -> None:
        self.pending += 1
        self._in_window += not sizing
        if self._pool is None:
            self._serial.append((query, page, sizing))
            return
        future = self._pool.submit(self._fetch, query, page, self._slots)
        self._out.add(future)
        future.add_done_callback(lambda f: self._landed.put(Landed(query, page, sizing, f)))

    def next(self) -> Landed | None:
        """The next page back, in arrival order (waiting for it); None when woken (`wake`) or,
        serial, when nothing is handed out."""
        if self._pool is None:
            if not self._serial:
                return None
            query, page, sizing = self._serial.popleft()
            future: Future[PageResult] = Future()
            try:
                future.set_result(self._fetch(query, page, self._slots))
            except Exception as exc:  # handed to the caller, as a pool would
                future.set_exception(exc)
            landed = Landed(query, page, sizing, future)
        else:
            woken = self._landed.get()
            if woken is None:
                return None
            landed = woken
            self._out.discard(landed.future)
        self.pending -= 1
        self._in_window -= not landed.sizing
        return landed

    def wake(self) -> None:
        """Make a waiting `next()` return None (something besides a page happened)."""
        self._landed.put(None)

    def abandon(self) -> None:
        """Drop what is handed out: pages not started never are, the others are waited for
        (no request outlives its loop)."""
        for future in list(self._out):
            future.cancel()
        for future in list(self._out):
            if not future.cancelled():
                future.exception()
        self._out.clear()
        self._serial.clear()
        self._landed = queue.SimpleQueue()
        self.pending = self._in_window = 0

    def close(self) -> None:
        self.abandon()
        if self._pool is not None:
            self._pool.shutdown()


# -- plans through the window ------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One page result of one query, as it came back."""

    query: Query
    page: int
    result: PageResult


class UnitHooks(Protocol):
    """What the loop tells about each query: started, a page fetched, ended (its outcome,
    after the second pass if it had one), or never started (the run stopped first)."""

    def start(self, query: Query) -> None: ...
    def page(self, query: Query, page: Page) -> None: ...
    def end(self, query: Query, outcome: UnitOutcome) -> None: ...
    def missing(self, query: Query) -> None: ...


@dataclass(eq=False)
class _Open:
    query: Query
    plan: Plan


class FetchLoop:
    """An account's queries through its window: `run` (main pass, then second pass) and
    `pages` (one plan alone). `storer` runs `hooks.end` of the main pass beside the fetch;
    without it, in the loop's thread."""

    def __init__(self, *, window: Window, state: RunState, account: str,
                 concurrency: int = 1, log: EventLog | None = None,
                 storer: Executor | None = None) -> None:
        self.window = window
        self.state = state
        self.account = account
        self.concurrency = max(1, concurrency)
        self.log: EventLog = log or _NullLog()
        self._storer = storer
        self._stores: list[Future[None]] = []

    def run(self, queries: Sequence[Query], hooks: UnitHooks) -> Iterator[Arrival]:
        """Every query: the main pass, then the second pass over the pages still skipped. Each
        result is yielded after `hooks.page` had it. A fatal error (bad credentials, an
        unreachable API, storage failing) starts no new query; the others end, then it is
        raised."""
        held: list[tuple[Query, UnitOutcome]] = []
        yield from self._main_pass(queries, hooks, held)
        held.sort(key=lambda entry: entry[0].start)
        if held and not self.state.stopped:
            self.log.info("second_pass_started", pages=sum(len(o.skipped) for _q, o in held))
        for query, first in held:
            if self.state.stopped and self.state.stop_reason != StopReason.MAX_RECORDS:
                hooks.end(query, replace(first, interrupted=True))
                continue
            plan = RetryPlan(first.skipped)
            with closing(self.pages(query, plan)) as arrivals:
                for arrival in arrivals:
                    if isinstance(arrival.result, Page):
                        hooks.page(query, arrival.result)
                    yield arrival
            outcome = plan.outcome
            outcome.pages += first.pages
            if outcome.count is None:
                outcome.count, outcome.total_pages = first.count, first.total_pages
            hooks.end(query, outcome)

    def pages(self, query: Query, plan: Plan) -> Generator[Arrival, None, None]:
        """One plan alone, its results as they arrive; `plan.outcome` says how it ended."""
        unit = _Open(query, plan)
        try:
            while True:
                self._hand_out([unit])
                if plan.finished:
                    return
                landed = self.window.next()
                if landed is not None:
                    yield self._land(unit, landed)
        finally:
            self.window.abandon()

    # -- the main pass

    def _main_pass(self, queries: Sequence[Query], hooks: UnitHooks,
                   held: list[tuple[Query, UnitOutcome]]) -> Iterator[Arrival]:
        waiting = collections.deque(queries)
        units: dict[Query, _Open] = {}
        failure: BaseException | None = None
        try:
            while True:
                failure = failure or self._store_failure()
                self._settle(units, waiting, hooks, held, opening=failure is None)
                if not units and self.window.pending == 0 and (failure or not waiting):
                    break
                landed = self.window.next()
                if landed is None or landed.query not in units:
                    continue  # woken by a store, or a page of a query that failed
                unit = units[landed.query]
                try:
                    arrival = self._land(unit, landed)
                    if isinstance(arrival.result, Page):
                        hooks.page(unit.query, arrival.result)
                except Exception as exc:
                    if isinstance(exc, JobError):
                        self.state.request_stop(StopReason.FATAL)
                    failure = failure or exc
                    del units[unit.query]
                    continue
                yield arrival
        finally:
            self.window.abandon()
            wait(self._stores)
        failure = failure or self._store_failure()
        if failure is not None:
            raise failure

    def _settle(self, units: dict[Query, _Open], waiting: collections.deque[Query],
                hooks: UnitHooks, held: list[tuple[Query, UnitOutcome]], *,
                opening: bool) -> None:
        """Hand out pages, end the queries whose main pass is over, open the next: until
        nothing changes."""
        changed = True
        while changed:
            self._hand_out(list(units.values()))
            ended = [unit for unit in units.values() if unit.plan.finished]
            for unit in ended:
                del units[unit.query]
                self._main_pass_ended(unit, hooks, held)
            changed = bool(ended)
            if opening and waiting and self._may_open(units):
                if self.state.stopped:
                    while waiting:
                        hooks.missing(waiting.popleft())
                else:
                    query = waiting.popleft()
                    hooks.start(query)
                    units[query] = _Open(query, PagePlan())
                changed = True

    def _may_open(self, units: dict[Query, _Open]) -> bool:
        """The newest open query is down to its last round of requests, and a lane is free."""
        newest = list(units.values())[-1] if units else None
        if newest is not None and not newest.plan.in_last_round(self.concurrency):
            return False
        storing = sum(not future.done() for future in self._stores)
        return self.state.stopped or len(units) + storing < UNIT_LANES

    def _main_pass_ended(self, unit: _Open, hooks: UnitHooks,
                         held: list[tuple[Query, UnitOutcome]]) -> None:
        outcome = unit.plan.outcome
        capped = self.state.stop_reason == StopReason.MAX_RECORDS
        if not (outcome.complete or outcome.interrupted or capped):
            held.append((unit.query, outcome))
        elif self._storer is None:
            hooks.end(unit.query, outcome)
        else:
            future = self._storer.submit(self._store, hooks, unit.query, outcome)
            future.add_done_callback(lambda _f: self.window.wake())
            self._stores.append(future)

    def _store(self, hooks: UnitHooks, query: Query, outcome: UnitOutcome) -> None:
        try:
            hooks.end(query, outcome)
        except JobError:
            self.state.request_stop(StopReason.FATAL)  # no query starts or requests anything
            raise

    def _store_failure(self) -> BaseException | None:
        return next((f.exception() for f in self._stores if f.done() and f.exception()), None)

    # -- both passes

    def _hand_out(self, units: list[_Open]) -> None:
        """Give the window the pages it has room for, oldest query first (a page that sizes a
        query always goes). Once the run stops nothing more is asked: a plan with nothing
        outstanding is cut short."""
        for unit in units:
            plan = unit.plan
            if self.state.stopped:
                if plan.pending == 0:
                    plan.cut_short()
                continue
            while plan.has_next_page and (plan.sizing or self.window.has_room()):
                sizing = plan.sizing
                number = plan.next_page()
                if number is None:
                    break
                self.window.submit(unit.query, number, sizing=sizing)

    def _land(self, unit: _Open, landed: Landed) -> Arrival:
        result = landed.result()  # a fatal error of the fetch is raised here
        for note in unit.plan.update_state(landed.page, result):
            self._note(unit.query, note)
        return Arrival(unit.query, landed.page, result)

    def _note(self, q: Query, note: Note) -> None:
        where = {"account": self.account, "date": q.label}
        match note:
            case Probe(page=page, dead=dead):
                if not self.state.stopped:
                    self.log.warning("page_probe", **where, page=page, dead=dead)
            case PastTheEnd(page=page):
                self.state.remove_skip(self.account, q.label, page)  # it held nothing
            case CountChanged(old=old, new=new, page=page):
                self.log.warning("count_changed", **where, old_count=old, new_count=new,
                                 page=page)
            case Reread():
                self.state.count_reread()
            case CountUnstable(rereads=rereads):
                self.log.warning("count_unstable", **where, rereads=rereads)
            case Recovered(page=page):
                self.state.remove_skip(self.account, q.label, page)
                self.log.info("page_recovered", **where, page=page)


# -- the job's units of one account ------------------------------------------------------------


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


class UnitKey(Protocol):
    """One (account, day) of the job, as the fetch sees it."""

    @property
    def day(self) -> dt.date: ...

    @property
    def date(self) -> str: ...


U = TypeVar("U", bound=UnitKey)


@dataclass
class OpenUnit(Generic[U]):
    """A unit being fetched: its writer, where its chunks go, and when its fetch started."""

    unit: U
    writer: UnitWriter
    output: UnitOutput
    started_at: float
    """Wall clock at the start of the fetch: the snapshot's `fetched_at`."""

    def discard(self) -> None:
        """Nothing of it is kept: the writer's scratch and the chunks uploaded so far go."""
        self.writer.discard()
        self.output.discard()


class AccountFetch(Generic[U]):
    """One account's units: its HTTP client, throttle, API client and retry policy, the
    window and the loop; each unit's pages go into its writer (MAX_RECORDS_LIMIT stops the
    run when reached). The job stores a unit (`on_unit_done`, also for a unit cut short, to
    drop it) and records a unit never started (`on_unit_missing`)."""

    def __init__(self, settings: Settings, account: Account, *, state: RunState,
                 budget: RecordBudget, sink: Sink, layout: RunLayout, run_id: str,
                 scratch: Path, clients: list[HttpClient], log: Any,
                 on_unit_done: Callable[[OpenUnit[U], UnitOutcome], None],
                 on_unit_missing: Callable[[U], None],
                 on_page: Callable[[str, dt.date, Page, float], None],
                 on_trouble: Callable[[str, dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], object] = time.sleep,
                 token_ttl: float | None = None, chunk_bytes: int | None = None) -> None:
        self.settings, self.account, self.state, self.budget = settings, account, state, budget
        self.sink, self.layout, self.run_id, self.scratch = sink, layout, run_id, scratch
        self.clients, self.log = clients, log
        self._on_unit_done, self._on_unit_missing = on_unit_done, on_unit_missing
        self._on_page, self._on_trouble = on_page, on_trouble
        self.clock, self.wall_clock, self.sleep = clock, wall_clock, sleep
        self.token_ttl, self.chunk_bytes = token_ttl, chunk_bytes
        self._units: dict[Query, U] = {}
        self._open: dict[Query, OpenUnit[U]] = {}

    def run(self, units: Sequence[U]) -> None:
        settings, name = self.settings, self.account.name
        register_secret(self.account.secret)
        http = HttpClient(timeout=settings.request_timeout, clock=self.clock,
                          pool_size=settings.fetch_concurrency + 2)
        self.clients.append(http)
        if self.state.stopped:
            http.abort_all()
        limiter = RateLimiter(per_minute=settings.requests_per_minute,
                              min_interval=settings.request_delay,
                              clock=self.clock, sleep=self.sleep)
        extra: dict[str, Any] = {} if self.token_ttl is None else {"token_ttl": self.token_ttl}
        client = AccountClient(base_url=settings.base_url, key=self.account.key,
                               secret=self.account.secret, http=http, limiter=limiter,
                               clock=self.clock, currency=settings.preferred_currency,
                               on_token=register_secret, log=self.log, **extra)
        policy = RetryPolicy(max_retries=settings.max_retry_attempts,
                             backoff=settings.retry_backoff,
                             rate_limit_delay=settings.rate_limit_delay)
        fetch = PageFetch(client=client, policy=policy, state=self.state, account=name,
                          page_limit=settings.page_limit, sleep=self.sleep, clock=self.clock,
                          log=self.log, on_trouble=self._on_trouble, on_page=self._on_page)
        self._units = {Query(unit.day, unit.day): unit for unit in units}
        depth = settings.fetch_concurrency * PAGE_WINDOW_FACTOR
        try:
            # Workers beyond FETCH_CONCURRENCY only wait (back-off or a request slot): they let
            # the pages behind a retrying page go ahead; one more per lane for sizing pages.
            with Window(fetch, concurrency=settings.fetch_concurrency, depth=depth,
                        threads=depth + UNIT_LANES, name=f"fetch-{name}") as window, \
                    ThreadPoolExecutor(max_workers=UNIT_LANES,
                                       thread_name_prefix=f"unit-{name}") as storer:
                loop = FetchLoop(window=window, state=self.state, account=name,
                                 concurrency=settings.fetch_concurrency, log=self.log,
                                 storer=storer)
                for _arrival in loop.run(list(self._units), self):
                    pass  # each page went into its unit's writer (`page`)
        except JobError as exc:
            self.log.error("run_failed", error_class=exc.error_class, error=str(exc))
            self.state.request_stop(StopReason.FATAL)
            raise

    # -- UnitHooks

    def start(self, query: Query) -> None:
        unit = self._units[query]
        self.log.info("unit_started", date=unit.date)
        output = UnitOutput(sink=self.sink, chunk_name=functools.partial(
            self.layout.chunk, self.account.name, unit.date, self.run_id))
        kwargs: dict[str, Any] = {}
        if self.chunk_bytes is not None:
            kwargs["chunk_bytes"] = self.chunk_bytes
        writer = UnitWriter(account=self.account.name, scratch_dir=self.scratch,
                            on_chunk=output.on_chunk,
                            take_record=self.budget.take if self.budget.limit else None,
                            **kwargs)
        self._open[query] = OpenUnit(unit, writer, output, started_at=self.wall_clock())

    def page(self, query: Query, page: Page) -> None:
        writer = self._open[query].writer
        if page.records:
            writer.write(page.records)
            if writer.capped and self.state.stop_reason is None:
                self.log.warning("max_records_reached", limit=self.budget.limit)
                self.state.request_stop(StopReason.MAX_RECORDS)

    def end(self, query: Query, outcome: UnitOutcome) -> None:
        self._on_unit_done(self._open.pop(query), outcome)

    def missing(self, query: Query) -> None:
        self._on_unit_missing(self._units[query])
