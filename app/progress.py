"""Progress for the log: each account's own rate and ETA, and the run's, none going backwards.

- Percentages count the pages done (each page of a day once, however often it was fetched and
  whatever its number) against the pages known: a page that lands late after its retries
  never makes a line jump, and neither a day's nor the run's percentage goes backwards.
- Rates are pages completed per minute over the last `window` seconds, counting every page
  fetched; in an account's first `window` seconds, the pace between its first page and its
  last (its sign-in and first wait are not pages). An account's line gives its own pace, the
  run's rate is the sum of its accounts' (they are fetched side by side). Unknown (None) before
  an account's second page.
- ETAs divide the pages left by the rate: a day's and an account's at that account's rate; the
  run's is its slowest account's. Days not sized yet count as the mean of the account's sized
  days (the run's mean while the account has none). Unknown (None) until there is a rate.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RATE_WINDOW = 60.0
"""Seconds of page completions a rate is measured over."""


@dataclass
class _Day:
    pages: int = 0
    """Pages known (the largest count any of its pages gave)."""
    done: set[int] = field(default_factory=set)
    """Page numbers fetched."""
    percent: float = 0.0
    """The largest percentage reported, so a grown page count never shows a step back."""

    @property
    def finished(self) -> int:
        return min(len(self.done), self.pages)


@dataclass
class _Account:
    units: int
    started: float
    days: dict[str, _Day] = field(default_factory=dict)
    times: collections.deque[float] = field(default_factory=collections.deque)
    """When each page of the last `window` seconds completed."""


class Progress:
    """Pages done per day and account, rates and ETAs; thread-safe.

    Callers hold `lock` across a page and its report, so the lines come out in order."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 window: float = RATE_WINDOW) -> None:
        self.lock = threading.RLock()
        self._clock = clock
        self._window = window
        self._accounts: dict[str, _Account] = {}
        self._run_percent = 0.0

    @property
    def units_total(self) -> int:
        with self.lock:
            return sum(a.units for a in self._accounts.values())

    def plan(self, account: str, units: int) -> None:
        """`account` starts fetching `units` days now (its rate is measured from now)."""
        with self.lock:
            self._accounts[account] = _Account(units, self._clock())

    def page_done(self, account: str, date: str, page: int, pages: int) -> tuple[int, bool]:
        """Count page `page` of (account, date), a day of `pages` pages, fetched now. Returns the
        day's pages done so far, and whether this page was new and completed the day."""
        with self.lock:
            now = self._clock()
            state = self._accounts.get(account)
            if state is None:  # not planned: count it as one day started now
                state = self._accounts[account] = _Account(1, now)
            state.times.append(now)
            day = state.days.setdefault(date, _Day())
            day.pages = max(day.pages, pages)
            new = page not in day.done
            day.done.add(page)
            return day.finished, new and day.finished >= day.pages

    def line(self, account: str, date: str) -> dict[str, Any]:
        """The fields of a progress line for (account, date), now."""
        with self.lock:
            now = self._clock()
            state = self._accounts[account]
            day = state.days[date]
            day.percent = max(day.percent, 100 * day.finished / max(day.pages, 1))
            rate = self._rate(state, now)
            rates = {name: self._rate(a, now) for name, a in self._accounts.items()}
            known = [r for r in rates.values() if r is not None]
            return {
                "pages_done": day.finished,
                "pages": day.pages,
                "percent": round(day.percent, 1),
                "rate": _round(rate),
                "eta_seconds": _eta(day.pages - day.finished, rate),
                "account_eta_seconds": _eta(self._left(state), rate),
                "run_percent": round(100 * self._fraction(), 1),
                "run_rate": _round(sum(known) if known else None),
                "run_eta_seconds": self._run_eta(rates),
            }

    def status(self) -> dict[str, Any]:
        """For the heartbeat: the run's percentage, and each account's pages and rate."""
        with self.lock:
            now = self._clock()
            return {"run_percent": round(100 * self._fraction(), 1),
                    "accounts": {name: {"pages": sum(d.finished for d in a.days.values()),
                                        "rate": _round(self._rate(a, now))}
                                 for name, a in self._accounts.items()}}

    # -- measures (the lock held)

    def _rate(self, state: _Account, now: float) -> float | None:
        """Pages per minute over the last `window` seconds; in the account's first `window`
        seconds, between its first page and its last. None before its second page."""
        times = state.times
        while times and times[0] <= now - self._window:
            times.popleft()
        if now - state.started >= self._window:
            return 60.0 * len(times) / self._window
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return 60.0 * (len(times) - 1) / (times[-1] - times[0])

    def _mean_pages(self, state: _Account) -> float | None:
        sized = [d.pages for d in state.days.values()] or [
            d.pages for a in self._accounts.values() for d in a.days.values()]
        return sum(sized) / len(sized) if sized else None

    def _left(self, state: _Account) -> float | None:
        """Pages the account has left: of its sized days, and its days not sized yet."""
        unsized = max(state.units - len(state.days), 0)
        mean = self._mean_pages(state)
        if unsized and mean is None:
            return None
        return sum(d.pages - d.finished for d in state.days.values()) + unsized * (mean or 0.0)

    def _fraction(self) -> float:
        """Pages done over pages expected, run-wide; the largest value so far."""
        done = expected = 0.0
        for state in self._accounts.values():
            left = self._left(state)
            if left is None:
                continue
            finished = sum(d.finished for d in state.days.values())
            done += finished
            expected += finished + left
        if expected > 0:
            self._run_percent = max(self._run_percent, min(1.0, done / expected))
        return self._run_percent

    def _run_eta(self, rates: dict[str, float | None]) -> float | None:
        """The slowest account's ETA: the accounts are fetched side by side."""
        longest = 0.0
        for name, state in self._accounts.items():
            left = self._left(state)
            if left is None:
                return None
            if left <= 0:
                continue
            eta = _eta(left, rates[name])
            if eta is None:
                return None
            longest = max(longest, eta)
        return longest


def _eta(pages_left: float | None, rate: float | None) -> float | None:
    """Seconds to fetch `pages_left` at `rate` pages a minute; None when either is unknown."""
    if pages_left is None:
        return None
    if pages_left <= 0:
        return 0.0
    return round(pages_left / rate * 60, 1) if rate else None


def _round(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 1)
