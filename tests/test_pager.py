"""The page plan on canned pages (no network); the fetch loop against the simulator: retries
with the seed's waits, skips, the skip cap, the second pass, token renewal, live data and
throttling; the window and the account loop on small fakes. Sleeps are injected and recorded,
so the seed's 10-60 s waits cost nothing and are asserted exactly."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.api import AccountClient
from app.errors import (
    ApiUnreachable,
    ConnectFailed,
    FetchError,
    HTTPStatusError,
    InvalidCredentials,
    RequestInterrupted,
    RequestTimeout,
    StorageError,
)
from app.fetch import DayEnded, DayNotStarted, DayStarted, FetchLoop, PageArrived, PageFetch
from app.http import HttpClient
from app.models import Page, SkippedPage
from app.outcome import StopReason
from app.plans import (
    CountChanged,
    CountUnstable,
    InterruptedPage,
    PagePlan,
    PageResult,
    PastTheEnd,
    Probe,
    Query,
    Recovered,
    Reread,
    RetryPlan,
    UnitOutcome,
)
from app.ratelimit import RateLimiter
from app.retry import RetryPolicy
from app.runstate import FetchTally, RunStop
from app.simulator import Fault, Simulator
from app.window import Window
from app.writer import Chunk, UnitWriter

DAY = dt.date(2025, 1, 15)


def read_unit(loop: FetchLoop, day: dt.date) -> tuple[list[PageResult], UnitOutcome]:
    """The main pass over one day, alone: every result as it arrived, and the outcome."""
    plan = PagePlan()
    results = [arrival.result for arrival in loop.pages(Query(day, day), plan)]
    return results, plan.outcome


def second_pass(loop: FetchLoop, day: dt.date, pages: list[int]
                ) -> tuple[list[PageResult], UnitOutcome]:
    """The second pass over a day's skipped pages: every result, and the outcome."""
    plan = RetryPlan(pages)
    results = [arrival.result for arrival in loop.pages(Query(day, day), plan)]
    return results, plan.outcome


@dataclass(frozen=True)
class RunShare:
    """What the fetches of a run share, as the job creates them: the stop token and the tally."""

    stop: RunStop
    tally: FetchTally


def run_share(max_skipped: int) -> RunShare:
    stop = RunStop()
    return RunShare(stop, FetchTally(max_skipped_pages=max_skipped, stop=stop))


@dataclass
class Rig:
    """A fetch loop wired to a simulator, with recorded sleeps and a writer to a temp folder."""

    sim: Simulator
    loop: FetchLoop
    window: Window
    run: RunShare
    http: HttpClient
    scratch: Path
    sleeps: list[float] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)

    def fetch_unit(self, day: dt.date) -> tuple[list[int], UnitOutcome]:
        writer = UnitWriter(account="default", scratch_dir=self.scratch,
                            on_chunk=self.chunks.append)
        results, outcome = read_unit(self.loop, day)
        for item in results:
            if isinstance(item, Page):
                writer.write(item.records)
        return self.ids_of(writer), outcome

    def ids_of(self, writer: UnitWriter) -> list[int]:
        writer.close()
        ids = []
        for chunk in self.chunks:
            for line in gzip.decompress(chunk.path.read_bytes()).splitlines():
                ids.append(json.loads(line)["conversion_id"])
        self.chunks.clear()
        return ids


def make_loop(client: Any, run: RunShare, *, sleep: Callable[[float], object],
              concurrency: int = 1, depth: int | None = None, limit: int = 100,
              log: Any = None, clock: Callable[[], float] = time.monotonic
              ) -> tuple[FetchLoop, Window]:
    """One account's loop: serial at concurrency 1, else a window of `depth` pages."""
    fetch = PageFetch(client=client, policy=RetryPolicy(jitter=0.0), stop=run.stop, tally=run.tally,
                      account="default", page_limit=limit, sleep=sleep, log=log, clock=clock)
    depth = depth or concurrency
    window = Window(fetch, concurrency=concurrency, depth=depth,
                    threads=depth if concurrency > 1 else 0)
    return FetchLoop(window=window, stop=run.stop, tally=run.tally, account="default",
                     concurrency=concurrency, log=log), window


def make_rig(sim: Simulator, tmp_path: Path, *, concurrency: int = 1, depth: int | None = None,
             max_skipped: int = 10,
             timeout: float = 2.0, limit: int = 100, secret: str = "demo-secret",
             limiter: RateLimiter | None = None, log: Any = None,
             clock: Callable[[], float] = time.monotonic) -> Rig:
    run = run_share(max_skipped)
    sleeps: list[float] = []
    http = HttpClient(timeout=timeout, connect_timeout=timeout)
    client = AccountClient(base_url=sim.base_url, key="general", secret=secret, http=http,
                           limiter=limiter or RateLimiter(per_minute=100_000))
    loop, window = make_loop(client, run, sleep=sleeps.append, concurrency=concurrency,
                             depth=depth, limit=limit, log=log, clock=clock)
    return Rig(sim, loop, window, run, http, tmp_path, sleeps)


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
        rig.window.close()


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
    assert rig.run.tally.skipped == []


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
    assert [s.page for s in rig.run.tally.skipped] == [2]
    assert rig.run.tally.as_dict()["retries"] == {"http_status": 6}

    writer = UnitWriter(account="default", scratch_dir=rig.scratch, on_chunk=rig.chunks.append)
    writer.write([{"conversion_id": i} for i in ids])
    results, again = second_pass(rig.loop, DAY, outcome.skipped)
    for item in results:
        if isinstance(item, Page):
            writer.write(item.records)
    assert again.complete
    assert rig.run.tally.skipped == []
    all_ids = rig.ids_of(writer)
    assert sorted(all_ids) == sorted(sim.expected_ids("default", DAY, DAY))


