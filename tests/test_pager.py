"""The fetch loop against the simulator: retries with the seed's waits, skips, the skip cap,
the second pass, token renewal, live data and throttling. Sleeps are injected and recorded, so
the seed's 10-60 s waits cost nothing and are asserted exactly."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidCredentials
from app.http import HttpClient
from app.involve_asia import AccountClient, Page
from app.pager import Pager, RunState, SkippedPage
from app.ratelimit import RateLimiter
from app.retry import RetryPolicy
from app.simulator import Fault, Simulator
from app.writer import Chunk, UnitWriter

DAY = dt.date(2025, 1, 15)


@dataclass
class Rig:
    """A pager wired to a simulator, with recorded sleeps and a writer to a temp folder."""

    sim: Simulator
    pager: Pager
    state: RunState
    http: HttpClient
    scratch: Path
    sleeps: list[float] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)

    def fetch_unit(self, day: dt.date) -> tuple[list[int], Any]:
        writer = UnitWriter(account="default", scratch_dir=self.scratch,
                            on_chunk=self.chunks.append)
        run = self.pager.unit(day)
        for item in run:
            if isinstance(item, Page):
                writer.write(item.records)
        return self._ids_of(writer), run.outcome

    def _ids_of(self, writer: UnitWriter) -> list[int]:
        writer.close()
        ids = []
        for chunk in self.chunks:
            for line in gzip.decompress(chunk.path.read_bytes()).splitlines():
                ids.append(json.loads(line)["conversion_id"])
        self.chunks.clear()
        return ids


def make_rig(sim: Simulator, tmp_path: Path, *, concurrency: int = 1, max_skipped: int = 10,
             timeout: float = 2.0, limit: int = 100, secret: str = "demo-secret",
             limiter: RateLimiter | None = None) -> Rig:
    state = RunState(max_skipped_pages=max_skipped)
    sleeps: list[float] = []
    http = HttpClient(timeout=timeout, connect_timeout=timeout)
    client = AccountClient(base_url=sim.base_url, key="general", secret=secret, http=http,
                           limiter=limiter or RateLimiter(per_minute=100_000))
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=concurrency) if concurrency > 1 else None
    pager = Pager(client=client, policy=RetryPolicy(jitter=0.0), state=state, account="default",
                  page_limit=limit, concurrency=concurrency, pool=pool, sleep=sleeps.append)
    return Rig(sim, pager, state, http, tmp_path, sleeps)


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def factory(sim: Simulator, **kwargs: Any) -> Rig:
        rig = make_rig(sim, tmp_path, **kwargs)
        rigs.append(rig)
        return rig

    yield factory
    for rig in rigs:
        rig.http.close()
        if rig.pager._pool is not None:
            rig.pager._pool.shutdown()


@pytest.mark.timeout(60)
def test_every_fault_kind_ends_in_success_never_a_hang(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """Each transient fault on page 2, first attempt: the unit completes with every record once."""
    kinds = ["reset", "no_answer", "headers_then_silence", "drip", "endless_body", "truncated",
             "malformed_json", "http_500", "http_502", "http_503", "rate_limit",
             "rate_limit_no_header", "envelope_error", "token_revoked", "empty_page",
             "huge_error_body"]
    sim = make_simulator(records_per_day=350, rate_limit_per_minute=None, hang_seconds=30.0)
    rig = rig_factory(sim, timeout=0.5)
    for n, kind in enumerate(kinds):
        day = DAY + dt.timedelta(days=n)
        sim.add_fault(Fault(kind=kind, date=day.isoformat(), page=2, attempts={1}))
        ids, outcome = rig.fetch_unit(day)
        assert outcome.complete, kind
        assert sorted(ids) == sorted(sim.expected_ids("default", day, day)), kind
        assert len(ids) == len(set(ids)) == 350, kind
    assert rig.state.skipped == []


@pytest.mark.timeout(30)
def test_retries_wait_the_seed_schedule_then_skip_and_the_second_pass_recovers(
    make_simulator, rig_factory  # type: ignore[no-untyped-def]
) -> None:
    """A page failing 6 times is skipped after waits 10,20,30,40,60; the second pass fetches it."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_500", date=DAY.isoformat(), page=2, attempts=set(range(1, 7))))
    rig = rig_factory(sim)
    ids, outcome = rig.fetch_unit(DAY)
    assert outcome.skipped == [2] and not outcome.complete
    assert rig.sleeps == [10, 20, 30, 40, 60]
    assert [s.page for s in rig.state.skipped] == [2]
    assert rig.state.as_dict()["retries"] == {"http_status": 6}

    writer = UnitWriter(account="default", scratch_dir=rig.scratch, on_chunk=rig.chunks.append)
    writer.write([{"conversion_id": i} for i in ids])
    second = rig.pager.retry(DAY, outcome.skipped)
    for item in second:
        if isinstance(item, Page):
            writer.write(item.records)
    assert second.outcome is not None and second.outcome.complete
    assert rig.state.skipped == []
    all_ids = rig._ids_of(writer)
    assert sorted(all_ids) == sorted(sim.expected_ids("default", DAY, DAY))


