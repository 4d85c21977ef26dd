"""The pages of one query (an account's day, or a date range) still to fetch: the page plans.

The plans are pure and work as dlt's paginators: `next_page()` is the next page to request (None: none
now), `update_state(number, result)` takes what came back and returns `Note`s (the fetch loop's
`apply_note` turns one into its log line or count), `finished` says whether the plan is over, `outcome`
how it went.

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
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

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