@pytest.mark.timeout(30)
def test_a_page_that_never_recovers_stays_listed(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """A dead page fails the second pass too and stays in the skipped list with its error class."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="malformed_json", date=DAY.isoformat(), page=3))
    rig = rig_factory(sim)
    _, outcome = rig.fetch_unit(DAY)
    results, again = second_pass(rig.loop, DAY, outcome.skipped)
    assert [type(i) for i in results] == [SkippedPage]
    assert again.skipped == [3]
    assert [(s.page, s.error_class) for s in rig.run.tally.skipped] == [(3, "json_decode")]


@pytest.mark.timeout(30)
def test_eleven_dead_pages_stop_the_run(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """More than MAX_SKIPPED_PAGES (10) skipped pages raise the stop flag; no page is asked after."""
    sim = make_simulator(records_per_day=2000, rate_limit_per_minute=None)
    for page in range(2, 20):
        sim.add_fault(Fault(kind="http_503", date=DAY.isoformat(), page=page))
    rig = rig_factory(sim)
    _, outcome = rig.fetch_unit(DAY)
    assert rig.run.stop.reason == "skip_cap"
    assert len(rig.run.tally.skipped) == 11
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
    for arrival in rig.loop.pages(Query(DAY, DAY), PagePlan()):
        assert isinstance(arrival.result, Page)
        writer.write(arrival.result.records)
        _time.sleep(0.35)  # let the token expire between pages
    ids = rig.ids_of(writer)
    assert sorted(ids) == sorted(sim.expected_ids("default", DAY, DAY))
    assert rig.sleeps == []
    assert rig.run.tally.as_dict()["retries"] == {}
    auths = sim.request_count(endpoint="authenticate")
    assert auths >= 5  # renewed several times, each one without a page retry


@pytest.mark.timeout(30)
def test_bad_credentials_fail_fast_in_one_request(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """A wrong secret raises InvalidCredentials after exactly one authenticate call, no retry."""
    sim = make_simulator(rate_limit_per_minute=None)
    rig = rig_factory(sim, secret="wrong-secret")
    with pytest.raises(InvalidCredentials):
        read_unit(rig.loop, DAY)
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
    assert rig.run.tally.skipped == []


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


# -- a dead page 1 ---------------------------------------------------------------------------


def range_pages(sim: Simulator) -> list[int]:
    """The page of every conversions request the simulator saw, in order."""
    return [e.page for e in sim.ledger.snapshot() if e.endpoint == "range" and e.page is not None]


@pytest.mark.timeout(30)
def test_a_dead_page_one_costs_one_page_not_the_day(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """Page 1 fails every attempt: page 2 sizes the day, 1,400 of 1,500 records, one skip."""
    sim = make_simulator(records_per_day=1500, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_503", date=DAY.isoformat(), page=1))
    rig = rig_factory(sim)
    ids, outcome = rig.fetch_unit(DAY)
    assert len(ids) == len(set(ids)) == 1400
    assert set(ids) < sim.expected_ids("default", DAY, DAY)
    assert outcome.skipped == [1] and not outcome.interrupted and not outcome.complete
    assert outcome.pages == 14 and outcome.count == 1500 and outcome.total_pages == 15
    assert [(s.page, s.error_class) for s in rig.run.tally.skipped] == [(1, "http_status")]
    assert rig.run.stop.reason is None
    assert sorted(set(range_pages(sim))) == list(range(1, 16))


@pytest.mark.timeout(30)
def test_the_second_pass_retries_a_dead_page_one_alone(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """Page 1 dead in the main pass, fine later: the second pass asks page 1 only, once."""
    sim = make_simulator(records_per_day=1500, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_500", date=DAY.isoformat(), page=1, attempts=set(range(1, 7))))
    rig = rig_factory(sim)
    ids, outcome = rig.fetch_unit(DAY)
    assert outcome.skipped == [1] and len(ids) == 1400
    before = len(range_pages(sim))
    results, again = second_pass(rig.loop, DAY, outcome.skipped)
    recovered = [item for item in results if isinstance(item, Page)]
    assert range_pages(sim)[before:] == [1]
    assert [p.page for p in recovered] == [1] and len(recovered[0].records) == 100
    assert again.complete
    assert set(ids) | {r["conversion_id"] for r in recovered[0].records} == \
        sim.expected_ids("default", DAY, DAY)
    assert rig.run.tally.skipped == []


@pytest.mark.timeout(30)
def test_thirteen_dead_pages_from_page_one_trip_the_skip_cap(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """Pages 1..13 dead: each is a skip, so the 11th (cap 10) stops the run: skip_cap."""
    sim = make_simulator(records_per_day=2000, rate_limit_per_minute=None)
    for page in range(1, 14):
        sim.add_fault(Fault(kind="http_503", date=DAY.isoformat(), page=page))
    rig = rig_factory(sim)
    ids, outcome = rig.fetch_unit(DAY)
    assert ids == []
    assert rig.run.stop.reason == "skip_cap"
    assert [s.page for s in rig.run.tally.skipped] == list(range(1, 12))
    assert outcome.interrupted and not outcome.complete
    assert max(range_pages(sim)) == 11  # nothing asked after the 11th skip


@pytest.mark.timeout(30)
def test_a_one_page_day_with_a_dead_page_one_is_sized_by_page_two(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """50 records, page 1 dead: page 2 answers count 50 and no records; page 1 alone is skipped."""
    sim = make_simulator(records_per_day=50, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="malformed_json", date=DAY.isoformat(), page=1))
    rig = rig_factory(sim)
    ids, outcome = rig.fetch_unit(DAY)
    assert ids == []
    assert outcome.skipped == [1] and not outcome.interrupted
    assert outcome.count == 50 and outcome.total_pages == 1
    assert [s.page for s in rig.run.tally.skipped] == [1]
    assert sorted(set(range_pages(sim))) == [1, 2]


@pytest.mark.timeout(30)
def test_dead_pages_past_the_end_are_not_skips(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """150 records (2 pages), pages 1..3 dead: page 4 sizes the day; page 3 held nothing, so
    only pages 1 and 2 stay skipped."""
    sim = make_simulator(records_per_day=150, rate_limit_per_minute=None)
    for page in (1, 2, 3):
        sim.add_fault(Fault(kind="http_502", date=DAY.isoformat(), page=page))
    rig = rig_factory(sim)
    ids, outcome = rig.fetch_unit(DAY)
    assert ids == []
    assert outcome.skipped == [1, 2] and outcome.total_pages == 2
    assert [s.page for s in rig.run.tally.skipped] == [1, 2]


# -- small fakes for what the simulator cannot do: a SIGTERM abort, a client that reports waits


class RecordingLog:
    """An EventLog that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.entries.append((level, event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._add("debug", event, fields)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.entries if name == event]


class ScriptedSource:
    """A PageSource of `count` records; `script(page, attempt)` returns an error to raise."""

    def __init__(self, count: int, script: Callable[[int, int], FetchError | None]) -> None:
        self.count = count
        self.script = script
        self.attempts: collections.Counter[int] = collections.Counter()

    def fetch_page(self, start: dt.date, end: dt.date, page: int, limit: int) -> Page:
        self.attempts[page] += 1
        error = self.script(page, self.attempts[page])
        if error is not None:
            raise error
        pages = max(1, -(-self.count // limit))
        first = (page - 1) * limit
        records = [{"conversion_id": i} for i in range(first, min(first + limit, self.count))]
        return Page(page=page, limit=limit, count=self.count,
                    next_page=page + 1 if page < pages else None, records=records)


@pytest.fixture
def scripted_loop() -> Iterator[Any]:
    """`scripted_loop(source, concurrency=1, sleep=None)`: a loop over a ScriptedSource (a
    window of 2 x concurrency pages), its run's stop and tally, log and recorded sleeps."""
    windows: list[Window] = []

    def factory(source: ScriptedSource, *, concurrency: int = 1,
                sleep: Callable[[float], object] | None = None
                ) -> tuple[FetchLoop, RunShare, RecordingLog, list[float]]:
        run = run_share(10)
        log = RecordingLog()
        sleeps: list[float] = []
        loop, window = make_loop(source, run, sleep=sleep or sleeps.append,
                                 concurrency=concurrency, depth=2 * concurrency, log=log)
        windows.append(window)
        return loop, run, log, sleeps

    yield factory
    for window in windows:
        window.close()


def assert_nothing_counted(run: RunShare, log: RecordingLog) -> None:
    assert run.tally.skipped == []
    assert run.tally.errors == {}
    assert log.named("page_retry") == [] and log.named("page_skipped") == []


# -- SIGTERM's requests ------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_requests_cut_by_sigterm_are_interrupted_not_skipped(scripted_loop: Any,
                                                             concurrency: int) -> None:
    """After abort_all every request raises RequestInterrupted: no skip, no retry, no error
    counted, no page_retry/page_skipped line; the outcome says interrupted."""
    run_box: list[RunShare] = []
    aborted = False

    def script(page: int, attempt: int) -> FetchError | None:
        nonlocal aborted
        if page == 3:
            aborted = True
            run_box[0].stop.request(StopReason.INTERRUPTED)  # what the SIGTERM handler does
        return RequestInterrupted("request cut short: the job is stopping") if aborted else None

    source = ScriptedSource(1000, script)
    loop, run, log, sleeps = scripted_loop(source, concurrency=concurrency)
    run_box.append(run)
    results, outcome = read_unit(loop, DAY)
    pages = [item.page for item in results if isinstance(item, Page)]
    assert outcome.interrupted and outcome.skipped == [] and not outcome.complete
    assert 3 not in pages and 1 in pages
    assert sleeps == []
    assert_nothing_counted(run, log)
    assert source.attempts[3] == 1


@pytest.mark.timeout(30)
def test_any_failure_while_the_run_stops_is_interrupted(scripted_loop: Any) -> None:
    """A timeout raised once the stop flag is up is not retried, counted or skipped."""
    run_box: list[RunShare] = []

    def script(page: int, attempt: int) -> FetchError | None:
        if page == 2:
            run_box[0].stop.request(StopReason.INTERRUPTED)
            return RequestTimeout("request exceeded 30s")
        return None

    source = ScriptedSource(500, script)
    loop, run, log, sleeps = scripted_loop(source)
    run_box.append(run)
    _, outcome = read_unit(loop, DAY)
    assert outcome.interrupted and outcome.skipped == []
    assert source.attempts[2] == 1 and sleeps == []
    assert_nothing_counted(run, log)


@pytest.mark.timeout(30)
def test_a_page_in_back_off_when_the_run_stops_is_not_sent_again_nor_skipped(
        scripted_loop: Any) -> None:
    """A stop during a retry wait: the retry is never sent and the page is not a skip."""
    run_box: list[RunShare] = []

    def stop_while_waiting(seconds: float) -> None:
        run_box[0].stop.request(StopReason.INTERRUPTED)

    source = ScriptedSource(300, lambda page, attempt: HTTPStatusError("HTTP 500", status=500)
                            if page == 2 else None)
    loop, run, log, _ = scripted_loop(source, sleep=stop_while_waiting)
    run_box.append(run)
    _, outcome = read_unit(loop, DAY)
    assert outcome.interrupted and outcome.skipped == []
    assert source.attempts[2] == 1
    assert run.tally.skipped == [] and log.named("page_skipped") == []
    assert run.tally.errors == {"http_status": 1}  # the failure before the stop was real


# -- an unreachable API ------------------------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(30)
def test_a_closed_port_raises_api_unreachable_after_three_attempts() -> None:
    """Nothing listens: three refused connections, waits 10 and 20 (injected), ApiUnreachable,
    the run stopped as fatal; nothing skipped."""
    http = HttpClient(timeout=2.0, connect_timeout=2.0)
    client = AccountClient(base_url=f"http://127.0.0.1:{closed_port()}", key="general",
                           secret="demo-secret", http=http,
                           limiter=RateLimiter(per_minute=100_000))
    run = run_share(10)
    sleeps: list[float] = []
    loop, _ = make_loop(client, run, sleep=sleeps.append)
    started = time.monotonic()
    try:
        with pytest.raises(ApiUnreachable, match="none has ever reached the API"):
            read_unit(loop, DAY)
    finally:
        http.close()
    assert time.monotonic() - started < 5
    assert sleeps == [10, 20]
    assert run.tally.errors == {"network": 3}
    assert run.stop.reason == "fatal"
    assert run.tally.skipped == []


@pytest.mark.timeout(30)
def test_connection_failures_after_a_success_are_ordinary_retries(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """One day fetched, then the server goes away: refused connections are retried with the
    full back-off and skipped, never ApiUnreachable."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    rig = rig_factory(sim, max_skipped=1)
    ids, outcome = rig.fetch_unit(DAY)
    assert outcome.complete and len(ids) == 300
    sim.stop()
    _, outcome = rig.fetch_unit(DAY + dt.timedelta(days=1))
    assert rig.sleeps == [10, 20, 30, 40, 60] * 2
    assert [(s.page, s.error_class) for s in rig.run.tally.skipped] == [(1, "network"), (2, "network")]
    assert rig.run.stop.reason == "skip_cap"
    assert outcome.interrupted


@pytest.mark.timeout(30)
def test_other_answers_between_refusals_keep_the_account_reachable(scripted_loop: Any) -> None:
    """Refused, a 503, refused, refused: not three refusals in a row, so no ApiUnreachable."""
    kinds = {1: ConnectFailed("refused"), 2: HTTPStatusError("HTTP 503", status=503),
             3: ConnectFailed("refused"), 4: ConnectFailed("refused")}
    source = ScriptedSource(100, lambda page, attempt: kinds.get(attempt))
    loop, run, _, sleeps = scripted_loop(source)
    results, _ = read_unit(loop, DAY)
    assert [item.page for item in results if isinstance(item, Page)] == [1]
    assert source.attempts[1] == 5 and len(sleeps) == 4
    assert run.tally.errors == {"network": 3, "http_status": 1}


# -- honest page durations ---------------------------------------------------------------------


class SteppedClock:
    """Time that passes only when slept on: waits cost nothing but show on the clock, and a
    request takes no time on it, so what the throttle makes a page wait is exact whatever the
    machine's load (with real time in it, a request slowed by load ate into the pacing)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += seconds


@pytest.mark.timeout(30)
def test_page_durations_leave_out_the_throttle_wait(make_simulator, rig_factory) -> None:  # type: ignore[no-untyped-def]
    """At 60 requests a minute each page waits 1 s for the throttle: that shows as pacing_ms
    (pacing by design, not trouble: wait_ms stays 0), while duration_ms is the request alone
    (retries too), without the throttle's wait."""
    sim = make_simulator(records_per_day=400, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_500", date=DAY.isoformat(), page=3, attempts={1}))
    clock = SteppedClock()
    log = RecordingLog()
    limiter = RateLimiter(per_minute=60, min_interval=0.5, clock=clock, sleep=clock.sleep)
    rig = rig_factory(sim, limiter=limiter, log=log, clock=clock)  # one clock, as in the job
    ids, outcome = rig.fetch_unit(DAY)
    assert outcome.complete and len(ids) == 400
    fetched = log.named("page_fetched")
    assert [f["page"] for f in fetched] == [1, 2, 3, 4]
    for entry in [*fetched[1:], *log.named("page_retry")]:
        assert entry["pacing_ms"] >= 990, entry
        assert entry["wait_ms"] == 0, entry
        assert entry["duration_ms"] < 900, entry
    assert len(log.named("page_retry")) == 1
    assert clock.offset >= 4.0  # four sends after the first, one second apart


def _waits(log: RecordingLog) -> tuple[int, int]:
    """Total pacing_ms and wait_ms over the pages fetched."""
    fetched = log.named("page_fetched")
    return sum(f["pacing_ms"] for f in fetched), sum(f["wait_ms"] for f in fetched)


@pytest.mark.timeout(60)
def test_steady_pacing_through_a_deep_window_is_pacing_not_waiting(make_simulator,  # type: ignore[no-untyped-def]
                                                                    rig_factory) -> None:
    """Throttle-bound (fast answers, 8 pages handed out per 2 slots, as the job does): pages
    queue for seconds, and nearly all of it is reported as pacing_ms, not wait_ms."""
    sim = make_simulator(records_per_day=3000, rate_limit_per_minute=None)
    log = RecordingLog()
    rig = rig_factory(sim, concurrency=2, depth=8, log=log,
                      limiter=RateLimiter(per_minute=600))  # a send every 0.1 s
    ids, outcome = rig.fetch_unit(DAY)
    assert outcome.complete and len(ids) == 3000
    pacing, waiting = _waits(log)
    assert max(f["pacing_ms"] for f in log.named("page_fetched")) >= 500  # pages did queue
    assert waiting <= 0.1 * pacing, (pacing, waiting)


@pytest.mark.timeout(60)
def test_answers_slower_than_the_pace_show_as_wait_beyond_pacing(make_simulator,  # type: ignore[no-untyped-def]
                                                                 rig_factory) -> None:
    """Latency-bound (answers take 0.3 s, the throttle would allow one every 0.01 s): pages
    queue for slots held by slow requests, and that is reported as wait_ms, not pacing."""
    sim = make_simulator(records_per_day=2000, rate_limit_per_minute=None, latency=0.3)
    log = RecordingLog()
    rig = rig_factory(sim, concurrency=2, depth=8, log=log,
                      limiter=RateLimiter(per_minute=6000))
    ids, outcome = rig.fetch_unit(DAY)
    assert outcome.complete and len(ids) == 2000
    pacing, waiting = _waits(log)
    assert waiting >= 1000 and waiting >= 5 * pacing, (pacing, waiting)


# -- currency ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("currency", [None, "USD", "MYR"])
def test_every_conversions_request_carries_the_currency(make_simulator, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                        currency: str | None) -> None:
    """AccountClient(currency=X) sends filters[preferred_currency]=X on every conversions
    request, a retried one and one repeated after a token renewal included; None sends none."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_502", date=DAY.isoformat(), page=2, attempts={1}))
    sim.add_fault(Fault(kind="token_revoked", date=DAY.isoformat(), page=3, attempts={1}))
    with HttpClient(timeout=2.0) as http:
        client = AccountClient(base_url=sim.base_url, key="general", secret="demo-secret",
                               http=http, limiter=RateLimiter(per_minute=100_000),
                               currency=currency)
        loop, _ = make_loop(client, run_share(10), sleep=lambda seconds: None)
        results, outcome = read_unit(loop, DAY)
        records = [r for item in results if isinstance(item, Page) for r in item.records]
    assert outcome.complete and len(records) == 250
    entries = [e for e in sim.ledger.snapshot() if e.endpoint == "range"]
    assert len(entries) == 5  # 3 pages, one retry, one repeat after the token renewal
    assert {e.preferred_currency for e in entries} == {currency}
    expected = currency or sim.local_currency("default")
    assert {r["currency"] for r in records} == {expected}


# -- the page plan on canned pages -------------------------------------------------------------


def canned(number: int, count: int, *, limit: int = 100, last: int | None = None) -> Page:
    """Page `number` of a query of `count` records; `last` is the page whose nextPage is None
    (by default the last page `count` gives)."""
    pages = max(1, -(-count // limit))
    last = pages if last is None else last
    return Page(page=number, limit=limit, count=count,
                next_page=number + 1 if number < last else None, records=[])


def dead(number: int) -> SkippedPage:
    return SkippedPage("default", DAY.isoformat(), number, 6, "http_status", "HTTP 503")


def hand_out(plan: Any) -> list[int]:
    """Every page the plan lets out now."""
    numbers = []
    while (number := plan.next_page()) is not None:
        numbers.append(number)
    return numbers


def test_page_one_goes_alone_and_sizes_the_read() -> None:
    """Page 1 is handed out alone; its count (450: 5 pages) lets pages 2..5 out at once."""
    plan = PagePlan()
    assert plan.sizing and hand_out(plan) == [1]
    assert plan.update_state(1, canned(1, 450)) == []
    assert not plan.sizing and hand_out(plan) == [2, 3, 4, 5]
    for number in (4, 2, 5):
        assert plan.update_state(number, canned(number, 450)) == []
    assert not plan.finished and plan.pending == 1
    plan.update_state(3, canned(3, 450))
    assert plan.finished and not plan.has_next_page
    assert plan.outcome == UnitOutcome(pages=5, count=450, total_pages=5)


def test_a_dead_page_one_is_probed_past_until_a_page_answers() -> None:
    """Pages 1 and 2 dead: page 2, then 3, are probed alone (Probe notes); page 3 sizes the
    day; the dead pages stay skipped."""
    plan = PagePlan()
    assert hand_out(plan) == [1]
    assert plan.update_state(1, dead(1)) == [Probe(2, dead=1)]
    assert hand_out(plan) == [2]
    assert plan.update_state(2, dead(2)) == [Probe(3, dead=2)]
    assert hand_out(plan) == [3]
    plan.update_state(3, canned(3, 400))
    assert hand_out(plan) == [4]
    plan.update_state(4, canned(4, 400))
    assert plan.finished
    assert plan.outcome == UnitOutcome(pages=2, skipped=[1, 2], count=400, total_pages=4)


def test_dead_pages_past_the_end_are_no_skips() -> None:
    """150 records, pages 1..3 dead, page 4 answers: page 3 held nothing (PastTheEnd), pages
    1 and 2 stay skipped, nothing more is asked."""
    plan = PagePlan()
    for number in (1, 2, 3):
        assert hand_out(plan) == [number]
        plan.update_state(number, dead(number))
    assert hand_out(plan) == [4]
    assert plan.update_state(4, canned(4, 150)) == [PastTheEnd(3)]
    assert plan.finished and hand_out(plan) == []
    assert plan.outcome.skipped == [1, 2] and plan.outcome.total_pages == 2


def test_count_drift_rereads_from_page_one_at_most_three_times() -> None:
    """The count grows on every page: each read ends in a Reread from page 1, the fourth read
    in CountUnstable(3); every read's pages count."""
    plan = PagePlan()
    notes: list[Any] = []
    count = 300
    while not plan.finished:
        for number in hand_out(plan):
            count += 1
            notes += plan.update_state(number, canned(number, count))
    assert [n for n in notes if isinstance(n, Reread | CountUnstable)] == \
        [Reread(), Reread(), Reread(), CountUnstable(3)]
    assert sum(isinstance(n, CountChanged) for n in notes) == 4  # the first change of each read
    assert plan.outcome.rereads == 3 and plan.outcome.complete
    assert plan.outcome.pages == 4 * 4  # four reads of 4 pages (the count passed 300)


def test_one_reread_that_sees_a_stable_count_completes() -> None:
    """The count changes on page 2 of the first read only: one re-read, then the plan ends."""
    plan = PagePlan()
    counts = iter([300, 307, 307, 307, 307, 307, 307, 307])
    notes: list[Any] = []
    while not plan.finished:
        for number in hand_out(plan):
            notes += plan.update_state(number, canned(number, next(counts)))
    assert notes == [CountChanged(300, 307, 2), Reread()]
    assert plan.outcome == UnitOutcome(pages=3 + 4, rereads=1, count=307, total_pages=4)


def test_next_page_and_count_disagreeing_is_a_reread() -> None:
    """Page 1 says nextPage None while its count says 3 pages: the read ends at page 1 and
    the query is read again."""
    plan = PagePlan()
    hand_out(plan)
    assert plan.update_state(1, canned(1, 300, last=1)) == [Reread()]
    assert hand_out(plan) == [1] and plan.outcome.rereads == 1


def test_a_read_with_skips_is_not_read_again() -> None:
    """A count change in a read that also skipped a page: no re-read, the skip is the outcome."""
    plan = PagePlan()
    hand_out(plan)
    plan.update_state(1, canned(1, 300))
    assert hand_out(plan) == [2, 3]
    plan.update_state(2, dead(2))
    assert plan.update_state(3, canned(3, 301)) == [CountChanged(300, 301, 3)]
    assert plan.finished and plan.outcome.skipped == [2] and plan.outcome.rereads == 0


def test_a_plan_cut_short_or_interrupted_ends_interrupted() -> None:
    """The run stops with pages 4 and 5 never asked: cut_short ends it interrupted, the pages
    that answered counted; an Interrupted page ends its plan interrupted too."""
    plan = PagePlan()
    hand_out(plan)
    plan.update_state(1, canned(1, 500))
    assert plan.next_page() == 2 and plan.next_page() == 3
    plan.update_state(2, canned(2, 500))
    plan.update_state(3, canned(3, 500))
    assert not plan.finished and plan.pending == 0 and plan.has_next_page
    plan.cut_short()
    assert plan.finished and plan.outcome.interrupted and plan.outcome.pages == 3
    other = PagePlan()
    hand_out(other)
    other.update_state(1, InterruptedPage(1))
    assert other.finished and other.outcome.interrupted and other.outcome.pages == 0


def test_the_last_round_is_the_first_reads_last_pages() -> None:
    """10 pages, 2 request slots: the plan is in its last round once at most 2 pages are left
    to hand out, not before it is sized."""
    plan = PagePlan()
    assert not plan.in_last_round(2)
    hand_out(plan)
    assert not plan.in_last_round(2)
    plan.update_state(1, canned(1, 1000))
    for _ in range(7):
        assert not plan.in_last_round(2)
        plan.next_page()
    assert plan.in_last_round(2)


def test_the_second_pass_asks_each_skipped_page_again() -> None:
    """RetryPlan([3, 1]): both go out at once; 1 answers (Recovered), 3 fails again and stays
    skipped; a plan cut short before its pages went out is interrupted."""
    plan = RetryPlan([3, 1])
    assert not plan.sizing and hand_out(plan) == [1, 3]
    assert plan.update_state(1, canned(1, 250)) == [Recovered(1)]
    assert plan.update_state(3, dead(3)) == []
    assert plan.finished
    assert plan.outcome == UnitOutcome(pages=1, skipped=[3], count=250, total_pages=3)
    stopped = RetryPlan([2])
    stopped.cut_short()
    assert stopped.finished and stopped.outcome.interrupted


def test_a_page_listed_twice_is_one_skip() -> None:
    """The second pass failing a listed page again keeps one entry and spends no more of the
    skip cap."""
    run = run_share(1)
    run.tally.add_skip(dead(2))
    run.tally.add_skip(dead(2))
    assert [s.page for s in run.tally.skipped] == [2] and not run.stop.stopped
    run.tally.add_skip(dead(3))
    assert run.stop.reason == "skip_cap"


# -- the window and the account loop, on a slow fake source ------------------------------------


class SlowSource:
    """A PageSource answering after `latency` s, `count` records a day; it logs ("sent" |
    "answered", day, page) in order (the Recorder adds "storing" / "stored") and the most
    requests it had in flight at once.
    `fail(day, page)` says how many first attempts of a page fail with a 500."""

    def __init__(self, count: int, latency: float, fail: Callable[[dt.date, int], int]
                 = lambda day, page: 0) -> None:
        self.count, self.latency, self.fail = count, latency, fail
        self.log: list[tuple[str, dt.date, int]] = []
        self.in_flight = self.most_in_flight = 0
        self.attempts: collections.Counter[tuple[dt.date, int]] = collections.Counter()
        self.lock = threading.Lock()

    def fetch_page(self, start: dt.date, end: dt.date, page: int, limit: int) -> Page:
        with self.lock:
            self.attempts[(start, page)] += 1
            failing = self.attempts[(start, page)] <= self.fail(start, page)
            self.log.append(("sent", start, page))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.latency)
        with self.lock:
            self.in_flight -= 1
            if failing:
                raise HTTPStatusError("HTTP 500", status=500)
            self.log.append(("answered", start, page))
        pages = max(1, -(-self.count // limit))
        return Page(page=page, limit=limit, count=self.count,
                    next_page=page + 1 if page < pages else None,
                    records=[{"conversion_id": f"{start}-{page}"}])

    def index(self, kind: str, day: dt.date, page: int) -> int:
        return self.log.index((kind, day, page))


class Recorder:
    """UnitHooks that log what happened, in order; `end` takes `store_seconds` and raises
    `fail_store` for the first day."""

    def __init__(self, source: SlowSource, *, store_seconds: float = 0.0,
                 fail_store: Exception | None = None) -> None:
        self.source, self.store_seconds, self.fail_store = source, store_seconds, fail_store
        self.events: list[tuple[str, dt.date]] = []
        self.outcomes: dict[dt.date, UnitOutcome] = {}
        self.answered_at_start: dict[dt.date, int] = {}
        self._lock = threading.Lock()

    def _add(self, kind: str, query: Query) -> None:
        with self._lock:
            self.events.append((kind, query.start))

    def start(self, query: Query) -> None:
        with self.source.lock:
            self.answered_at_start[query.start] = sum(
                1 for kind, day, _ in self.source.log if kind == "answered" and day == DAY)
        self._add("start", query)

    def page(self, query: Query, page: Page) -> None:
        pass

    def end(self, query: Query, outcome: UnitOutcome) -> None:
        with self.source.lock:
            self.source.log.append(("storing", query.start, 0))
        time.sleep(self.store_seconds)
        if self.fail_store is not None and query.start == DAY:
            raise self.fail_store
        self.outcomes[query.start] = outcome
        with self.source.lock:
            self.source.log.append(("stored", query.start, 0))
        self._add("stored", query)

    def missing(self, query: Query) -> None:
        self._add("missing", query)

    def at(self, kind: str, day: dt.date) -> int:
        return self.events.index((kind, day))


DAYS = [DAY + dt.timedelta(days=n) for n in range(3)]


def drive(loop: FetchLoop, queries: list[Query], recorder: Recorder) -> list[PageArrived]:
    """Consume the loop's events as the job's account run does: each to the recorder, a failure
    in handling one handed back to the loop (`fail`); the pages that arrived."""
    arrived: list[PageArrived] = []
    for event in loop.run(queries):
        try:
            match event:
                case DayStarted(query=query):
                    recorder.start(query)
                case PageArrived(query=query, page=page):
                    arrived.append(event)
                    recorder.page(query, page)
                case DayEnded(query=query, outcome=outcome):
                    recorder.end(query, outcome)
                case DayNotStarted(query=query):
                    recorder.missing(query)
        except Exception as exc:
            loop.fail(event.query, exc)
    return arrived


def account_loop(source: SlowSource, *, concurrency: int = 2, depth: int = 4,
                 backoff: float = 0.0) -> tuple[FetchLoop, Window, RunShare]:
    """The job's shape: a threaded window of `depth` pages, 2 more workers for sizing pages."""
    run = run_share(10)
    fetch = PageFetch(client=source, policy=RetryPolicy(backoff=(backoff,), jitter=0.0),
                      stop=run.stop, tally=run.tally, account="default")
    window = Window(fetch, concurrency=concurrency, depth=depth, threads=depth + 2)
    loop = FetchLoop(window=window, stop=run.stop, tally=run.tally, account="default",
                     concurrency=concurrency)
    return loop, window, run


@pytest.mark.timeout(30)
def test_the_window_keeps_the_request_slots_busy_while_a_page_backs_off() -> None:
    """2 request slots, 6 pages handed out: never more than 2 requests at once; page 2 waits
    0.3 s after its failure without a slot, and pages 3-12 are answered in that wait; results
    come back in the order the source answered them."""
    source = SlowSource(1200, 0.02, fail=lambda day, page: 1 if page == 2 else 0)
    loop, window, _ = account_loop(source, depth=6, backoff=0.3)
    with window:
        arrivals = list(loop.pages(Query(DAY, DAY), PagePlan()))
    assert source.most_in_flight == 2
    answered = [(day, page) for kind, day, page in source.log if kind == "answered"]
    assert [(a.query.start, a.page) for a in arrivals] == answered
    retry_sent = [i for i, entry in enumerate(source.log) if entry == ("sent", DAY, 2)][1]
    assert all(source.index("answered", DAY, page) < retry_sent for page in range(3, 13))
    assert answered[-1] == (DAY, 2)


@pytest.mark.timeout(30)
def test_the_next_day_starts_in_the_last_round_and_two_days_at_most_are_open() -> None:
    """20 pages a day, 2 slots, a window of 4: day 2 starts once day 1 has at most 2 pages to
    hand out (so at least 13 of day 1 answered, day 1 not yet stored) and its first page goes
    out before day 1's last one is answered; while day 1 is stored (0.2 s) day 2's window is
    answered; day 3 starts after day 1 is stored (two days open at most)."""
    source = SlowSource(2000, 0.01)
    recorder = Recorder(source, store_seconds=0.2)
    loop, window, run = account_loop(source)
    with window:
        arrivals = drive(loop, [Query(day, day) for day in DAYS], recorder)
    assert len(arrivals) == 60 and run.tally.pages == 60
    assert recorder.answered_at_start[DAYS[1]] >= 20 - 2 - 4 - 1
    assert recorder.at("start", DAYS[1]) < recorder.at("stored", DAYS[0])
    # "day 1's last one": the last of its pages to be answered (pages 19 and 20 race for it)
    last_answer = max(i for i, (kind, day, _page) in enumerate(source.log)
                      if kind == "answered" and day == DAYS[0])
    assert source.index("sent", DAYS[1], 1) < last_answer
    storing = source.log[source.index("storing", DAYS[0], 0):source.index("stored", DAYS[0], 0)]
    assert sum(kind == "answered" and day == DAYS[1] for kind, day, _ in storing) >= 4
    assert recorder.at("stored", DAYS[0]) < recorder.at("start", DAYS[2])
    assert all(recorder.outcomes[day] == UnitOutcome(pages=20, count=2000, total_pages=20)
               for day in DAYS)


@pytest.mark.timeout(30)
def test_a_store_failing_stops_the_account_and_is_raised() -> None:
    """Storing day 1 raises StorageError: the run stops as fatal, day 2 (open beside it) ends
    interrupted, day 3 never starts, and the error comes out of the loop."""
    source = SlowSource(2000, 0.01)
    recorder = Recorder(source, fail_store=StorageError("403 on upload"))
    loop, window, run = account_loop(source)
    with window, pytest.raises(StorageError, match="403"):
        drive(loop, [Query(day, day) for day in DAYS], recorder)
    assert run.stop.reason == "fatal"
    assert recorder.outcomes[DAYS[1]].interrupted
    assert ("start", DAYS[2]) not in recorder.events
    assert ("missing", DAYS[2]) not in recorder.events


@pytest.mark.timeout(30)
def test_days_not_started_when_the_run_stops_are_missing() -> None:
    """A stop (SIGTERM) while day 1's page 2 is fetched: day 1 ends interrupted, days 2 and 3
    are reported missing and never requested."""
    run_box: list[RunShare] = []

    def stop_on_page_two(day: dt.date, page: int) -> int:
        if page == 2:
            run_box[0].stop.request(StopReason.INTERRUPTED)
        return 0

    source = SlowSource(2000, 0.01, fail=stop_on_page_two)
    recorder = Recorder(source)
    loop, window, run = account_loop(source)
    run_box.append(run)
    with window:
        drive(loop, [Query(day, day) for day in DAYS], recorder)
    assert recorder.outcomes[DAYS[0]].interrupted
    assert [e for e in recorder.events if e[0] == "missing"] == \
        [("missing", DAYS[1]), ("missing", DAYS[2])]
    assert {day for _, day, _ in source.log} == {DAYS[0]}
