"""Pagination of one (account, day) unit: every page, with retries, skips and live-data re-reads.

`Pager.unit(day)` yields each `Page` fetched or each `SkippedPage` given up on; the caller
writes the records. Page 1 comes first (it sizes the unit); the others come as they complete,
not in page order, so a page waiting out a retry back-off holds up neither the pages behind it
nor memory (a page is written as soon as it arrives). Pages are requested up to `concurrency`
at a time (a page in back-off does not count) from a window of pages on the account's worker
pool (the account's rate limiter sits underneath, in the client). Records within a part are
therefore in arrival order; which records a part holds does not depend on it.

A page that fails all its attempts is recorded in the shared `RunState` and skipped; the run
goes on. When more pages than `max_skipped_pages` are skipped, `RunState` raises its stop flag:
no new page is requested anywhere, what is in flight finishes. `Pager.retry(day, pages)` is the
second pass over a unit's skipped pages, with a fresh attempt budget.

Live data: when the `count` of a unit changes while it is paged, records may have shifted across
page boundaries. The unit is then read again from page 1 (the writer drops what it has already
written) until a full read sees one stable count, at most `MAX_REREADS` times.
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
from typing import Any, Protocol

from app.errors import FatalFetchError, FetchError
from app.involve_asia import Page
from app.retry import RetryPolicy

MAX_REREADS = 3


class PageSource(Protocol):
    def fetch_page(self, start: dt.date, end: dt.date, page: int, limit: int) -> Page: ...


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
class SkippedPage:
    account: str
    date: str
    page: int
    attempts: int
    error_class: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "date": self.date, "page": self.page,
                "attempts": self.attempts, "error_class": self.error_class, "error": self.error}


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
    """How a unit's pagination ended."""

    pages: int = 0
    skipped: list[int] = field(default_factory=list)
    interrupted: bool = False
    rereads: int = 0

    @property
    def complete(self) -> bool:
        return not self.skipped and not self.interrupted


