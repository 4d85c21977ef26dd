"""The client-side throttle, on a fake clock: exact slots, shared by threads."""

from __future__ import annotations

import itertools
import math
import threading

import pytest
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


def test_requests_are_paced_evenly_and_the_window_guard_adds_its_margin() -> None:
    """At 60/min requests go one a second from the first (at once), not 60 at once; the 61st
    also waits for the first to leave the 60 s window plus the margin."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=60, min_interval=0.0, margin=0.2, clock=t.clock,
                          sleep=t.sleep)
    slots = [limiter.reserve() for _ in range(62)]
    assert slots[:60] == [float(i) for i in range(60)]
    assert slots[60] == 60.2
    assert slots[61] == 61.2


def test_request_delay_is_a_floor_under_the_pacing_interval() -> None:
    """The spacing is max(60/R, REQUEST_DELAY): the larger of the two wins, either way round."""
    t = FakeTime()
    slow_rate = RateLimiter(per_minute=30, min_interval=0.5, clock=t.clock, sleep=t.sleep)
    long_delay = RateLimiter(per_minute=120, min_interval=1.5, clock=t.clock, sleep=t.sleep)
    assert [slow_rate.reserve() for _ in range(3)] == [0.0, 2.0, 4.0]
    assert [long_delay.reserve() for _ in range(3)] == [0.0, 1.5, 3.0]


def test_an_idle_limiter_earns_no_burst() -> None:
    """After a long pause the next request goes at once and the one after waits a full interval."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=60, clock=t.clock, sleep=t.sleep)
    assert limiter.reserve() == 0.0
    t.now = 500.0
    assert [limiter.reserve() for _ in range(3)] == [500.0, 501.0, 502.0]


@settings(max_examples=50, deadline=None)
@given(
    per_minute=st.integers(min_value=1, max_value=200),
    min_interval=st.floats(min_value=0, max_value=2),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=150),
)
def test_any_arrival_pattern_respects_both_rules(per_minute: int, min_interval: float,
                                                 gaps: list[float]) -> None:
    """Whatever the arrival times, granted slots keep the pacing, REQUEST_DELAY and the window."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=per_minute, min_interval=min_interval, margin=0.0,
                          clock=t.clock, sleep=t.sleep)
    slots = []
    for gap in gaps:
        t.now += gap
        slots.append(limiter.reserve())
    for a, b in itertools.pairwise(slots):
        assert b - a >= max(min_interval, 60.0 / per_minute) - 1e-9
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


def _most_in_any_window(sends: list[float], width: float) -> int:
    """The largest number of sends inside one closed window [t, t + width]."""
    ordered = sorted(sends)
    most = 0
    j = 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j + 1 < len(ordered) and ordered[j + 1] <= start + width + 1e-9:
            j += 1
        most = max(most, j - i + 1)
    return most


class ThreadClock:
    """A shared fake clock for real threads: `sleep(s)` moves it to the calling thread's last
    reading + s (the slot it was told to wait for), so each caller's send time is exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()

    def clock(self) -> float:
        with self._lock:
            self._local.read = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now = max(self.now, self._local.read + seconds)

    def last_read(self) -> float:
        value: float = self._local.read
        return value


def test_concurrent_callers_at_60_per_minute_stay_under_every_window_bound() -> None:
    """6 threads x 30 requests at R = 60: at most ceil(W*R/60) + 1 sends in any window of
    W = 1, 10, 60 s, the first at once, and the throughput of R per minute (plus the margin)."""
    fake = ThreadClock()
    limiter = RateLimiter(per_minute=60, clock=fake.clock, sleep=fake.sleep)
    sends: list[float] = []
    first_waits: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def caller() -> None:
        start.wait()
        for n in range(30):
            waited = limiter.acquire()
            sent = fake.last_read() + waited  # when this caller was released to send
            with lock:
                sends.append(sent)
                if n == 0:
                    first_waits.append(waited)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(sends) == 180
    assert min(first_waits) == 0.0  # the very first request is not held back
    for width in (1, 10, 60):
        assert _most_in_any_window(sends, width) <= math.ceil(width * 60 / 60) + 1, width
    gaps = [b - a for a, b in itertools.pairwise(sorted(sends))]
    assert min(gaps) >= 1.0 - 1e-9
    # 180 sends one a second, plus the 0.2 s margin at requests 61 and 121: nothing idles.
    assert max(sends) == pytest.approx(179.4)


@settings(max_examples=60, deadline=None)
@given(
    per_minute=st.integers(min_value=1, max_value=600),
    callers=st.integers(min_value=1, max_value=8),
    latencies=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=20),
    requests=st.integers(min_value=1, max_value=250),
)
def test_any_rate_and_any_number_of_callers_respect_every_window_bound(
    per_minute: int, callers: int, latencies: list[float], requests: int
) -> None:
    """Callers that send, wait out their request's latency and ask again (in time order, as
    concurrent callers do): at most ceil(W*R/60) + 1 sends in any window of W = 1, 10, 60 s."""
    t = FakeTime()
    limiter = RateLimiter(per_minute=per_minute, clock=t.clock, sleep=t.sleep)
    ready = [0.0] * callers  # when each caller next asks for a slot
    sends: list[float] = []
    for n in range(requests):
        who = min(range(callers), key=ready.__getitem__)
        t.now = ready[who]
        sent = ready[who] + limiter.acquire()
        sends.append(sent)
        ready[who] = sent + latencies[n % len(latencies)]
    assert sends[0] == 0.0
    for width in (1, 10, 60):
        assert _most_in_any_window(sends, width) <= math.ceil(width * per_minute / 60) + 1
