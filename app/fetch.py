"""Fetching pages: one page with its retries (`PageFetch`), the loop that runs an account's page plans
through its window (`FetchLoop`; both are `app.pager`), and the job's units of one account
(`AccountFetch`).

- `PageFetch`: one page, every attempt. As tenacity splits it: whether to try again is the policy's
  `should_retry` (the stop), how long to wait first its `wait_before_retry` (the wait), the wait itself the
  injected `sleep`. A page ends a `Page`, a `SkippedPage` (every attempt failed: recorded in the run state,
  the run goes on) or an `InterruptedPage` (SIGTERM cut it short, or it failed while the run stops: not a
  skip, not a retry, not counted). Bad credentials and a rejected request are raised; so is `ApiUnreachable`
  when an account never answered and its last `UNREACHABLE_AFTER` requests could not connect. Log lines
  give three times apart: the request (`duration_ms`), the pacing by design (`pacing_ms`: the wait for the
  account's throttle, and for a request slot while the throttle kept its full pace), and waiting beyond
  that pace (`wait_ms`: for a slot held by requests slower to answer than the throttle allows).
- `FetchLoop`: the main pass over an account's queries, then the second pass. The next query starts while
  the current one is down to its last round of requests, so its first page (it sizes it) is answered by the
  time the current one's last pages are; at most `UNIT_LANES` are open. A query ends (the job stores it)
  once the pages that came back are taken and the next one is sized, its window in flight meanwhile. A
  query with skipped pages waits for the second pass, after every main pass.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from app.api import TOKEN_TTL, AccountClient
from app.config import Account, Settings
from app.errors import (
    ApiUnreachable,
    ConnectFailed,
    EmptyPage,
    FatalFetchError,
    FetchError,
    JobError,
    RequestInterrupted,
)
from app.http import HttpClient
from app.logs import register_secret
from app.models import Page, SkippedPage
from app.outcome import DayFetch, Disposition, StopReason, settle
from app.output import UnitOutput
from app.pager import (
    Arrival,
    EventLog,
    InterruptedPage,
    NullLog,
    PagePlan,
    PageResult,
    Plan,
    Query,
    RetryPlan,
    RunState,
    UnitOutcome,
    Window,
    answered,
    apply_note,
)
from app.ratelimit import RateLimiter
from app.retry import RetryPolicy
from app.sinks import Sink
from app.store import RunLayout
from app.writer import CHUNK_BYTES, UnitWriter

PAGE_WINDOW_FACTOR = 4
"""Pages handed out ahead per request slot: back-off waits hold no slot."""
UNIT_LANES = 2
"""Units of one account open at once (each holds a writer and its id set)."""
UNREACHABLE_AFTER = 3
"""Consecutive connection-level failures, with no page of the account answered yet, that mean the API is
down. With the default back-off that is the first page's first two retries (about 30 s): long enough to ride
out a blip at start-up, far shorter than skipping page after page."""


class PageSource(Protocol):
    def fetch_page(self, start: dt.date, end: dt.date, page: int, limit: int) -> Page: ...


@runtime_checkable
class ThrottleReport(Protocol):
    """A page source that can say how long its last `fetch_page` in this thread waited for its own throttle
    (seconds), and how many sends its throttle has reserved so far at what interval. Optional: without it
    the throttle's wait counts as request time, and a wait for a request slot is not told from pacing."""

    def throttle_wait(self) -> float: ...
    def throttle_pace(self) -> tuple[int, float]: ...


# -- one page, every attempt -------------------------------------------------------------------------------


