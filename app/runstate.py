"""What a run's fetches share, split by who writes it:

- `RunStop`: the run's stop token (a flag and its first reason). The orchestration (the job, the
  original interface) creates it and anyone may request it: SIGTERM, a storage failure, a fatal fetch
  error, the skip cap, MAX_RECORDS_LIMIT (an account's consumer through `FetchLoop.stop`).
- `FetchTally`: the fetch bookkeeping (pages, requests, retries by error class, re-reads, and the
  run-wide skip list with its cap). Written only by the fetch layer (`app.fetch`, and the client stack
  `fetch.open_account` builds, for requests); the orchestration reads `as_dict()`. More than
  `max_skipped_pages` skips request the stop (SKIP_CAP).

And the event log the fetch layer writes to (`EventLog`, a structlog logger or the library's).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Protocol

from app.models import SkippedPage
from app.outcome import StopReason


class RunStop:
    """The run's stop token: `request(reason)` from any thread raises it (the first reason stays);
    `stopped` and `reason` read it; `wait(timeout)` sleeps until it is raised (True) or the time is up."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: StopReason | None = None
        self._lock = threading.Lock()

    def request(self, reason: StopReason) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> StopReason | None:
        """The first reason a stop was requested for; None while the run goes on."""
        with self._lock:
            return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class FetchTally:
    """A run's fetch bookkeeping (see the module docstring): counters and the skip list with its cap.
    Its methods that count, add or remove are the fetch layer's; everything else only reads (copies)."""

    def __init__(self, *, max_skipped_pages: int, stop: RunStop) -> None:
        self._max_skipped_pages = max_skipped_pages
        self._stop = stop
        self._skipped: list[SkippedPage] = []
        self._errors: collections.Counter[str] = collections.Counter()
        self._pages = self._requests = self._auth_requests = self._rereads = 0
        self._lock = threading.Lock()

    # -- written by the fetch layer only (tests/test_architecture.py checks it)

    def count_error(self, error_class: str) -> None:
        with self._lock:
            self._errors[error_class] += 1

    def count_page(self) -> None:
        with self._lock:
            self._pages += 1

    def count_request(self, authentication: bool) -> None:
        """An API request sent: `requests` counts every one the API saw (pages, their retries,
        a page repeated after a rejected token, authentication); `auth_requests` those that
        authenticated."""
        with self._lock:
            self._requests += 1
            if authentication:
                self._auth_requests += 1

    def count_reread(self) -> None:
        with self._lock:
            self._rereads += 1

    def add_skip(self, skip: SkippedPage) -> None:
        """List a page given up on; more than `max_skipped_pages` stop the run. A page already listed (the
        second pass failing it again) stays listed once, as first recorded."""
        key = (skip.account, skip.date, skip.page)
        with self._lock:
            if any((s.account, s.date, s.page) == key for s in self._skipped):
                return
            self._skipped.append(skip)
            over = len(self._skipped) > self._max_skipped_pages
        if over:
            self._stop.request(StopReason.SKIP_CAP)

    def remove_skip(self, account: str, date: str, page: int) -> None:
        with self._lock:
            self._skipped = [s for s in self._skipped if (s.account, s.date, s.page) != (account, date, page)]

    # -- read by anyone

    @property
    def skipped(self) -> list[SkippedPage]:
        """The pages given up on (a copy), first skip first."""
        with self._lock:
            return list(self._skipped)

    @property
    def errors(self) -> dict[str, int]:
        """Retries and skips by error class (a copy)."""
        with self._lock:
            return dict(self._errors)

    @property
    def pages(self) -> int:
        with self._lock:
            return self._pages

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"pages": self._pages, "requests": self._requests,
                    "auth_requests": self._auth_requests,
                    "retries": dict(sorted(self._errors.items())), "rereads": self._rereads,
                    "skipped_pages": [s.as_dict() for s in self._skipped]}


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
