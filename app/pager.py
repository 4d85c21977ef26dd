"""Pagination of one query (an account's day, or a date range): every page, with retries, skips
and live-data re-reads.

`Pager.unit(day)` (the job's unit: one account, one day) and `Pager.query(start, end)` (a range
as one query: the original interface) yield each `Page` fetched or each `SkippedPage` given up
on; the caller writes the records. The first page that answers sizes the query (every page
carries `count`); the others come as they complete, not in page order, so a page waiting out a
retry back-off holds up neither the pages behind it nor memory (a page is written as soon as it
arrives). Pages are requested up to `concurrency` at a time (a page in back-off does not count)
from a window of pages on the account's worker pool (the account's rate limiter sits underneath,
in the client). Records within a part are therefore in arrival order; which records a part holds
does not depend on it.

A page that fails all its attempts is recorded in the shared `RunState` and skipped; the run
goes on. When page 1 is dead, pages 2, 3, ... are tried in turn (each with its full attempt
budget, each dead one a skip) until one answers and sizes the query. When more pages than
`max_skipped_pages` are skipped, `RunState` raises its stop flag: no new page is requested
anywhere, what is in flight finishes. `Pager.retry(day, pages)` is the second pass over a unit's
skipped pages, each page alone with a fresh attempt budget.

Stopping: a request the HTTP client cut short (`RequestInterrupted`, on SIGTERM), and any failure
while the run is stopping, is *interrupted*: not a skip, not a retry, not counted as an error.
The query's outcome then says `interrupted`.

An unreachable API: while an account has had no page answered, `UNREACHABLE_AFTER` consecutive
connection-level failures (`ConnectFailed`: refused, DNS, unreachable) raise `ApiUnreachable`
out of the pager (and stop the run, reason "fatal") instead of skipping page after page. Once a
page of the account has answered, `ConnectFailed` is an ordinary retryable network error.

Durations: `page_fetched`, `page_retry` and `page_skipped` report `duration_ms`, the request
itself, and `wait_ms`, the time the attempt waited before it was sent (for a request slot and for
the account's own throttle, which the client reports through `throttle_wait()`).

Live data: when the `count` of a query changes while it is paged, records may have shifted
across page boundaries. The query is then read again from page 1 (the writer drops what it has
already written) until a full read sees one stable count, at most `MAX_REREADS` times.
"""

from __future__ import annotations

import collections
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from app.errors import (
    ApiUnreachable,
    ConnectFailed,
    FatalFetchError,
    FetchError,
    RequestInterrupted,
)
from app.models import Page, SkippedPage
from app.retry import RetryPolicy

MAX_REREADS = 3

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


@dataclass(frozen=True)
class Query:
    """What is paged: `start`..`end`, both inclusive, as one `/conversions/range` query."""

    start: dt.date
    end: dt.date

    @property
    def label(self) -> str:
        """The `date` of log lines and skip records: the day, or `start..end` for a range."""
        if self.start == self.end:
            return self.start.isoformat()
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclass(frozen=True)
class _Interrupted:
    """A page the stopping run did not finish: never sent, cut short, or failed while stopping.
    Internal: it is neither yielded nor recorded anywhere; the outcome says `interrupted`."""

    page: int


