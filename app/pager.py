"""The pages of one query (an account's day, or a date range): which are still to fetch (the page plan),
and which are in flight (the window).

The plans are pure and work as dlt's paginators: `next_page()` is the next page to request (None: none
now), `update_state(number, result)` takes what came back and returns `Note`s (`apply_note` turns one into
its log line or count), `finished` says whether the plan is over, `outcome` how it went.

`PagePlan`, the main pass:

- *Sizing.* Page 1 goes alone; the first page that answers sizes the query (every page carries `count`).
  When page 1 is dead, pages 2, 3, ... are probed one at a time, each dead one a skip, so a dead page 1
  costs one page, not the day. Dead pages past the end the count gives held nothing: not skips after all.
- *The rest* may then be requested at once; they come back in any order.
- *Live data.* When `count` changes within a read (or `nextPage` and `count` disagree), records may have
  shifted across pages: the query is read again from page 1 (the writer drops what it already wrote) until
  a read sees one stable count, at most `MAX_REREADS` times. A read with skips goes to the second pass.
- *An empty query is confirmed.* An answer saying `count` 0 is not believed at once: the query is asked
  once more from page 1 (one request per empty day), and only a second 0 makes it an empty, complete query.
- *Stopping.* A page the stopping run did not finish comes back an `InterruptedPage`; once the run stops
  the caller asks no more and, with nothing outstanding, calls `cut_short()`. Either way a plan that still
  wanted pages ends `interrupted`.

`RetryPlan`, the second pass: the skipped pages again, all at once, each with a fresh attempt budget.

`Window`: at most `concurrency` requests at a time, from up to `depth` pages handed out, results in arrival
order. A page waiting out a back-off keeps its worker, not its request slot, so the pages behind it go
ahead; a page that sizes a query goes out beside a full window. Without threads (the original interface) a
page is fetched when it is handed out. `RunState` is what every fetch of a run shares: the skip list and
its cap, the counters, the stop flag.
"""

from __future__ import annotations

import collections
import datetime as dt
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

from app.models import Page, SkippedPage

MAX_REREADS = 3


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
class InterruptedPage:
    """A page the stopping run did not finish: never sent, cut short (SIGTERM), or failed while stopping.
    Not a skip, not a retry; the plan's outcome says `interrupted`."""

    page: int


PageResult = Page | SkippedPage | InterruptedPage
"""How fetching one page ended: fetched, given up on after every attempt, or interrupted."""


class RunState:
    """What every fetch of a run shares: the skip list and cap, counters, and the stop flag."""

    def __init__(self, *, max_skipped_pages: int, stop: threading.Event | None = None) -> None:
        self.max_skipped_pages = max_skipped_pages
        self.stop = stop or threading.Event()
        self.stop_reason: str | None = None
        self.skipped: list[SkippedPage] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.pages = self.requests = self.auth_requests = self.rereads = 0
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

    def count_page(self) -> None:
        with self._lock:
            self.pages += 1

    def count_request(self, authentication: bool) -> None:
        """An API request sent: `requests` counts every one the API saw (pages, their retries,
        a page repeated after a rejected token, authentication); `auth_requests` those that
        authenticated."""
        with self._lock:
            self.requests += 1
            if authentication:
                self.auth_requests += 1

    def count_reread(self) -> None:
        with self._lock:
            self.rereads += 1

    def add_skip(self, skip: SkippedPage) -> None:
        """List a page given up on; more than `max_skipped_pages` stop the run. A page already listed (the
        second pass failing it again) stays listed once, as first recorded."""
        key = (skip.account, skip.date, skip.page)
        with self._lock:
            if any((s.account, s.date, s.page) == key for s in self.skipped):
                return
            self.skipped.append(skip)
            over = len(self.skipped) > self.max_skipped_pages
        if over:
            self.request_stop("skip_cap")

    def remove_skip(self, account: str, date: str, page: int) -> None:
        with self._lock:
            self.skipped = [s for s in self.skipped if (s.account, s.date, s.page) != (account, date, page)]

    def skipped_for(self, account: str, date: str) -> list[SkippedPage]:
        with self._lock:
            return [s for s in self.skipped if (s.account, s.date) == (account, date)]

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"pages": self.pages, "requests": self.requests,
                    "auth_requests": self.auth_requests,
                    "retries": dict(sorted(self.errors.items())), "rereads": self.rereads,
                    "skipped_pages": [s.as_dict() for s in self.skipped]}


