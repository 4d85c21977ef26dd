"""The fetch layer's top: one page with its retries (`PageFetch`), the loop that runs an account's page
plans through its window and yields what happened as events (`FetchLoop`), and the one place an account's
client stack is opened (`open_account`), for the job and the original interface alike. It knows nothing
of where records go: the consumer of the events does (the job's `app.account_run`, or
`app.involve_asia`). It alone writes the run's `runstate.FetchTally` (counters, skip list), and reads and
requests the run's `runstate.RunStop` (a fatal error, the skip cap, and the consumer's `FetchLoop.stop`).

- `PageFetch`: one page, every attempt. As tenacity splits it: whether to try again is the policy's
  `should_retry` (the stop), how long to wait first its `wait_before_retry` (the wait), the wait itself the
  injected `sleep`. A page ends a `Page`, a `SkippedPage` (every attempt failed: listed in the run's
  `FetchTally`, the run goes on) or an `InterruptedPage` (SIGTERM cut it short, or it failed while the run
  stops: not a skip, not a retry, not counted). Bad credentials and a rejected request are raised; so is
  `ApiUnreachable` when an account never answered and its last `UNREACHABLE_AFTER` requests could not
  connect. Log lines give three times apart: the request (`duration_ms`), the pacing by design
  (`pacing_ms`: the wait for the account's throttle, and for a request slot while the throttle kept its
  full pace), and waiting beyond that pace (`wait_ms`: for a slot held by requests slower to answer than
  the throttle allows). A `FetchListener` (telemetry) hears of each page and each retry or skip.
- `FetchLoop`: the main pass over an account's queries, then the second pass; events `DayStarted`,
  `PageArrived`, `DayEnded`, `DayNotStarted`. The next query starts while the current one is down to its
  last round of requests, so its first page (it sizes it) is answered by the time the current one's last
  pages are; at most `UNIT_LANES` are open. A query ends (the consumer stores it) once the pages that came
  back are taken and the next one is sized, its window in flight meanwhile. A query with skipped pages
  waits for the second pass, after every main pass (`outcome.settle` decides).
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from app.api import TOKEN_TTL, AccountClient
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
from app.models import Page, SkippedPage
from app.outcome import DayFetch, Disposition, StopReason, settle
from app.plans import (
    ConfirmEmpty,
    CountChanged,
    CountUnstable,
    InterruptedPage,
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
    UnitOutcome,
    answered,
)
from app.ratelimit import RateLimiter
from app.redaction import register_secret
from app.retry import RetryPolicy
from app.runstate import EventLog, FetchTally, NullLog, RunStop
from app.window import Arrival, Window

__all__ = ["TOKEN_TTL", "AccountStack", "DayEnded", "DayNotStarted", "DayStarted", "FetchEvent",
           "FetchListener", "FetchLoop", "PageArrived", "PageFetch", "RequestCounter", "open_account"]

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


class FetchListener(Protocol):
    """Telemetry's one ear in the fetch layer, called on fetch workers: a page fetched, a retry or a
    skip (`kind`, the log line's fields). It must only count and hand over, never block or measure
    (resource snapshots and probes run on the watchdog's thread)."""

    def page_fetched(self, account: str, day: dt.date, page: Page) -> None: ...
    def trouble(self, kind: str, fields: dict[str, Any]) -> None: ...



# -- one page, every attempt -------------------------------------------------------------------------------


class PageFetch:
    """Fetch one page of one account with its retries (see the module docstring)."""

    def __init__(self, *, client: PageSource, policy: RetryPolicy, stop: RunStop, tally: FetchTally,
                 account: str, page_limit: int = 100, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, log: EventLog | None = None,
                 listener: FetchListener | None = None,
                 unreachable_after: int = UNREACHABLE_AFTER) -> None:
        self.client, self.policy, self.account = client, policy, account
        self._stop, self._tally = stop, tally
        self.page_limit = page_limit
        self._sleep, self._clock = sleep, clock
        self.log: EventLog = log or NullLog()
        self._listener = listener
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
                if self._stop.stopped:
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
                self._tally.count_page()
                self.log.info("page_fetched", account=self.account, date=q.label, page=page,
                              pages=result.pages, records=len(result.records), attempt=attempt,
                              count=result.count, **timing)
                if self._listener is not None:
                    self._listener.page_fetched(self.account, q.start, result)
                return result
            if isinstance(error, RequestInterrupted) or self._stop.stopped:
                self.log.debug("page_interrupted", account=self.account, date=q.label, page=page,
                               attempt=attempt, error_class="interrupted")
                return InterruptedPage(page)
            self._tally.count_error(error.error_class)
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
            self._tally.add_skip(skip)
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
            self._stop.request(StopReason.FATAL)
            raise ApiUnreachable(f"account {self.account}: {streak} connection attempts failed and none "
                                 f"has ever reached the API ({error})") from error

    def _trouble(self, kind: str, fields: dict[str, Any]) -> None:
        if self._listener is not None:
            self._listener.trouble(kind, fields)


# -- plans through the window: the events of an account's fetch ---------------------------------------------


@dataclass(frozen=True)
class DayStarted:
    """The fetch of `query` begins (again, when it is read once more)."""

    query: Query


@dataclass(frozen=True)
class PageArrived:
    """A page of `query` answered: its records (a page that stayed short included)."""

    query: Query
    page: Page


@dataclass(frozen=True)
class DayEnded:
    """The fetch of `query` is over (after its second pass if it had one; also when cut short). The
    consumer may answer `FetchLoop.read_again(query)` before asking for the next event."""

    query: Query
    outcome: UnitOutcome


@dataclass(frozen=True)
class DayNotStarted:
    """The run stopped before `query` was started."""

    query: Query


FetchEvent = DayStarted | PageArrived | DayEnded | DayNotStarted


class FetchLoop:
    """An account's queries through its window: `run` yields the events of both passes; `pages` runs one
    plan alone.

    The consumer (the job's account run, or the original interface) turns events into records, writers and
    snapshots; the loop knows nothing of them. It talks back twice: `read_again(query)` after a `DayEnded`
    (a refresh that would lose stored records is read once more), and `fail(query, error)` when handling
    an event of `query` failed (nothing more of it is yielded; a JobError stops the run; the first failure
    is raised once the open queries have ended). The consumer asks for the run to stop through it too
    (`stop(reason)`: MAX_RECORDS_LIMIT reached)."""

    def __init__(self, *, window: Window, stop: RunStop, tally: FetchTally, account: str,
                 concurrency: int = 1, log: EventLog | None = None) -> None:
        self.window, self.account = window, account
        self._stop, self._tally = stop, tally
        self.concurrency = max(1, concurrency)
        self.log: EventLog = log or NullLog()
        self._again: list[Query] = []
        self._dropped: set[Query] = set()
        self._failure: Exception | None = None

    def read_again(self, query: Query) -> None:
        """Read `query` once more from page 1, after the other queries' passes."""
        self._again.append(query)

    def stop(self, reason: StopReason) -> None:
        """The consumer asks the run to stop (MAX_RECORDS_LIMIT reached): no new page or query starts."""
        self._stop.request(reason)

    def fail(self, query: Query, error: Exception) -> None:
        """Handling an event of `query` raised `error`: drop the query, stop the run on a JobError."""
        self._dropped.add(query)
        if isinstance(error, JobError):
            self._stop.request(StopReason.FATAL)
        self._failure = self._failure or error

    def run(self, queries: Sequence[Query]) -> Generator[FetchEvent, None, None]:
        """The main pass over every query, then the second pass over the pages still skipped, then the
        queries asked to be read again (each read anew, with its own second pass). A fatal error (bad
        credentials, an unreachable API, a failed event) starts no new query and is raised once the open
        ones have ended."""
        held: list[tuple[Query, UnitOutcome]] = []
        yield from self._main_pass(queries, held)
        if self._failure is not None:
            raise self._failure
        held.sort(key=lambda entry: entry[0].start)
        if held and not self._stop.stopped:
            self.log.info("second_pass_started", pages=sum(len(o.skipped) for _q, o in held))
        for query, first in held:
            if query in self._dropped:
                continue
            outcome = yield from self._second_pass(query, first)
            yield from self._end(query, outcome)
        again, self._again = self._again, []
        for query in again:
            if self._stop.stopped:
                yield DayNotStarted(query)
                continue
            yield DayStarted(query)
            plan = PagePlan()
            yield from self._feed(query, plan)
            outcome = plan.outcome
            if not (outcome.complete or outcome.interrupted):
                outcome = yield from self._second_pass(query, outcome)
            yield from self._end(query, outcome)
        self._again = []  # read once more already: its verdict is final
        if self._failure is not None:
            raise self._failure

    def _end(self, query: Query, outcome: UnitOutcome) -> Iterator[FetchEvent]:
        if query not in self._dropped:
            yield DayEnded(query, outcome)

    def _second_pass(self, query: Query, first: UnitOutcome) -> Generator[FetchEvent, None, UnitOutcome]:
        """The skipped pages of `query` again (nothing when the run stopped, unless it stopped at
        MAX_RECORDS_LIMIT); how the query ended, both passes together."""
        if self._stop.stopped and self._stop.reason != StopReason.MAX_RECORDS:
            return replace(first, interrupted=True)
        plan = RetryPlan(first.skipped)
        yield from self._feed(query, plan)
        outcome = plan.outcome
        outcome.pages += first.pages
        if outcome.count is None:
            outcome.count, outcome.total_pages = first.count, first.total_pages
        return outcome

    def _feed(self, query: Query, plan: Plan) -> Iterator[FetchEvent]:
        """One plan alone, each page's records as an event."""
        with closing(self.pages(query, plan)) as arrivals:
            for arrival in arrivals:
                page = answered(arrival.result)
                if page is not None and query not in self._dropped:
                    yield PageArrived(query, page)

    def pages(self, query: Query, plan: Plan) -> Generator[Arrival, None, None]:
        """One plan alone, its results as they arrive; `plan.outcome` says how it ended."""
        try:
            while not self._hand_out({query: plan}):
                yield self._land(plan, self.window.next())
        finally:
            self.window.abandon()

    def _main_pass(self, queries: Sequence[Query], held: list[tuple[Query, UnitOutcome]]
                   ) -> Iterator[FetchEvent]:
        waiting = collections.deque(queries)
        plans: dict[Query, PagePlan] = {}
        try:
            while True:
                for query in [q for q in plans if q in self._dropped]:
                    del plans[query]
                self._hand_out(plans)
                if self._may_end(plans):
                    yield from self._end_finished(plans, held)
                if self._failure is None and waiting and self._may_open(plans):
                    yield from self._open_next(waiting, plans)
                    continue
                if not plans and self.window.pending == 0:
                    break
                arrival = self.window.next()
                if arrival.query not in plans:
                    continue  # a page of a query that failed
                try:
                    self._land(plans[arrival.query], arrival)
                except Exception as exc:
                    self.fail(arrival.query, exc)
                    continue
                page = answered(arrival.result)
                if page is not None:
                    yield PageArrived(arrival.query, page)
        finally:
            self.window.abandon()

    def _end_finished(self, plans: dict[Query, PagePlan], held: list[tuple[Query, UnitOutcome]]
                      ) -> Iterator[FetchEvent]:
        """End the queries whose main pass is over: to the consumer (stored, or dropped when cut short), or
        held for the second pass (`settle` decides)."""
        for query in [q for q, plan in plans.items() if plan.finished]:
            outcome = plans.pop(query).outcome
            verdict = settle(DayFetch(interrupted=outcome.interrupted, skipped=bool(outcome.skipped),
                                      stop_reason=self._stop.reason))
            if verdict.disposition is Disposition.HOLD:
                held.append((query, outcome))
                continue
            yield from self._end(query, outcome)

    def _may_end(self, plans: dict[Query, PagePlan]) -> bool:
        """A query ends (is stored) once the pages that came back are taken and the next query is sized:
        its window is then in flight meanwhile."""
        return not self.window.has_landed() and not any(p.sizing and p.pending for p in plans.values())

    def _open_next(self, waiting: collections.deque[Query], plans: dict[Query, PagePlan]
                   ) -> Iterator[FetchEvent]:
        """Start the next query; once the run stops, the queries left never start."""
        while self._stop.stopped and waiting:
            yield DayNotStarted(waiting.popleft())
        if waiting:
            query = waiting.popleft()
            plans[query] = PagePlan()
            yield DayStarted(query)

    def _may_open(self, plans: dict[Query, PagePlan]) -> bool:
        """The newest open query is down to its last round of requests, and a lane is free."""
        newest = list(plans.values())[-1] if plans else None
        if newest is not None and not newest.in_last_round(self.concurrency):
            return False
        return self._stop.stopped or len(plans) < UNIT_LANES

    def _hand_out(self, plans: Mapping[Query, Plan]) -> bool:
        """Give the window the pages it has room for, oldest query first (a page that sizes a query always
        goes). Once the run stops nothing more is asked: a plan with nothing outstanding is cut short. True
        when every plan is finished."""
        for query, plan in plans.items():
            if self._stop.stopped:
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
            apply_note(note, stop=self._stop, tally=self._tally, log=self.log, account=self.account,
                       q=arrival.query)
        return arrival



def apply_note(note: Note, *, stop: RunStop, tally: FetchTally, log: EventLog, account: str,
               q: Query) -> None:
    """What a note means for the run: a log line, a count, a skip taken back."""
    where = {"account": account, "date": q.label}
    match note:
        case Probe(page=page, dead=dead):
            if not stop.stopped:  # stopping: the probe will not be sent
                log.warning("page_probe", **where, page=page, dead=dead)
        case PastTheEnd(page=page):
            tally.remove_skip(account, q.label, page)
        case CountChanged(old=old, new=new, page=page):
            log.warning("count_changed", **where, old_count=old, new_count=new, page=page)
        case Reread():
            tally.count_reread()
        case CountUnstable(rereads=rereads):
            log.warning("count_unstable", **where, rereads=rereads)
        case Recovered(page=page):
            tally.remove_skip(account, q.label, page)
            log.info("page_recovered", **where, page=page)
        case ConfirmEmpty():
            log.info("day_empty_confirm", **where)


# -- an account's client stack -------------------------------------------------------------------------------


class RequestCounter(Protocol):
    """Counts the API requests an account's client stack sends (True: an authentication), from any
    thread: the run's `FetchTally`, or the original interface's stats."""

    def count_request(self, authentication: bool) -> None: ...


@dataclass
class AccountStack:
    """What talks to the API for one account: the HTTP client (abort it to stop at once; close it at the
    end), the API client with its throttle, and the retry policy."""

    http: HttpClient
    client: AccountClient
    policy: RetryPolicy

    def close(self) -> None:
        self.http.close()


def open_account(*, base_url: str, key: str, secret: str, request_timeout: float,
                 requests_per_minute: float, request_delay: float, currency: str | None,
                 max_retries: int, backoff: tuple[float, ...], rate_limit_delay: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep, log: Any = None,
                 on_token: Callable[[str], None] = register_secret,
                 requests: RequestCounter | None = None, token_ttl: float = TOKEN_TTL,
                 pool_size: int = 8) -> AccountStack:
    """Open one account's client stack, the same way for the job and the original interface: an HTTP
    client with the hard deadline, the account's throttle, the API client, the retry policy. Every request
    the API client sends is counted in `requests` (the run's `FetchTally`, or the original interface's
    stats). The secret, and each token it gets, are registered for redaction."""
    register_secret(secret)
    http = HttpClient(timeout=request_timeout, clock=clock, pool_size=pool_size)
    limiter = RateLimiter(per_minute=requests_per_minute, min_interval=request_delay, clock=clock,
                          sleep=sleep)
    client = AccountClient(base_url=base_url, key=key, secret=secret, http=http, limiter=limiter,
                           clock=clock, currency=currency, on_token=on_token,
                           on_request=requests.count_request if requests is not None else None,
                           log=log, token_ttl=token_ttl)
    policy = RetryPolicy(max_retries=max_retries, backoff=backoff, rate_limit_delay=rate_limit_delay)
    return AccountStack(http, client, policy)