class PageFetch:
    """Fetch one page of one account with its retries (see the module docstring)."""

    def __init__(self, *, client: PageSource, policy: RetryPolicy, state: RunState, account: str,
                 page_limit: int = 100, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, log: EventLog | None = None,
                 on_trouble: Callable[[str, dict[str, Any]], None] | None = None,
                 on_page: Callable[[str, dt.date, Page, float], None] | None = None,
                 unreachable_after: int = UNREACHABLE_AFTER) -> None:
        self.client, self.policy, self.state, self.account = client, policy, state, account
        self.page_limit = page_limit
        self._sleep, self._clock = sleep, clock
        self.log: EventLog = log or NullLog()
        self._on_trouble, self._on_page = on_trouble, on_page
        self._throttle = client if isinstance(client, ThrottleReport) else None
        self.unreachable_after = max(1, unreachable_after)
        self._reach_lock = threading.Lock()
        self._reached = False
        """A page of this account has answered: the API is reachable."""
        self._connect_streak = 0
        """Consecutive connection-level failures of this account."""

    def __call__(self, q: Query, page: int, slot: AbstractContextManager[Any] | None = None) -> PageResult:
        """Every attempt at page `page` of `q`, each request sent holding `slot` (a request slot of the
        window; the wait for it counts as `wait_ms`)."""
        attempt = 0
        partial: Page | None = None  # the fullest answer of a page that stayed short
        while True:
            attempt += 1
            queued = self._clock()
            booked = self._throttle.throttle_pace()[0] if self._throttle is not None else 0
            error: FetchError | None = None
            result: Page | None = None
            with slot or nullcontext():
                if self.state.stopped:
                    return InterruptedPage(page)  # never requested: the unit is simply unfinished
                sent = self._clock()
                paced = self._paced(sent - queued, booked)
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
                      "pacing_ms": round((paced + throttle) * 1000),
                      "wait_ms": round((sent - queued - paced) * 1000)}
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
                self.log.debug("page_interrupted", account=self.account, date=q.label, page=page,
                               attempt=attempt, error_class="interrupted")
                return InterruptedPage(page)
            self.state.count_error(error.error_class)
            self._reach(error)
            if isinstance(error, EmptyPage) and error.answer is not None and (
                    partial is None or len(error.answer.records) > len(partial.records)):
                partial = error.answer
            fields = {"account": self.account, "date": q.label, "page": page, "attempt": attempt,
                      "error_class": error.error_class, "error": str(error), **timing}
            if self.policy.should_retry(attempt, error):
                wait = self.policy.wait_before_retry(attempt, error)
                self.log.warning("page_retry", **fields, wait=round(wait, 3))
                self._trouble("retry", fields)
                self._sleep(wait)
                continue  # a stop during the wait: the next attempt is not sent
            self.log.error("page_skipped", **fields, attempts=attempt)
            self._trouble("skip", fields)
            skip = SkippedPage(self.account, q.label, page, attempt, error.error_class, str(error),
                               partial=partial)
            self.state.add_skip(skip)
            return skip

    def _paced(self, waited: float, booked: int) -> float:
        """How much of a wait for a request slot was pacing: while this page waited, the throttle
        reserved a send per interval for the pages ahead (one interval of slack for the send in
        progress when it came). The rest of the wait was for requests slower than the pace."""
        if self._throttle is None:
            return 0.0
        reserved, interval = self._throttle.throttle_pace()
        return min(waited, (reserved - booked + 1) * interval)

    def _reach(self, error: FetchError | None) -> None:
        """Track whether the account reaches the API; raise ApiUnreachable when it never has and its last
        `unreachable_after` requests failed at the connection level."""
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
            raise ApiUnreachable(f"account {self.account}: {streak} connection attempts failed and none "
                                 f"has ever reached the API ({error})") from error

    def _trouble(self, kind: str, fields: dict[str, Any]) -> None:
        if self._on_trouble is not None:
            self._on_trouble(kind, fields)


# -- plans through the window ------------------------------------------------------------------------------


class UnitHooks(Protocol):
    """What the loop says of each query: started, a page's records (a page that stayed short
    included), ended (after the second pass if it had one; also when cut short), or never started
    (the run stopped first). `end` returns True to have the query read once more from the start
    (a refresh that would lose records of the stored day: the job's `settle` decides)."""

    def start(self, query: Query) -> None: ...
    def page(self, query: Query, page: Page) -> None: ...
    def end(self, query: Query, outcome: UnitOutcome) -> bool: ...
    def missing(self, query: Query) -> None: ...