@dataclass
class UnitOutcome:
    """How a query's pagination ended. `count` and `total_pages` are its size as the last page that answered
    saw it (None / 0 when no page answered)."""

    pages: int = 0
    skipped: list[int] = field(default_factory=list)
    interrupted: bool = False
    rereads: int = 0
    count: int | None = None
    total_pages: int = 0

    @property
    def complete(self) -> bool:
        return not self.skipped and not self.interrupted


@dataclass(frozen=True)
class Probe:
    """Page `page - 1` was dead before the query was sized: `page` is asked next."""

    page: int
    dead: int


@dataclass(frozen=True)
class PastTheEnd:
    """A dead page past the end the count gives: it held nothing, it is not a skip."""

    page: int


@dataclass(frozen=True)
class CountChanged:
    """The first change of `count` within a read."""

    old: int | None
    new: int
    page: int


@dataclass(frozen=True)
class Reread:
    """The count moved during the read: the query is read again from page 1."""


@dataclass(frozen=True)
class CountUnstable:
    """The count still moved after `rereads` re-reads: the plan ends with what it has."""

    rereads: int


@dataclass(frozen=True)
class Recovered:
    """A skipped page answered in the second pass."""

    page: int


@dataclass(frozen=True)
class ConfirmEmpty:
    """The query was reported empty (`count` 0): it is asked once more before it is believed."""


Note = Probe | PastTheEnd | CountChanged | Reread | CountUnstable | Recovered | ConfirmEmpty


def answered(result: PageResult) -> Page | None:
    """The records a page result brought: a page's, or those a page that stayed short did bring
    (kept, though the page counts as skipped); None when nothing answered."""
    if isinstance(result, Page):
        return result
    if isinstance(result, SkippedPage):
        return result.partial
    return None


