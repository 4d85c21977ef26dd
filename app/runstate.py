"""What every fetch of a run shares (`RunState`: the skip list and its cap, the counters, the stop flag),
and the event log the fetch layer writes to (`EventLog`, a structlog logger or the library's)."""

from __future__ import annotations

import collections
import threading
from typing import Any, Protocol

from app.models import SkippedPage
from app.outcome import StopReason


class RunState:
    """What every fetch of a run shares: the skip list and cap, counters, and the stop flag."""

    def __init__(self, *, max_skipped_pages: int, stop: threading.Event | None = None) -> None:
        self.max_skipped_pages = max_skipped_pages
        self.stop = stop or threading.Event()
        self.stop_reason: StopReason | None = None
        self.skipped: list[SkippedPage] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.pages = self.requests = self.auth_requests = self.rereads = 0
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def request_stop(self, reason: StopReason) -> None:
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
            self.request_stop(StopReason.SKIP_CAP)

    def remove_skip(self, account: str, date: str, page: int) -> None:
        with self._lock:
            self.skipped = [s for s in self.skipped if (s.account, s.date, s.page) != (account, date, page)]

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"pages": self.pages, "requests": self.requests,
                    "auth_requests": self.auth_requests,
                    "retries": dict(sorted(self.errors.items())), "rereads": self.rereads,
                    "skipped_pages": [s.as_dict() for s in self.skipped]}


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