class FetchLoop:
    """An account's queries through its window: `run` (both passes) or `pages` (one plan)."""

    def __init__(self, *, window: Window, state: RunState, account: str, concurrency: int = 1,
                 log: EventLog | None = None) -> None:
        self.window, self.state, self.account = window, state, account
        self.concurrency = max(1, concurrency)
        self.log: EventLog = log or NullLog()

    def run(self, queries: Sequence[Query], hooks: UnitHooks) -> Iterator[Arrival]:
        """The main pass over every query, then the second pass over the pages still skipped, then
        the queries whose end asked to be read again (each read anew, with its own second pass);
        each result is yielded after `hooks.page` had its records. A fatal error (bad credentials,
        an unreachable API, storage failing) starts no new query and is raised once the open ones
        have ended."""
        held: list[tuple[Query, UnitOutcome]] = []
        again: list[Query] = []
        yield from self._main_pass(queries, hooks, held, again)
        held.sort(key=lambda entry: entry[0].start)
        if held and not self.state.stopped:
            self.log.info("second_pass_started", pages=sum(len(o.skipped) for _q, o in held))
        for query, first in held:
            outcome = yield from self._second_pass(query, first, hooks)
            if hooks.end(query, outcome):
                again.append(query)
        for query in again:
            if self.state.stopped:
                hooks.missing(query)
                continue
            hooks.start(query)
            plan = PagePlan()
            yield from self._feed(query, plan, hooks)
            outcome = plan.outcome
            if not (outcome.complete or outcome.interrupted):
                outcome = yield from self._second_pass(query, outcome, hooks)
            hooks.end(query, outcome)  # read once more already: its verdict is final

    def _second_pass(self, query: Query, first: UnitOutcome, hooks: UnitHooks
                     ) -> Generator[Arrival, None, UnitOutcome]:
        """The skipped pages of `query` again (nothing when the run stopped, unless it stopped at
        MAX_RECORDS_LIMIT); how the query ended, both passes together."""
        if self.state.stopped and self.state.stop_reason != StopReason.MAX_RECORDS:
            return replace(first, interrupted=True)
        plan = RetryPlan(first.skipped)
        yield from self._feed(query, plan, hooks)
        outcome = plan.outcome
        outcome.pages += first.pages
        if outcome.count is None:
            outcome.count, outcome.total_pages = first.count, first.total_pages
        return outcome

    def _feed(self, query: Query, plan: Plan, hooks: UnitHooks) -> Iterator[Arrival]:
        """One plan alone, each page's records to `hooks.page`."""
        with closing(self.pages(query, plan)) as arrivals:
            for arrival in arrivals:
                page = answered(arrival.result)
                if page is not None:
                    hooks.page(query, page)
                yield arrival

    def pages(self, query: Query, plan: Plan) -> Generator[Arrival, None, None]:
        """One plan alone, its results as they arrive; `plan.outcome` says how it ended."""
        try:
            while not self._hand_out({query: plan}):
                yield self._land(plan, self.window.next())
        finally:
            self.window.abandon()

    def _main_pass(self, queries: Sequence[Query], hooks: UnitHooks,
                   held: list[tuple[Query, UnitOutcome]], again: list[Query]) -> Iterator[Arrival]:
        waiting = collections.deque(queries)
        plans: dict[Query, PagePlan] = {}
        failure: Exception | None = None
        try:
            while True:
                self._hand_out(plans)
                if self._may_end(plans):
                    failure = self._end_finished(plans, hooks, held, again, failure)
                if failure is None and waiting and self._may_open(plans):
                    self._open_next(waiting, plans, hooks)
                    continue
                if not plans and self.window.pending == 0:
                    break
                arrival = self.window.next()
                if arrival.query not in plans:
                    continue  # a page of a query that failed
                try:
                    self._land(plans[arrival.query], arrival)
                    page = answered(arrival.result)
                    if page is not None:
                        hooks.page(arrival.query, page)
                except Exception as exc:
                    failure = self._failed(failure, exc)
                    del plans[arrival.query]
                    continue
                yield arrival
        finally:
            self.window.abandon()
        if failure is not None:
            raise failure

    def _end_finished(self, plans: dict[Query, PagePlan], hooks: UnitHooks,
                      held: list[tuple[Query, UnitOutcome]], again: list[Query],
                      failure: Exception | None) -> Exception | None:
        """End the queries whose main pass is over: to the job (stored, or dropped when cut short), or held
        for the second pass."""
        for query in [q for q, plan in plans.items() if plan.finished]:
            outcome = plans.pop(query).outcome
            stop = self.state.stop_reason
            verdict = settle(DayFetch(interrupted=outcome.interrupted, skipped=bool(outcome.skipped),
                                      stop_reason=StopReason(stop) if stop else None))
            if verdict.disposition is Disposition.HOLD:
                held.append((query, outcome))
                continue
            try:
                if hooks.end(query, outcome):
                    again.append(query)
            except Exception as exc:
                failure = self._failed(failure, exc)
        return failure

    def _may_end(self, plans: dict[Query, PagePlan]) -> bool:
        """A query ends (is stored) once the pages that came back are taken and the next query is sized:
        its window is then in flight meanwhile."""
        return not self.window.has_landed() and not any(p.sizing and p.pending for p in plans.values())

    def _open_next(self, waiting: collections.deque[Query], plans: dict[Query, PagePlan],
                   hooks: UnitHooks) -> None:
        """Start the next query; once the run stops, the queries left never start."""
        while self.state.stopped and waiting:
            hooks.missing(waiting.popleft())
        if waiting:
            hooks.start(waiting[0])
            plans[waiting.popleft()] = PagePlan()

    def _may_open(self, plans: dict[Query, PagePlan]) -> bool:
        """The newest open query is down to its last round of requests, and a lane is free."""
        newest = list(plans.values())[-1] if plans else None
        if newest is not None and not newest.in_last_round(self.concurrency):
            return False
        return self.state.stopped or len(plans) < UNIT_LANES

    def _failed(self, failure: Exception | None, exc: Exception) -> Exception:
        """A query failed: a JobError stops the run (nothing more is requested anywhere)."""
        if isinstance(exc, JobError):
            self.state.request_stop(StopReason.FATAL)
        return failure or exc

    def _hand_out(self, plans: Mapping[Query, Plan]) -> bool:
        """Give the window the pages it has room for, oldest query first (a page that sizes a query always
        goes). Once the run stops nothing more is asked: a plan with nothing outstanding is cut short. True
        when every plan is finished."""
        for query, plan in plans.items():
            if self.state.stopped:
                if plan.pending == 0:
                    plan.cut_short()
                continue
            while plan.sizing or self.window.has_room():
                sizing, number = plan.sizing, plan.next_page()
                if number is None:
                    break
                self.window.submit(query, number, sizing=sizing)
        return all(plan.finished for plan in plans.values())

    def _land(self, plan: Plan, arrival: Arrival) -> Arrival:
        """Hand a result to its plan (a fatal error of the fetch is raised here)."""
        for note in plan.update_state(arrival.page, arrival.result):
            apply_note(note, state=self.state, log=self.log, account=self.account, q=arrival.query)
        return arrival