class RunState:
    """What every pager of a run shares: the skip list and cap, counters, and the stop flag."""

    def __init__(self, *, max_skipped_pages: int, stop: threading.Event | None = None) -> None:
        self.max_skipped_pages = max_skipped_pages
        self.stop = stop or threading.Event()
        self.stop_reason: str | None = None
        self.skipped: list[SkippedPage] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.pages = 0
        self.requests = 0
        self.rereads = 0
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def request_stop(self, reason: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        self.stop.set()

    def count_error(self, error_class: str) -> None:
        with self._lock:
            self.errors[error_class] += 1
            self.requests += 1

    def count_page(self) -> None:
        with self._lock:
            self.pages += 1
            self.requests += 1

    def count_reread(self) -> None:
        with self._lock:
            self.rereads += 1

    def add_skip(self, skip: SkippedPage) -> None:
        with self._lock:
            self.skipped.append(skip)
            over = len(self.skipped) > self.max_skipped_pages
        if over:
            self.request_stop("skip_cap")

    def remove_skip(self, account: str, date: str, page: int) -> None:
        with self._lock:
            self.skipped = [s for s in self.skipped
                            if (s.account, s.date, s.page) != (account, date, page)]

    def skipped_for(self, account: str, date: str) -> list[SkippedPage]:
        with self._lock:
            return [s for s in self.skipped if (s.account, s.date) == (account, date)]

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pages": self.pages,
                "requests": self.requests,
                "retries": dict(sorted(self.errors.items())),
                "rereads": self.rereads,
                "skipped_pages": [s.as_dict() for s in self.skipped],
            }


@dataclass
class UnitOutcome:
    """How a query's pagination ended.

    `count` and `total_pages` are the query's size as the last page that answered saw it
    (None / 0 when no page answered).
    """

    pages: int = 0
    skipped: list[int] = field(default_factory=list)
    interrupted: bool = False
    rereads: int = 0
    count: int | None = None
    total_pages: int = 0

    @property
    def complete(self) -> bool:
        return not self.skipped and not self.interrupted


class UnitRun:
    """Iterate it for the query's pages; read `outcome` afterwards."""

    def __init__(self, gen: Generator[Page | SkippedPage, None, UnitOutcome]) -> None:
        self._gen = gen
        self.outcome: UnitOutcome | None = None

    def __iter__(self) -> Iterator[Page | SkippedPage]:
        self.outcome = yield from self._gen


_Result = Page | SkippedPage | _Interrupted


@dataclass
class _Read:
    """One read of every page of a query."""

    skipped: list[int] = field(default_factory=list)
    pages: int = 0
    stable: bool = True
    interrupted: bool = False
    count: int | None = None
    total_pages: int = 0


