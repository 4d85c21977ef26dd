"""The API's per-account throttle: a sliding 60-second window of admitted requests."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class Throttle:
    """Admit at most `per_minute` requests per account in any 60 s window (None: no limit).

    Rejected requests do not count, so a client that backs off gets through once the oldest
    admitted request leaves the window.
    """

    def __init__(self, per_minute: int | None, clock: Callable[[], float],
                 window: float = WINDOW_SECONDS) -> None:
        """`window` shortens the minute for fast tests: `per_minute` requests per `window` s."""
        if per_minute is not None and per_minute < 1:
            raise ValueError(f"rate_limit_per_minute must be >= 1 or None, got {per_minute}")
        self._limit = per_minute
        self._clock = clock
        self._window = window
        self._admitted: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, account: str) -> int | None:
        """None if the request is admitted, else whole seconds until a slot frees (>= 1)."""
        if self._limit is None:
            return None
        now = self._clock()
        with self._lock:
            times = self._admitted.setdefault(account, deque())
            while times and times[0] <= now - self._window:
                times.popleft()
            if len(times) < self._limit:
                times.append(now)
                return None
            return max(1, math.ceil(times[0] + self._window - now))