# -- the job's units of one account ------------------------------------------------------------------------


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
    read_again: bool = False
    """The unit's second read (its first would have lost records of the stored day)."""

    def discard(self) -> None:
        """Nothing of it is kept: the writer's scratch and the chunks uploaded so far go."""
        self.writer.discard()
        self.output.discard()


@dataclass
class AccountFetch(Generic[U]):
    """One account's units: its HTTP client (in `clients`, for SIGTERM), throttle, API client, retry policy,
    window and loop. Each page goes into its unit's writer (MAX_RECORDS_LIMIT stops the run once reached);
    each unit opened comes back to `on_unit_done`, cut short or not (the job stores or drops it);
    `on_unit_missing` has the units never started."""

    settings: Settings
    account: Account
    state: RunState
    budget: RecordBudget
    sink: Sink
    layout: RunLayout
    run_id: str
    scratch: Path
    clients: list[HttpClient]
    log: Any
    on_unit_done: Callable[[OpenUnit[U], UnitOutcome], bool]
    on_unit_missing: Callable[[U], None]
    on_page: Callable[[str, dt.date, Page, float], None]
    on_trouble: Callable[[str, dict[str, Any]], None]
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    sleep: Callable[[float], object] = time.sleep
    token_ttl: float = TOKEN_TTL
    chunk_bytes: int = CHUNK_BYTES
    _units: dict[Query, U] = field(default_factory=dict, init=False)
    _open: dict[Query, OpenUnit[U]] = field(default_factory=dict, init=False)
    _started: set[Query] = field(default_factory=set, init=False)

    def run(self, units: Sequence[U]) -> None:
        settings, name = self.settings, self.account.name
        register_secret(self.account.secret)
        http = HttpClient(timeout=settings.request_timeout, clock=self.clock,
                          pool_size=settings.fetch_concurrency + 2)
        self.clients.append(http)
        if self.state.stopped:
            http.abort_all()
        limiter = RateLimiter(per_minute=settings.requests_per_minute, min_interval=settings.request_delay,
                              clock=self.clock, sleep=self.sleep)
        client = AccountClient(base_url=settings.base_url, key=self.account.key, secret=self.account.secret,
                               http=http, limiter=limiter, clock=self.clock,
                               currency=settings.preferred_currency, on_token=register_secret,
                               on_request=self.state.count_request, log=self.log,
                               token_ttl=self.token_ttl)
        policy = RetryPolicy(max_retries=settings.max_retry_attempts, backoff=settings.retry_backoff,
                             rate_limit_delay=settings.rate_limit_delay)
        fetch = PageFetch(client=client, policy=policy, state=self.state, account=name,
                          page_limit=settings.page_limit, sleep=self.sleep, clock=self.clock, log=self.log,
                          on_trouble=self.on_trouble, on_page=self.on_page)
        self._units = {Query(unit.day, unit.day): unit for unit in units}
        depth = settings.fetch_concurrency * PAGE_WINDOW_FACTOR
        try:
            # Workers beyond FETCH_CONCURRENCY only wait (back-off or a request slot): they let the pages
            # behind a retrying page go ahead; one more per lane for the pages that size a day.
            with Window(fetch, concurrency=settings.fetch_concurrency, depth=depth,
                        threads=depth + UNIT_LANES, name=f"fetch-{name}") as window:
                loop = FetchLoop(window=window, state=self.state, account=name,
                                 concurrency=settings.fetch_concurrency, log=self.log)
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
        writer = UnitWriter(account=self.account.name, scratch_dir=self.scratch, on_chunk=output.on_chunk,
                            take_record=self.budget.take if self.budget.limit else None,
                            chunk_bytes=self.chunk_bytes)
        self._open[query] = OpenUnit(unit, writer, output, started_at=self.wall_clock(),
                                     read_again=query in self._started)
        self._started.add(query)

    def page(self, query: Query, page: Page) -> None:
        writer = self._open[query].writer
        if page.records:
            writer.write(page.records)
            if writer.capped and self.state.stop_reason is None:
                self.log.warning("max_records_reached", limit=self.budget.limit)
                self.state.request_stop(StopReason.MAX_RECORDS)

    def end(self, query: Query, outcome: UnitOutcome) -> bool:
        return self.on_unit_done(self._open.pop(query), outcome)

    def missing(self, query: Query) -> None:
        self.on_unit_missing(self._units[query])