class Pager:
    def __init__(
        self,
        *,
        client: PageSource,
        policy: RetryPolicy,
        state: RunState,
        account: str,
        page_limit: int = 100,
        concurrency: int = 1,
        pool: ThreadPoolExecutor | None = None,
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
        self.concurrency = max(1, concurrency)
        self._pool = pool
        # Requests in flight are capped by the semaphore; the window of pages handed to the pool
        # is wider, so a page waiting out its back-off does not hold a request slot.
        self._inflight = threading.BoundedSemaphore(self.concurrency)
        self.window = max(self.concurrency, getattr(pool, "_max_workers", self.concurrency))
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

    # -- one page, all its attempts

    def _fetch(self, q: Query, page: int, *, record_skip: bool = True) -> _Result:
        """Fetch one page with retries; a page that fails every attempt becomes a SkippedPage,
        recorded in the run state unless `record_skip` is false (second pass: already listed).

        Fatal errors (bad credentials, a rejected request) are raised: retrying cannot help;
        so is ApiUnreachable. A page the stopping run cuts short is `_Interrupted`.
        """
        attempt = 0
        while True:
            attempt += 1
            queued = self._clock()
            error: FetchError | None = None
            result: Page | None = None
            with self._inflight:
                if self.state.stopped:
                    return _Interrupted(page)  # never requested: the unit is simply unfinished
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
                return _Interrupted(page)
            self.state.count_error(error.error_class)
            self._reach(error)
            fields = {"account": self.account, "date": q.label, "page": page,
                      "attempt": attempt, "error_class": error.error_class, "error": str(error),
                      **timing}
            if self.policy.should_retry(attempt, error):
                wait = self.policy.wait_before_retry(attempt, error)
                self.log.warning("page_retry", **fields, wait=round(wait, 3))
                self._trouble("retry", fields)
                self._sleep(wait)
                continue  # a stop during the wait: the next attempt is not sent
            self.log.error("page_skipped", **fields, attempts=attempt)
            self._trouble("skip", fields)
            skip = SkippedPage(self.account, q.label, page, attempt, error.error_class,
                               str(error))
            if record_skip:
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
            self.state.request_stop("fatal")
            raise ApiUnreachable(
                f"account {self.account}: {streak} connection attempts failed and none has "
                f"ever reached the API ({error})") from error

    def _trouble(self, kind: str, fields: dict[str, Any]) -> None:
        if self._on_trouble is not None:
            self._on_trouble(kind, fields)

    # -- many pages, a window of them on the pool, `concurrency` requests in flight

    def _fetch_window(self, q: Query, pages: Sequence[int], *, record_skip: bool = True,
                      on_tail: Callable[[], None] | None = None) -> Iterator[_Result]:
        """Fetch `pages`, yielding each result as it completes.

        `on_tail` is called once at most `concurrency` pages remain to be handed to the pool:
        the unit's last round of requests. The caller may start the next unit beside it, whose
        first page (it sizes the unit) is then answered by the time this unit's last pages are.
        """
        if self._pool is None:
            yield from self._fetch_serial(q, pages, record_skip=record_skip, on_tail=on_tail)
            return
        pool = self._pool
        todo = iter(pages)
        unsent = len(pages)
        done: queue.SimpleQueue[Future[_Result]] = queue.SimpleQueue()
        outstanding: set[Future[_Result]] = set()
        exhausted = False
        try:
            while True:
                while not exhausted and len(outstanding) < self.window \
                        and not self.state.stopped:
                    number = next(todo, None)
                    if number is None:
                        exhausted = True
                        if on_tail is not None:
                            on_tail()
                        break
                    future = pool.submit(self._fetch, q, number, record_skip=record_skip)
                    outstanding.add(future)
                    future.add_done_callback(done.put)
                    unsent -= 1
                    if unsent <= self.concurrency and on_tail is not None:
                        on_tail()
                if not outstanding:
                    return
                future = done.get()
                outstanding.discard(future)
                yield future.result()
        finally:
            for future in outstanding:
                future.cancel()
            for future in outstanding:
                if not future.cancelled():
                    future.exception()  # wait: no request of this unit outlives it

    def _fetch_serial(self, q: Query, pages: Sequence[int], *, record_skip: bool,
                      on_tail: Callable[[], None] | None) -> Iterator[_Result]:
        """Without a pool (the original interface): one page after another, in this thread."""
        for page in pages:
            if self.state.stopped:
                return
            yield self._fetch(q, page, record_skip=record_skip)
        if on_tail is not None:
            on_tail()

    # -- a whole query

    def unit(self, day: dt.date, *, on_tail: Callable[[], None] | None = None) -> UnitRun:
        """The unit's main pass (one account, one day). `on_tail` is called once, when the
        unit is down to its last round of requests (or ended before that); a re-read may still
        request more pages."""
        return self.query(day, day, on_tail=on_tail)

    def query(self, start: dt.date, end: dt.date, *,
              on_tail: Callable[[], None] | None = None) -> UnitRun:
        """The main pass over `start`..`end` as one query (see `unit`)."""
        return UnitRun(self._main(Query(start, end), on_tail=on_tail))

    def _main(self, q: Query, *, on_tail: Callable[[], None] | None = None
              ) -> Generator[Page | SkippedPage, None, UnitOutcome]:
        outcome = UnitOutcome()
        signalled = False

        def tail_once() -> None:
            nonlocal signalled
            if not signalled and on_tail is not None:
                signalled = True
                on_tail()

        try:
            return (yield from self._rounds(q, outcome, tail_once))
        finally:
            tail_once()

    def _rounds(self, q: Query, outcome: UnitOutcome, on_tail: Callable[[], None] | None
                ) -> Generator[Page | SkippedPage, None, UnitOutcome]:
        for round_no in range(MAX_REREADS + 1):
            if self.state.stopped:
                outcome.interrupted = True
                return outcome
            read = yield from self._read_once(q, on_tail if round_no == 0 else None)
            outcome.pages += read.pages
            outcome.skipped = read.skipped
            if read.count is not None:
                outcome.count, outcome.total_pages = read.count, read.total_pages
            if read.interrupted:
                outcome.interrupted = True
                return outcome
            if read.stable or read.skipped:
                return outcome
            if round_no == MAX_REREADS:
                self.log.warning("count_unstable", account=self.account, date=q.label,
                                 rereads=round_no)
                return outcome
            outcome.rereads += 1
            self.state.count_reread()
        return outcome

    def _size(self, q: Query, read: _Read
              ) -> Generator[Page | SkippedPage, None, tuple[int, Page] | None]:
        """Page 1, or when it is dead the next page that answers: it sizes the query. Every
        dead page is a skip (each counts toward the cap). None when the run stopped first."""
        number = 1
        while True:
            result = self._fetch(q, number)
            if isinstance(result, _Interrupted):
                read.interrupted = True
                return None
            yield result
            if isinstance(result, Page):
                return number, result
            read.skipped.append(number)
            if self.state.stopped:
                read.interrupted = True  # never sized: the unit is unfinished
                return None
            self.log.warning("page_probe", account=self.account, date=q.label,
                             page=number + 1, dead=len(read.skipped))
            number += 1

    def _read_once(self, q: Query, on_tail: Callable[[], None] | None = None
                   ) -> Generator[Page | SkippedPage, None, _Read]:
        """Read every page once."""
        read = _Read()
        sized = yield from self._size(q, read)
        if sized is None:
            return read
        number, first = sized
        read.pages = 1
        read.count = count = first.count
        read.total_pages = first.pages
        if number > first.pages:
            last = first.pages  # past the last page (page 1 and on were dead): trust `count`
        else:
            last = first.pages if first.next_page is not None else number
            if last < first.pages:
                read.stable = False  # nextPage and count disagree: records are moving
        for dead in [n for n in read.skipped if n > last]:
            # dead pages past the end hold nothing: not skips after all
            self.state.remove_skip(self.account, q.label, dead)
        read.skipped = [n for n in read.skipped if n <= last]
        todo = range(number + 1, last + 1)
        answered = skipped = 0
        for result in self._fetch_window(q, todo, on_tail=on_tail):
            if isinstance(result, _Interrupted):
                read.interrupted = True
                continue
            yield result
            if isinstance(result, SkippedPage):
                read.skipped.append(result.page)
                skipped += 1
                continue
            answered += 1
            if result.count != count:
                if read.stable:
                    self.log.warning("count_changed", account=self.account, date=q.label,
                                     old_count=count, new_count=result.count, page=result.page)
                read.stable = False
        read.pages += answered
        if self.state.stopped and answered + skipped < len(todo):
            read.interrupted = True  # pages never requested
        return read

    def retry(self, day: dt.date, pages: list[int]) -> UnitRun:
        """Second pass over a unit's skipped pages (see `query_retry`)."""
        return self.query_retry(day, day, pages)

    def query_retry(self, start: dt.date, end: dt.date, pages: list[int]) -> UnitRun:
        """Second pass: the query's skipped pages again, each alone (page 1 too) with a fresh
        attempt budget."""
        return UnitRun(self._retry(Query(start, end), sorted(pages)))

    def _retry(self, q: Query, pages: list[int]
               ) -> Generator[Page | SkippedPage, None, UnitOutcome]:
        outcome = UnitOutcome()
        for result in self._fetch_window(q, pages, record_skip=False):
            if isinstance(result, _Interrupted):
                outcome.interrupted = True
                continue
            yield result
            if isinstance(result, SkippedPage):
                outcome.skipped.append(result.page)
                continue
            outcome.pages += 1
            outcome.count, outcome.total_pages = result.count, result.pages
            self.state.remove_skip(self.account, q.label, result.page)
            self.log.info("page_recovered", account=self.account, date=q.label,
                          page=result.page)
        if self.state.stopped and outcome.pages + len(outcome.skipped) < len(pages):
            outcome.interrupted = True
        return outcome