class UnitRun:
    """Iterate it for the unit's pages in order; read `outcome` afterwards."""

    def __init__(self, gen: Generator[Page | SkippedPage, None, UnitOutcome]) -> None:
        self._gen = gen
        self.outcome: UnitOutcome | None = None

    def __iter__(self) -> Iterator[Page | SkippedPage]:
        self.outcome = yield from self._gen


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

    # -- one page, all its attempts

    def fetch(self, day: dt.date, page: int, *, record_skip: bool = True) -> Page | SkippedPage:
        """Fetch one page with retries; a page that fails every attempt becomes a SkippedPage,
        recorded in the run state unless `record_skip` is false (second pass: already listed).

        Fatal errors (bad credentials, a rejected request) are raised: retrying cannot help.
        A stop request ends the retries early: the page is then given up as skipped.
        """
        attempt = 0
        while True:
            attempt += 1
            started = self._clock()
            try:
                with self._inflight:
                    if self.state.stopped and attempt == 1:
                        # never requested: not a skip, the unit is simply unfinished
                        return self._give_up(day, page, 0, "interrupted",
                                             "not requested: the run is stopping", record_skip=False)
                    result = self.client.fetch_page(day, day, page, self.page_limit)
            except FatalFetchError:
                raise
            except FetchError as exc:
                self.state.count_error(exc.error_class)
                fields = {"account": self.account, "date": day.isoformat(), "page": page,
                          "attempt": attempt, "error_class": exc.error_class, "error": str(exc),
                          "duration_ms": round((self._clock() - started) * 1000)}
                if self.policy.should_retry(attempt, exc) and not self.state.stopped:
                    wait = self.policy.wait_before_retry(attempt, exc)
                    self.log.warning("page_retry", **fields, wait=round(wait, 3))
                    self._trouble("retry", fields)
                    self._sleep(wait)
                    if not self.state.stopped:
                        continue
                self.log.error("page_skipped", **fields, attempts=attempt)
                self._trouble("skip", fields)
                return self._give_up(day, page, attempt, exc.error_class, str(exc),
                                     record_skip=record_skip)
            duration = self._clock() - started
            self.state.count_page()
            self.log.info("page_fetched", account=self.account, date=day.isoformat(), page=page,
                          pages=result.pages, records=len(result.records), attempt=attempt,
                          count=result.count, duration_ms=round(duration * 1000))
            if self._on_page is not None:
                self._on_page(self.account, day, result, duration)
            return result

    def _give_up(self, day: dt.date, page: int, attempts: int, error_class: str, error: str,
                 *, record_skip: bool) -> SkippedPage:
        skip = SkippedPage(self.account, day.isoformat(), page, attempts, error_class, error)
        if record_skip:
            self.state.add_skip(skip)
        return skip

    def _trouble(self, kind: str, fields: dict[str, Any]) -> None:
        if self._on_trouble is not None:
            self._on_trouble(kind, fields)

    # -- many pages, a window of them on the pool, `concurrency` requests in flight

    def _fetch_window(self, day: dt.date, pages: Sequence[int], *, record_skip: bool = True,
                      on_tail: Callable[[], None] | None = None
                      ) -> Iterator[Page | SkippedPage]:
        """Fetch `pages`, yielding each result as it completes.

        `on_tail` is called once at most `concurrency` pages remain to be handed to the pool:
        the unit's last round of requests. The caller may start the next unit beside it, whose
        first page (it sizes the unit) is then answered by the time this unit's last pages are.
        """
        if self._pool is None:
            yield from self._fetch_serial(day, pages, record_skip=record_skip,
                                          on_tail=on_tail)
            return
        pool = self._pool
        todo = iter(pages)
        unsent = len(pages)
        done: queue.SimpleQueue[Future[Page | SkippedPage]] = queue.SimpleQueue()
        outstanding: set[Future[Page | SkippedPage]] = set()
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
                    future = pool.submit(self.fetch, day, number, record_skip=record_skip)
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

    def _fetch_serial(self, day: dt.date, pages: Sequence[int], *, record_skip: bool,
                      on_tail: Callable[[], None] | None) -> Iterator[Page | SkippedPage]:
        """Without a pool (the seed facade): one page after another, in this thread."""
        for page in pages:
            if self.state.stopped:
                return
            yield self.fetch(day, page, record_skip=record_skip)
        if on_tail is not None:
            on_tail()

    # -- a whole unit

    def unit(self, day: dt.date, *, on_tail: Callable[[], None] | None = None) -> UnitRun:
        """The unit's main pass. `on_tail` is called once, when the unit is down to its last
        round of requests (or ended before that); a re-read may still request more pages."""
        return UnitRun(self._unit(day, on_tail=on_tail))

    def _unit(self, day: dt.date, *, on_tail: Callable[[], None] | None = None
              ) -> Generator[Page | SkippedPage, None, UnitOutcome]:
        outcome = UnitOutcome()
        signalled = False

        def tail_once() -> None:
            nonlocal signalled
            if not signalled and on_tail is not None:
                signalled = True
                on_tail()

        try:
            return (yield from self._rounds(day, outcome, tail_once))
        finally:
            tail_once()

    def _rounds(self, day: dt.date, outcome: UnitOutcome,
                on_tail: Callable[[], None] | None
                ) -> Generator[Page | SkippedPage, None, UnitOutcome]:
        for round_no in range(MAX_REREADS + 1):
            if self.state.stopped:
                outcome.interrupted = True
                return outcome
            skipped, pages, stable, interrupted = yield from self._read_once(
                day, on_tail if round_no == 0 else None)
            outcome.pages += pages
            outcome.skipped = skipped
            if interrupted:
                outcome.interrupted = True
                return outcome
            if stable or skipped:
                return outcome
            if round_no == MAX_REREADS:
                self.log.warning("count_unstable", account=self.account, date=day.isoformat(),
                                 rereads=round_no)
                return outcome
            outcome.rereads += 1
            with self.state._lock:
                self.state.rereads += 1
        return outcome

    def _read_once(self, day: dt.date, on_tail: Callable[[], None] | None = None
                   ) -> Generator[Page | SkippedPage, None, tuple[list[int], int, bool, bool]]:
        """Read every page once. Returns (skipped page numbers, pages read, count stable, stopped)."""
        first = self.fetch(day, 1)
        yield first
        if isinstance(first, SkippedPage):
            # Without page 1 the unit's size is unknown: the whole unit waits for the second pass.
            return [1], 0, True, False
        count = first.count
        stable = True
        last = first.pages if first.next_page is not None else 1
        skipped: list[int] = []
        read = 1
        for result in self._fetch_window(day, range(2, last + 1), on_tail=on_tail):
            yield result
            if isinstance(result, SkippedPage):
                skipped.append(result.page)
                continue
            read += 1
            if result.count != count:
                if stable:
                    self.log.warning("count_changed", account=self.account, date=day.isoformat(),
                                     old_count=count, new_count=result.count, page=result.page)
                stable = False
        interrupted = self.state.stopped and read + len(skipped) < last
        if not interrupted and stable and last < first.pages:
            stable = False
        return skipped, read, stable, interrupted

    def retry(self, day: dt.date, pages: list[int]) -> UnitRun:
        """Second pass: the unit's skipped pages again, each with a fresh attempt budget.

        If page 1 was among them the unit was never sized, so it is read whole.
        """
        return UnitRun(self._retry(day, sorted(pages)))

    def _retry(self, day: dt.date, pages: list[int]
               ) -> Generator[Page | SkippedPage, None, UnitOutcome]:
        date = day.isoformat()
        if 1 in pages:
            self.state.remove_skip(self.account, date, 1)
            outcome: UnitOutcome = yield from self._rounds(day, UnitOutcome(), None)
            return outcome
        outcome = UnitOutcome()
        for result in self._fetch_window(day, pages, record_skip=False):
            yield result
            if isinstance(result, SkippedPage):
                outcome.skipped.append(result.page)
            else:
                outcome.pages += 1
                self.state.remove_skip(self.account, date, result.page)
                self.log.info("page_recovered", account=self.account, date=date,
                              page=result.page)
        if self.state.stopped and outcome.pages + len(outcome.skipped) < len(pages):
            outcome.interrupted = True
        return outcome