class EventLog(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...
    def debug(self, event: str, **fields: Any) -> Any: ...


class NullLog:
    def info(self, event: str, **fields: Any) -> None: ...
    def warning(self, event: str, **fields: Any) -> None: ...
    def error(self, event: str, **fields: Any) -> None: ...
    def debug(self, event: str, **fields: Any) -> None: ...


def apply_note(note: Note, *, state: RunState, log: EventLog, account: str, q: Query) -> None:
    """What a note means for the run: a log line, a count, a skip taken back."""
    where = {"account": account, "date": q.label}
    match note:
        case Probe(page=page, dead=dead):
            if not state.stopped:  # stopping: the probe will not be sent
                log.warning("page_probe", **where, page=page, dead=dead)
        case PastTheEnd(page=page):
            state.remove_skip(account, q.label, page)
        case CountChanged(old=old, new=new, page=page):
            log.warning("count_changed", **where, old_count=old, new_count=new, page=page)
        case Reread():
            state.count_reread()
        case CountUnstable(rereads=rereads):
            log.warning("count_unstable", **where, rereads=rereads)
        case Recovered(page=page):
            state.remove_skip(account, q.label, page)
            log.info("page_recovered", **where, page=page)
        case ConfirmEmpty():
            log.info("day_empty_confirm", **where)


# -- the plans ---------------------------------------------------------------------------------------------


class Plan(Protocol):
    """What `app.fetch` drives: a `PagePlan` or a `RetryPlan`."""

    pending: int  # pages handed out, not answered yet
    finished: bool
    outcome: UnitOutcome

    @property
    def sizing(self) -> bool: ...
    def next_page(self) -> int | None: ...
    def update_state(self, number: int, result: PageResult) -> list[Note]: ...
    def cut_short(self) -> None: ...


class PagePlan:
    """The main pass over one query (see the module docstring)."""

    def __init__(self, *, max_rereads: int = MAX_REREADS) -> None:
        self.max_rereads = max_rereads
        self.outcome = UnitOutcome()
        self.pending = 0
        self.finished = False
        self._round = 0
        self._empty_asked = False
        """An answer said `count` 0 and the query was asked again (once per plan)."""
        self._new_read()

    def _new_read(self) -> None:
        self._probe: int | None = 1
        """The sizing page to hand out next; None while one is out, and once sized."""
        self._sized = False
        self._todo: collections.deque[int] = collections.deque()
        self._count: int | None = None
        self._total = self._answered = 0
        self._stable = True
        self._skipped: list[int] = []
        self._interrupted = False
        self._confirm = False
        """This read was sized by an answer saying `count` 0: read once more before believing it."""

    @property
    def sizing(self) -> bool:
        """The query is not sized yet: its next page goes alone."""
        return not self._sized

    @property
    def has_next_page(self) -> bool:
        """Pages wait to be asked for."""
        return not self.finished and (self._probe is not None or bool(self._todo))

    def in_last_round(self, slots: int) -> bool:
        """At most `slots` pages of the first read are left to hand out (or the plan is over): the query's
        last round of requests. Re-reads come after it."""
        return self.finished or self._round > 0 or (self._sized and len(self._todo) <= slots)

    def next_page(self) -> int | None:
        if self.finished:
            return None
        if self._probe is not None:
            number, self._probe = self._probe, None
        elif self._todo:
            number = self._todo.popleft()
        else:
            return None
        self.pending += 1
        return number

    def update_state(self, number: int, result: PageResult) -> list[Note]:
        self.pending -= 1
        notes: list[Note] = []
        if isinstance(result, InterruptedPage):
            self._interrupted = True
        elif isinstance(result, SkippedPage):
            self._skipped.append(number)
            if not self._sized:
                self._probe = number + 1
                notes.append(Probe(number + 1, dead=len(self._skipped)))
        elif not self._sized:
            notes.extend(self._size(number, result))
        else:
            self._answered += 1
            if result.count != self._count:
                if self._stable:
                    notes.append(CountChanged(self._count, result.count, number))
                self._stable = False
        if self.pending == 0 and (self._interrupted or not self.has_next_page):
            notes.extend(self._end_read())
        return notes

    def cut_short(self) -> None:
        """The run stopped and nothing is outstanding: what was not asked for never will be."""
        if not self.finished:
            self._fold()
            self.outcome.interrupted = self.finished = True

    def _size(self, number: int, first: Page) -> list[Note]:
        self._sized = True
        self._count, self._total = first.count, first.pages
        if first.count == 0 and not self._empty_asked:
            self._empty_asked = self._confirm = True
        self._answered = 1
        if number > first.pages:
            last = first.pages  # past the last page (page 1 and on were dead): trust `count`
        else:
            last = first.pages if first.next_page is not None else number
            if last < first.pages:
                self._stable = False  # nextPage and count disagree: records are moving
        past = [n for n in self._skipped if n > last]
        self._skipped = [n for n in self._skipped if n <= last]
        self._todo.extend(range(number + 1, last + 1))
        return [PastTheEnd(n) for n in past]

    def _fold(self) -> None:
        """Add the current read to the outcome."""
        self.outcome.pages += self._answered
        self.outcome.skipped = list(self._skipped)
        if self._count is not None:
            self.outcome.count, self.outcome.total_pages = self._count, self._total

    def _end_read(self) -> list[Note]:
        self._fold()
        self.finished = True
        if self._interrupted:
            self.outcome.interrupted = True
        elif self._confirm:
            self.finished = False
            self._new_read()
            return [ConfirmEmpty()]
        elif self._stable or self._skipped:
            pass
        elif self._round == self.max_rereads:
            return [CountUnstable(self._round)]
        else:
            self.finished = False
            self._round += 1
            self.outcome.rereads += 1
            self._new_read()
            return [Reread()]
        return []


class RetryPlan:
    """The second pass over a query's skipped pages: each again (page 1 too), all at once, each with a
    fresh attempt budget."""

    sizing = False

    def __init__(self, pages: Iterable[int]) -> None:
        self._todo = collections.deque(sorted(pages))
        self.outcome = UnitOutcome()
        self.pending = 0
        self.finished = not self._todo

    def next_page(self) -> int | None:
        if not self._todo:
            return None
        self.pending += 1
        return self._todo.popleft()

    def update_state(self, number: int, result: PageResult) -> list[Note]:
        self.pending -= 1
        notes: list[Note] = []
        if isinstance(result, InterruptedPage):
            self.outcome.interrupted = True
        elif isinstance(result, SkippedPage):
            self.outcome.skipped.append(number)
        else:
            self.outcome.pages += 1
            self.outcome.count, self.outcome.total_pages = result.count, result.pages
            notes.append(Recovered(number))
        self.finished = self.pending == 0 and not self._todo
        return notes

    def cut_short(self) -> None:
        if self._todo:
            self.outcome.interrupted = True
        self.finished = True


# -- the requests in flight --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """Page `page` of `query` came back; `result` is how it ended (or raises what it raised)."""

    query: Query
    page: int
    sizing: bool
    future: Future[PageResult]

    @property
    def result(self) -> PageResult:
        return self.future.result()


P = ParamSpec("P")
T = TypeVar("T")


class _Inline(Executor):
    """Runs each call at once, in the caller's thread."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed to whoever asks, as a pool would
            future.set_exception(exc)
        return future


class Window:
    """An account's requests in flight (see the module docstring); `threads` 0: inline."""

    def __init__(self, fetch: Callable[[Query, int, AbstractContextManager[Any]], PageResult], *,
                 concurrency: int = 1, depth: int = 1, threads: int = 0, name: str = "fetch") -> None:
        self._fetch = fetch
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self.depth = max(1, depth)
        self._pool: Executor = (ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
                                if threads > 0 else _Inline())
        self._landed: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self._out: set[Future[PageResult]] = set()
        self.pending = self._in_window = 0  # pages handed out, not returned by `next()` yet

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """No page in flight any more (see `abandon`), no worker left."""
        self.abandon()
        self._pool.shutdown()

    def has_room(self) -> bool:
        """Another page (one that does not size a query) may be handed out."""
        return self._in_window < self.depth

    def has_landed(self) -> bool:
        """A page came back that `next()` has not returned yet."""
        return not self._landed.empty()

    def submit(self, query: Query, page: int, *, sizing: bool = False) -> None:
        self.pending += 1
        self._in_window += not sizing
        future = self._pool.submit(self._fetch, query, page, self._slots)
        self._out.add(future)
        future.add_done_callback(lambda f: self._landed.put(Arrival(query, page, sizing, f)))

    def next(self) -> Arrival:
        """The next page back, in arrival order (waiting for it)."""
        assert self.pending > 0, "nothing handed out"
        arrival = self._landed.get()
        self._out.discard(arrival.future)
        self.pending -= 1
        self._in_window -= not arrival.sizing
        return arrival

    def abandon(self) -> None:
        """Forget what is handed out: pages not started never are, the others are waited for (no request
        outlives its loop)."""
        for future in list(self._out):
            future.cancel()
        for future in list(self._out):
            if not future.cancelled():
                future.exception()
        self._out.clear()
        self._landed = queue.SimpleQueue()
        self.pending = self._in_window = 0
