"""Client-side throttle per account, shared by every concurrent request of that account.

Two rules, both enforced by reserving a send time under a lock:
- at most `per_minute` requests in any window of `window` seconds (plus a small margin, so
  network jitter between our send and the server's arrival cannot push two requests into one
  server-side window);
- at least `min_interval` seconds between two consecutive requests.
Reservations make it fair and exact under concurrency: each caller gets its own slot, then
sleeps outside the lock until that slot.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        *,
        per_minute: float,
        min_interval: float = 0.0,
        window: float = 60.0,
        margin: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.capacity = max(1, math.floor(per_minute * window / 60.0))
        self.window = window + margin
        self.min_interval = max(min_interval, 0.0)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        self.waited = 0.0
        """Total seconds callers spent waiting for a slot (reported in the summary)."""

    def reserve(self) -> float:
        """Claim the next free send time and return it (no sleeping)."""
        with self._lock:
            now = self._clock()
            slot = now
            if self._sent:
                slot = max(slot, self._sent[-1] + self.min_interval)
            if len(self._sent) >= self.capacity:
                slot = max(slot, self._sent[-self.capacity] + self.window)
            self._sent.append(slot)
            while len(self._sent) > self.capacity:
                self._sent.popleft()
            return slot

    def acquire(self) -> float:
        """Wait until this caller may send; return the seconds waited."""
        delay = self.reserve() - self._clock()
        if delay > 0:
            self._sleep(delay)
            with self._lock:
                self.waited += delay
            return delay
        return 0.0
