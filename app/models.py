"""What the API layer hands up: one page of conversions, and a page given up on; and what makes
two records the same conversion (`id_key`), for every place that drops duplicates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

IdKey = int | str
"""A `conversion_id` as the dedupe key: digit strings count as their number, so "123" and 123
are one record."""


def id_key(value: Any) -> IdKey | None:
    """The dedupe key of a `conversion_id`: ints as they are, digit strings as their number,
    anything else as its text; None for a record without one."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else text


@dataclass(frozen=True)
class Page:
    """One page of `/conversions/range` as the API returned it."""

    page: int
    limit: int
    count: int
    next_page: int | None
    records: list[dict[str, Any]]

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.count / self.limit)) if self.limit else 1

    @property
    def expected(self) -> int:
        """How many records this page must hold by its own answer: `limit` before the last
        page, `count - (pages - 1) * limit` on the last, none past it."""
        if self.page > self.pages:
            return 0
        if self.page < self.pages:
            return self.limit
        return max(self.count - (self.pages - 1) * self.limit, 0)


@dataclass(frozen=True)
class SkippedPage:
    """A page given up on after its last attempt. `partial` is the fullest answer a short page
    gave (its records are kept; the day stays incomplete), None when no attempt answered."""

    account: str
    date: str
    page: int
    attempts: int
    error_class: str
    error: str
    partial: Page | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "date": self.date, "page": self.page,
                "attempts": self.attempts, "error_class": self.error_class, "error": self.error}
