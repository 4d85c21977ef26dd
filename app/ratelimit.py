"""Client-side throttle per account, shared by every concurrent request of that account.

Requests are paced, not batched: one send every `interval` seconds at least, where
`interval = max(60 / per_minute, min_interval)` (REQUESTS_PER_MINUTE, with REQUEST_DELAY as a
floor). The first request goes at once; an idle limiter earns no credit, so a caller that comes
back after a pause sends at once and the next one waits a full interval again: never a burst.
An API enforcing its quota as a token bucket or a short sliding window sees an even stream.

On top of the pacing, a guard: at most `per_minute` requests in any `window` seconds plus a
small `margin`. At steady state the pacing already keeps R requests spread over R intervals;
the guard adds the margin once per window, so that network jitter between our send and the
server's arrival cannot push R + 1 requests into one server-side window when we run at exactly
the server's rate (it costs `margin` seconds per window, as before pacing existed).

Reservations make it fair and exact under concurrency: each caller claims its own slot under a
lock, then sleeps outside the lock until that slot.
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
        if per_minute <= 0:
            raise ValueError(f"per_minute must be > 0, got {per_minute}")
        self.interval = max(60.0 / per_minute, min_interval, 0.0)
        """Minimum spacing between two consecutive sends of this account."""
        self.capacity = max(1, math.floor(per_minute * window / 60.0))
        self.window = window + margin
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        self.waited = 0.0
        """Total seconds callers spent waiting for a slot (not reported anywhere: the job reports
        each page's own wait, `AccountClient.throttle_wait`)."""
        self.reservations = 0
        """Sends reserved so far: how busy the throttle was over a span (see `PageFetch`)."""

    def reserve(self) -> float:
        """Claim the next free send time and return it (no sleeping)."""
        with self._lock:
            slot = self._clock()
            if self._sent:
                slot = max(slot, self._sent[-1] + self.interval)
            if len(self._sent) >= self.capacity:
                slot = max(slot, self._sent[-self.capacity] + self.window)
            self._sent.append(slot)
            self.reservations += 1
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
