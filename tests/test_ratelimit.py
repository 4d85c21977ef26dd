"""The client-side throttle, on a fake clock: exact slots, shared by threads."""

from __future__ import annotations

import itertools
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from app.ratelimit import RateLimiter


class FakeTime:
    """A clock whose sleep advances it: waits cost nothing and are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now = max(self.now, self.now + seconds)


def test_min_interval_spaces_consecutive_requests() -> None:
    """REQUEST_DELAY is the minimum spacing between two requests."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=1000, min_interval=0.5, clock=t.clock, sleep=t.sleep)
    slots = [limiter.reserve() for _ in range(4)]
    assert slots == [0.0, 0.5, 1.0, 1.5]


def test_never_more_than_per_minute_in_any_window() -> None:
    """The 61st request of a minute waits until the first leaves the window (plus margin)."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=60, min_interval=0.0, margin=0.2, clock=t.clock,
                          sleep=t.sleep)
    slots = [limiter.reserve() for _ in range(61)]
    assert slots[:60] == [0.0] * 60
    assert slots[60] == 60.2


@settings(max_examples=50, deadline=None)
@given(
    per_minute=st.integers(min_value=1, max_value=200),
    min_interval=st.floats(min_value=0, max_value=2),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=150),
)
def test_any_arrival_pattern_respects_both_rules(per_minute: int, min_interval: float,
                                                 gaps: list[float]) -> None:
    """Whatever the arrival times, granted slots keep the spacing and the window limit."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=per_minute, min_interval=min_interval, margin=0.0,
                          clock=t.clock, sleep=t.sleep)
    slots = []
    for gap in gaps:
        t.now += gap
        slots.append(limiter.reserve())
    for a, b in itertools.pairwise(slots):
        assert b - a >= min_interval - 1e-9
    for i in range(len(slots) - per_minute):
        assert slots[i + per_minute] - slots[i] >= 60.0 - 1e-9


def test_threads_share_one_limiter() -> None:
    """Concurrent callers get distinct slots: 8 threads x 5 requests keep the spacing."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=10_000, min_interval=0.25, clock=t.clock,
                          sleep=lambda s: None)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            slot = limiter.reserve()
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(slots) == [i * 0.25 for i in range(40)]


def test_acquire_sleeps_until_the_slot_and_counts_the_wait() -> None:
    """acquire() sleeps exactly until the reserved slot and adds it to `waited`."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=60, min_interval=1.0, clock=t.clock, sleep=t.sleep)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == 1.0
    assert t.sleeps == [1.0]
    assert limiter.waited == 1.0
