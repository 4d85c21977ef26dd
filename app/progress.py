"""Run progress for the log: pages done against pages known, never going backwards."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field


@dataclass
class Progress:
    """Run progress from pages done against pages known: never goes backwards."""

    units_total: int = 0
    pages_done: int = 0
    _known: dict[tuple[str, str], int] = field(default_factory=dict)
    _done: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    _reported: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Held by the caller across a page and its report, so reports come out in order."""

    def page_done(self, account: str, date: str, pages: int) -> bool:
        """Count a page of (account, date), a day of `pages` pages; True when that was the
        day's last page to arrive (pages arrive out of order)."""
        with self.lock:
            self.pages_done += 1
            key = (account, date)
            self._known[key] = max(self._known.get(key, 0), pages)
            self._done[key] += 1
            return self._done[key] == self._known[key]

    @property
    def fraction(self) -> float:
        """Pages done over pages known, with the units not yet sized estimated at the mean of
        those that are; the largest value so far, so it only goes up."""
        with self.lock:
            known = len(self._known)
            if not known:
                return self._reported
            per_unit = sum(self._known.values()) / known
            expected = sum(self._known.values()) + per_unit * max(self.units_total - known, 0)
            value = min(1.0, self.pages_done / max(expected, 1.0))
            self._reported = max(self._reported, value)
            return self._reported

    def eta(self, elapsed: float) -> float | None:
        fraction = self.fraction
        return round(elapsed / fraction - elapsed, 1) if fraction > 0 else None
