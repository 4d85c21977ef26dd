"""What the API layer hands up: one page of conversions, and a page given up on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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