@pytest.mark.timeout(30)
def test_a_page_that_never_recovers_stays_listed(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """A dead page fails the second pass too and stays in the skipped list with its error class."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="malformed_json", date=DAY.isoformat(), page=3))
    rig = rig_factory(sim)
    _, outcome = rig.fetch_unit(DAY)
    second = rig.pager.retry(DAY, outcome.skipped)
    assert [type(i) for i in second] == [SkippedPage]
    assert second.outcome is not None and second.outcome.skipped == [3]
    assert [(s.page, s.error_class) for s in rig.state.skipped] == [(3, "json_decode")]


@pytest.mark.timeout(30)
def test_eleven_dead_pages_stop_the_run(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """More than MAX_SKIPPED_PAGES (10) skipped pages raise the stop flag; no page is asked after."""
    sim = make_simulator(records_per_day=2000, rate_limit_per_minute=None)
    for page in range(2, 20):
        sim.add_fault(Fault(kind="http_503", date=DAY.isoformat(), page=page))
    rig = rig_factory(sim)
    _, outcome = rig.fetch_unit(DAY)
    assert rig.state.stop_reason == "skip_cap"
    assert len(rig.state.skipped) == 11
    assert outcome.interrupted or outcome.skipped
    pages_asked = {e.page for e in sim.ledger.snapshot() if e.endpoint == "range"}
    assert max(pages_asked) == 12  # page 1 fine, pages 2..12 dead, nothing after the 11th skip


@pytest.mark.timeout(30)
def test_token_expiry_costs_no_page_attempt(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """A server-side token expiry mid-unit: re-authenticate once, repeat the request, no retry."""
    sim = make_simulator(records_per_day=1000, rate_limit_per_minute=None, token_ttl=0.3)
    rig = rig_factory(sim)
    import time as _time

    writer = UnitWriter(account="default", scratch_dir=rig.scratch, on_chunk=rig.chunks.append)
    for item in rig.pager.unit(DAY):
        assert isinstance(item, Page)
        writer.write(item.records)
        _time.sleep(0.35)  # let the token expire between pages
    ids = rig._ids_of(writer)
    assert sorted(ids) == sorted(sim.expected_ids("default", DAY, DAY))
    assert rig.sleeps == []
    assert rig.state.as_dict()["retries"] == {}
    auths = sim.request_count(endpoint="authenticate")
    assert auths >= 5  # renewed several times, each one without a page retry


@pytest.mark.timeout(30)
def test_bad_credentials_fail_fast_in_one_request(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """A wrong secret raises InvalidCredentials after exactly one authenticate call, no retry."""
    sim = make_simulator(rate_limit_per_minute=None)
    rig = rig_factory(sim, secret="wrong-secret")
    with pytest.raises(InvalidCredentials):
        list(rig.pager.unit(DAY))
    assert sim.request_count(endpoint="authenticate") == 1
    assert sim.request_count(endpoint="range") == 0
    assert rig.sleeps == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_records_inserted_mid_pagination_are_neither_lost_nor_duplicated(
    make_simulator, rig_factory, concurrency: int  # type: ignore[no-untyped-def]
) -> None:
    """New conversions arrive while page 3 is served: the unit is re-read, every id once."""
    sim = make_simulator(records_per_day=450, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="insert", date=DAY.isoformat(), page=3, attempts={1},
                        params={"count": 7}))
    rig = rig_factory(sim, concurrency=concurrency)
    ids, outcome = rig.fetch_unit(DAY)
    expected = sim.expected_ids("default", DAY, DAY)
    assert len(expected) == 457
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert outcome.rereads >= 1


@pytest.mark.timeout(60)
def test_mixed_random_faults_over_several_days_every_record_exactly_once(
    make_simulator, rig_factory  # type: ignore[no-untyped-def]
) -> None:
    """5% random transient faults over 5 days, 3 requests in flight: every record, once."""
    sim = make_simulator(records_per_day=800, rate_limit_per_minute=None, fault_rate=0.05,
                         seed=11)
    rig = rig_factory(sim, concurrency=3, timeout=1.0)
    for n in range(5):
        day = DAY + dt.timedelta(days=n)
        ids, outcome = rig.fetch_unit(day)
        assert outcome.complete
        assert len(ids) == len(set(ids))
        assert set(ids) == sim.expected_ids("default", day, day)
    faults_seen = sum(1 for e in sim.ledger.snapshot() if e.outcome not in ("ok",))
    assert faults_seen > 0
    assert rig.state.skipped == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("throttled", [True, False])
def test_a_server_throttled_at_our_rate_never_answers_429(make_simulator, rig_factory,  # type: ignore[no-untyped-def]
                                                         throttled: bool) -> None:
    """The server admits 20 requests per 2 s window (the API's 60/min, time-scaled). Our
    limiter set to the same rate, 3 requests in flight: zero 429s. Without it: 429s."""
    sim = make_simulator(records_per_day=1500, rate_limit_per_minute=20, rate_window=2.0)
    limiter = (RateLimiter(per_minute=20 * 30, window=2.0, min_interval=0.0) if throttled
               else RateLimiter(per_minute=1_000_000))
    rig = rig_factory(sim, concurrency=3, limiter=limiter)
    for n in range(3):
        day = DAY + dt.timedelta(days=n)
        ids, outcome = rig.fetch_unit(day)
        if throttled:
            assert outcome.complete and set(ids) == sim.expected_ids("default", day, day)
    statuses = [e.status for e in sim.ledger.snapshot()]
    assert len(statuses) >= 46  # 45 pages + authentication
    if throttled:
        assert 429 not in statuses
    else:  # the injected sleep skips the Retry-After waits, so pages end up skipped: fine here
        assert 429 in statuses
