"""Storage held to the API's standard (issue 18): the real job (subprocesses) and the real
google-cloud-storage client against gcp-storage-emulator behind the fault proxy. A hard
deadline on every storage request (STORAGE_TIMEOUT), a fast exit when storage dies, changes
counted across a task's attempts, storage configuration errors exit 2, storage retries
counted and logged. Sink-level checks first (fast, in process), then the job end to end."""

from __future__ import annotations

import collections
import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.config import load_settings
from app.errors import StorageError
from app.simulator import Simulator
from app.sinks import GCSSink, StorageRetry
from app.sinks.transport import DeadlineSession
from app.store import CHANGES_KEY, DayChange, Snapshot, SnapshotMeta, recorded_change
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.gcs_fixtures import GcsEmulator, make_test_gcs_sink
from tests.support.jobrun import REPO, job_env

START, END = "2025-04-01", "2025-04-03"
DAYS = ["2025-04-01", "2025-04-02", "2025-04-03"]
RANGE = f"{START}_{END}"


# --- running the job with the time each event was seen -------------------------------------


@dataclass
class TimedRun:
    """A finished job subprocess, with when (time.monotonic()) each event was first seen."""

    code: int
    events: list[dict[str, Any]]
    stderr: str
    started: float
    ended: float
    seen: dict[str, float] = field(default_factory=dict)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


def run_timed(env: dict[str, str], *, timeout: float = 120) -> TimedRun:
    """`python -m app` as Cloud Run starts it, its log lines read as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read() if proc.stderr else ""),
                              daemon=True)
    reader.start()
    events: list[dict[str, Any]] = []
    seen: dict[str, float] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.strip():
                continue
            entry = json.loads(line)
            events.append(entry)
            seen.setdefault(str(entry.get("event")), time.monotonic())
        code = proc.wait()
    finally:
        killer.cancel()
    ended = time.monotonic()
    reader.join(timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return TimedRun(code, events, "".join(stderr), started, ended, seen)


@pytest.fixture
def sink(gcs_emulator: GcsEmulator) -> Iterator[GCSSink]:
    """A sink straight on the emulator (no proxy), to read what the job stored."""
    direct = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket)
    yield direct
    direct.close()


def _env(sim: Simulator, gcs: GcsEmulator, execution: str, **extra: str) -> dict[str, str]:
    return {**job_env(sim.base_url, START, END, **gcs.env()), "CLOUD_RUN_JOB": "ia",
            "CLOUD_RUN_EXECUTION": execution, **extra}


def _rows(sink: GCSSink, name: str) -> list[dict[str, Any]]:
    data = sink.get_bytes(name)
    assert data is not None, f"{name} missing"
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]


def _summary(sink: GCSSink, execution: str) -> dict[str, Any]:
    data = sink.get_bytes(f"runs/{RANGE}/{execution}/summary.json")
    assert data is not None, "summary.json missing"
    summary: dict[str, Any] = json.loads(data)
    return summary


def _store(sink: GCSSink) -> dict[str, dict[int, str]]:
    """The day store: date -> {conversion_id: status}."""
    return {d: {r["conversion_id"]: r["conversion_status"]
                for r in _rows(sink, f"days/account=default/date={d}/conversions.ndjson.gz")}
            for d in DAYS}


def _assert_exactly_once(sim: Simulator, sink: GCSSink, execution: str) -> dict[str, Any]:
    """The execution succeeded; its result and the day store hold every record once."""
    summary = _summary(sink, execution)
    assert summary["status"] == "succeeded", summary.get("status")
    ids = [r["conversion_id"] for r in _rows(sink, f"runs/{RANGE}/{execution}/conversions.ndjson.gz")]
    expected = sim.expected_ids("default", DAYS[0], DAYS[-1])
    assert len(ids) == len(set(ids)) == summary["records"], "duplicates in the result"
    assert set(ids) == expected, "records lost"
    stored = [i for day in _store(sink).values() for i in day]
    assert len(stored) == len(set(stored)) and set(stored) == expected
    return summary


def _range_requests(sim: Simulator) -> list[Any]:
    return [e for e in sim.ledger.snapshot() if e.endpoint == "range"]


# --- the sink: deadline, failure, budgets (in process) ---------------------------------------


def test_storage_timeout_is_a_setting_with_its_unit() -> None:
    """STORAGE_TIMEOUT defaults to 60 s, takes seconds, and a bad value names the variable."""
    from app.config import InvalidSetting, build_parser

    base = {"INVOLVE_ASIA_API_SECRET": "s", "START_DATE": START, "END_DATE": END,
            "GCS_BUCKET": "some-bucket"}
    assert load_settings(base).storage_timeout == 60.0
    assert load_settings({**base, "STORAGE_TIMEOUT": "2.5"}).storage_timeout == 2.5
    with pytest.raises(InvalidSetting) as caught:
        load_settings({**base, "STORAGE_TIMEOUT": "0"})
    assert caught.value.variable == "STORAGE_TIMEOUT"
    text = " ".join(build_parser().format_help().split())  # as read, whatever the wrapping
    assert "--storage-timeout STORAGE_TIMEOUT" in text
    assert "hard cap on one storage request" in text


@pytest.mark.timeout(30)
def test_a_dripping_answer_is_cut_at_the_deadline_and_retried(gcs_emulator: GcsEmulator) -> None:
    """A metadata answer dripped one byte per 0.5 s is cut at the request's deadline (2 s),
    not read for minutes; the retry succeeds and is reported as a storage retry."""
    with FaultProxy(gcs_emulator.host, [Rule("drip", on="metadata", nth={1}, interval=0.5)]) as proxy:
        sink = make_test_gcs_sink(proxy.url, gcs_emulator.bucket, request_timeout=2)
        retries: list[StorageRetry] = []
        sink.health.watch(on_retry=retries.append)
        try:
            sink.put_bytes("r/x", b"hello")
            started = time.monotonic()
            info = sink.stat("r/x")
            elapsed = time.monotonic() - started
        finally:
            sink.close()
        time.sleep(1.2)  # the proxy notices the hang-up at its next byte
        drips = list(proxy.drips)
    assert info is not None and info.size == 5
    assert 1.9 < elapsed < 4, elapsed
    assert [r.operation for r in retries] == ["stat"]
    assert "exceeded 2s" in retries[0].error
    (drip,) = drips
    assert not drip.completed and drip.sent < 10 < drip.size


@pytest.mark.timeout(30)
def test_once_storage_failed_nothing_more_is_sent_and_the_last_try_is_one_request(
        gcs_emulator: GcsEmulator) -> None:
    """An operation that uses up its retries ends storage for the sink: listeners hear it once,
    a request in flight elsewhere is cut, later operations fail unsent (deletes included),
    and `last_try()` is a fresh sink that sends each operation once."""
    with FaultProxy(gcs_emulator.host, []) as proxy:
        sink = make_test_gcs_sink(proxy.url, gcs_emulator.bucket, request_timeout=20,
                                  retry_deadline=0.5)
        failures: list[StorageError] = []
        sink.health.watch(on_failure=failures.append)
        try:
            sink.put_bytes("r/a", b"a")
            # A read that hangs (a drip of 20 s+) in another thread, cut by the failure.
            proxy.set_rules([Rule("drip", on="metadata", nth={1}, interval=1.0),
                             Rule("503", on="upload")])
            outcome: list[BaseException | None] = []

            def slow_stat() -> None:
                try:
                    sink.stat("r/a")
                    outcome.append(None)
                except StorageError as exc:
                    outcome.append(exc)

            reader = threading.Thread(target=slow_stat)
            reader.start()
            time.sleep(0.5)
            started = time.monotonic()
            with pytest.raises(StorageError, match="upload failed") as caught:
                sink.put_bytes("r/b", b"b")
            reader.join(timeout=5)
            cut_after = time.monotonic() - started
            assert caught.value.status == 503
            assert failures == [caught.value] and sink.health.failure is caught.value
            assert outcome and isinstance(outcome[0], StorageError), outcome
            assert cut_after < 3, cut_after
            sent = len(proxy.events)
            for operation in (lambda: sink.stat("r/a"), lambda: sink.list("r/"),
                              lambda: sink.put_bytes("r/c", b"c"), lambda: sink.delete("r/a")):
                with pytest.raises(StorageError, match="not attempted"):
                    operation()
            assert len(proxy.events) == sent  # nothing was sent
            proxy.set_rules([Rule("503", on="upload", nth={1})])
            final = sink.last_try()
            try:
                with pytest.raises(StorageError, match="upload failed"):
                    final.put_bytes("r/summary.json", b"{}")  # one 503: not retried
                assert proxy.injected("upload")[-1:] == ["503"]
                assert len([e for e in proxy.events[sent:] if e.category == "upload"]) == 1
            finally:
                final.close()
        finally:
            sink.close()


@pytest.mark.timeout(60)
def test_a_failing_delete_is_short_and_never_ends_storage(gcs_emulator: GcsEmulator) -> None:
    """Cleanup: a delete refused (403) fails at once, one answered 503 forever is retried for
    10 s (DELETE_BUDGET), not the 60 s other operations get; either raises StorageError to
    its caller, but storage has not failed for the run: every other operation still works."""
    with FaultProxy(gcs_emulator.host, [Rule("403", on="delete", nth={1}),
                                        Rule("503", on="delete")]) as proxy:
        sink = make_test_gcs_sink(proxy.url, gcs_emulator.bucket, retry_deadline=60)
        try:
            sink.put_bytes("r/a", b"a")
            started = time.monotonic()
            with pytest.raises(StorageError, match="delete failed"):
                sink.delete("r/a")
            refused = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(StorageError, match="delete failed"):
                sink.delete("r/a")
            retried = time.monotonic() - started
            assert sink.health.failure is None
            assert sink.get_bytes("r/a") == b"a"
        finally:
            sink.close()
    print(f"delete refused after {refused:.2f}s, given up after {retried:.1f}s of 503s")
    assert refused < 1
    assert 9 < retried < 12, retried
    assert len(proxy.injected("delete")) > 5


@pytest.mark.timeout(30)
def test_the_storage_session_bounds_token_and_request_under_one_deadline() -> None:
    """A server that accepts and never answers: the session's request ends at its deadline,
    as a retryable timeout; after abort_all() no request is sent at all."""
    import socket

    import requests
    from google.auth.credentials import AnonymousCredentials

    from app.sinks.transport import StorageDeadlineExceeded, StorageRequestAborted

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/storage/v1/b/x/o"
        session = DeadlineSession(AnonymousCredentials(), timeout=0.5)  # type: ignore[no-untyped-call]
        try:
            started = time.monotonic()
            with pytest.raises(StorageDeadlineExceeded):
                session.request("GET", url, timeout=60)  # the caller's 60 s does not stretch it
            assert time.monotonic() - started < 2
            assert isinstance(StorageDeadlineExceeded("x"), requests.Timeout)
            session.abort_all()
            with pytest.raises(StorageRequestAborted, match="not sent"):
                session.request("GET", url)
        finally:
            session.close()


def test_a_snapshot_records_its_executions_changes_across_attempts() -> None:
    """The changes an execution made to a day add up over its attempts, read back only for
    that execution's own snapshot."""
    first = DayChange("a", "2025-04-01", added=3, transitions=collections.Counter({"pending->approved": 2}))
    again = DayChange("a", "2025-04-01", removed=1, transitions=collections.Counter(
        {"pending->approved": 1, "approved->rejected": 1}))
    total = again.plus(first)
    assert total.as_dict() == {"account": "a", "date": "2025-04-01", "added": 3, "removed": 1,
                               "transitions": {"approved->rejected": 1, "pending->approved": 3}}
    from app.sinks import ObjectInfo

    meta = SnapshotMeta(fetched_at=1.0, execution="e1", records=3, complete=True, currency="USD")
    info = ObjectInfo("days/x", "gs://b/days/x", 1, "AAAAAA==", 1,
                      {**meta.to_metadata(), CHANGES_KEY: total.to_metadata()})
    snapshot = Snapshot(info, meta)
    assert recorded_change(snapshot, "a", "2025-04-01", "e1") == total
    assert recorded_change(snapshot, "a", "2025-04-01", "e2") is None
    bare = Snapshot(ObjectInfo("days/x", "gs://b/days/x", 1, "AAAAAA==", 1, meta.to_metadata()), meta)
    assert recorded_change(bare, "a", "2025-04-01", "e1") is None


# --- the job end to end: the five points of issue 18 -----------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_dripping_metadata_answer_costs_storage_timeout_not_minutes(
        make_simulator, gcs_emulator: GcsEmulator, sink: GCSSink) -> None:  # type: ignore[no-untyped-def]
    """Must-show 1: during a refresh, a day snapshot's metadata answer drips one byte per
    0.5 s (about 8 minutes for the whole answer). With STORAGE_TIMEOUT=10 the request is cut
    at 10 s and retried: exit 0 within 45 s, every record once, the retry counted."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    seed = run_timed(_env(sim, gcs_emulator, "seed"))
    assert seed.code == 0, seed.stderr[-2000:]
    sim.advance_validation()
    # Looks 1-3 are the reuse checks; the 4th is the account thread's, replacing day 1.
    rules = [Rule("drip", on="metadata", where="/days/", nth={4}, interval=0.5)]
    with FaultProxy(gcs_emulator.host, rules) as proxy:
        run = run_timed(_env(sim, gcs_emulator, "drip", STORAGE_EMULATOR_HOST=proxy.url,
                             STORAGE_TIMEOUT="10", SNAPSHOT_MAX_AGE="0"), timeout=100)
        time.sleep(0.6)
        drips = list(proxy.drips)
    elapsed = run.ended - run.started
    print(f"must-show 1: exit {run.code} after {elapsed:.1f}s; drip {drips}")
    assert run.code == 0, run.stderr[-2000:]
    assert elapsed < 45, elapsed
    (drip,) = drips
    assert not drip.completed and drip.size > 500  # a whole snapshot's metadata, cut short
    assert 9 < drip.seconds < 13, drip.seconds
    summary = _assert_exactly_once(sim, sink, "drip")
    assert summary["retries"].get("storage", 0) >= 1
    (retry,) = [e for e in run.named("storage_retry") if "exceeded" in e["error"]]
    assert retry["severity"] == "WARNING" and retry["operation"] == "stat"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_storage_refusing_connections_mid_run_exits_1_fast_and_the_retry_completes(
        make_simulator, gcs_emulator: GcsEmulator, sink: GCSSink) -> None:  # type: ignore[no-untyped-def]
    """Must-show 2: storage refuses connections right after the first day snapshot is
    stored. The run stops fetching and storing as soon as one operation used up its retries,
    tries the summary once, and exits 1 (contract: within 3 minutes of the failure). The task
    retry, with storage back, completes exactly once, counting attempt 0's day as its own."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None, latency=0.3)
    rules = [Rule("pass", on="compose", where="/days/", nth={1}, then_down=True)]
    env = _env(sim, gcs_emulator, "dies", STORAGE_TIMEOUT="2", FETCH_CONCURRENCY="1")
    with FaultProxy(gcs_emulator.host, rules) as proxy:
        failed = run_timed({**env, "STORAGE_EMULATOR_HOST": proxy.url}, timeout=100)
        down_at = proxy.down_since
        assert down_at is not None
        tripped = failed.seen.get("storage_failed")
        print(f"must-show 2: exit {failed.code} {failed.ended - down_at:.1f}s after storage went"
              f" down, {failed.ended - (tripped or down_at):.1f}s after the failure")
        assert failed.code == 1, failed.stderr[-2000:]
        assert tripped is not None, [e.get("event") for e in failed.events]
        assert failed.ended - tripped < 30
        assert failed.ended - down_at < 180
        late = [e for e in _range_requests(sim) if e.started > tripped + 1]
        assert late == [], "API requests sent after storage failed"
        (error,) = failed.named("storage_failed")
        assert error["severity"] == "ERROR" and error["error_class"] == "storage"
        assert failed.named("summary_not_written")  # tried once: storage still down
        assert failed.named("run_finished")[-1]["exit_code"] == 1

        proxy.come_up()
        retried = run_timed({**env, "STORAGE_EMULATOR_HOST": proxy.url,
                             "CLOUD_RUN_TASK_ATTEMPT": "1"}, timeout=100)
    assert retried.code == 0, retried.stderr[-2000:]
    summary = _assert_exactly_once(sim, sink, "dies")
    assert summary["reused_days"] == []  # day 1 is this execution's own fetch
    assert summary["changes"]["added"] == 3 * 250  # attempt 0's day counted too
    assert [e["date"] for e in retried.named("snapshot_from_earlier_attempt")] == [DAYS[0]]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["missing_bucket", "403_everywhere"])
def test_storage_configuration_errors_exit_2_naming_gcs_bucket_before_any_api_request(
        make_simulator, gcs_emulator: GcsEmulator, fault: str) -> None:  # type: ignore[no-untyped-def]
    """Must-show 3: a GCS_BUCKET that does not exist, or storage answering 403 to everything,
    is configuration: the start-up probe finds it, exit 2 naming GCS_BUCKET, and no API
    request was sent (Cloud Run does not retry it for nothing)."""
    sim = make_simulator(records_per_day=50, rate_limit_per_minute=None)
    with FaultProxy(gcs_emulator.host, [Rule("403")] if fault == "403_everywhere" else []) as proxy:
        env = _env(sim, gcs_emulator, "config", STORAGE_EMULATOR_HOST=proxy.url)
        if fault == "missing_bucket":
            env["GCS_BUCKET"] = "no-such-bucket-here"
        run = run_timed(env, timeout=50)
    print(f"must-show 3 ({fault}): exit {run.code} after {run.ended - run.started:.1f}s")
    assert run.code == 2, run.stderr[-2000:]
    (entry,) = run.named("storage_config_invalid")
    assert entry["severity"] == "ERROR" and entry["variable"] == "GCS_BUCKET"
    assert entry["error_class"] == "config"
    assert entry["status"] == (404 if fault == "missing_bucket" else 403)
    assert "GCS_BUCKET" in entry["message"]
    assert len(sim.ledger) == 0
    assert not run.named("job_started")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_replace_whose_answer_was_lost_is_counted_by_the_task_retry(
        make_simulator, gcs_emulator: GcsEmulator, sink: GCSSink) -> None:  # type: ignore[no-untyped-def]
    """Must-show 4: in a refresh, day 1's replace lands but its answer is lost, and storage
    stays away until the attempt fails. The healthy task retry finds the snapshot its
    execution wrote: the final summary's added and transitions equal what the day store
    actually underwent, and day 1's changes are logged as `day_changed` once."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None, validation_rate=0.6)
    seed = run_timed(_env(sim, gcs_emulator, "seed"))
    assert seed.code == 0, seed.stderr[-2000:]
    before = _store(sink)
    sim.advance_validation()
    sim.insert_records("default", DAYS[0], 5)
    rules = [Rule("reset_after", on="compose", where="/days/", nth={1}, then_down=True)]
    env = _env(sim, gcs_emulator, "refresh", STORAGE_TIMEOUT="2", SNAPSHOT_MAX_AGE="0")
    with FaultProxy(gcs_emulator.host, rules) as proxy:
        lost = run_timed({**env, "STORAGE_EMULATOR_HOST": proxy.url}, timeout=100)
        assert lost.code == 1, lost.stderr[-2000:]
        assert proxy.injected("compose") == ["reset_after"]
        assert not lost.named("day_changed")  # attempt 0 never heard its replace succeed
        proxy.come_up()
        retried = run_timed({**env, "STORAGE_EMULATOR_HOST": proxy.url,
                             "CLOUD_RUN_TASK_ATTEMPT": "1"}, timeout=100)
    assert retried.code == 0, retried.stderr[-2000:]
    after = _store(sink)
    actual = collections.Counter[str]()
    for d in DAYS:
        actual += collections.Counter(f"{before[d][i]}->{s}" for i, s in after[d].items()
                                      if i in before[d] and before[d][i] != s)
    added = sum(len(set(after[d]) - set(before[d])) for d in DAYS)
    assert sum(actual.values()) > 0 and added == 5
    summary = _assert_exactly_once(sim, sink, "refresh")
    changes = summary["changes"]
    print(f"must-show 4: summary transitions {changes['transitions']}, store {dict(actual)}")
    assert changes["transitions"] == dict(sorted(actual.items()))
    assert changes["added"] == added and changes["removed"] == 0
    assert summary["reused_days"] == []
    logged = collections.Counter[str]()
    for entry in retried.named("day_changed"):
        logged.update(entry["transitions"])
    assert logged == actual  # the status-changes metric sees each change once
    day1 = [e for e in retried.named("day_changed") if e["date"] == DAYS[0]]
    assert len(day1) == 1 and day1[0]["added"] == 5


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_storage_retries_are_counted_and_logged_at_warning(
        make_simulator, gcs_emulator: GcsEmulator, sink: GCSSink) -> None:  # type: ignore[no-untyped-def]
    """Must-show 5: 20 % of storage requests answered 503 or 429: exit 0, every record once,
    `retries.storage` > 0: one WARNING `storage_retry` entry per retry counted (the summary
    counts those before it is written; the cleanup after it may retry and log more)."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    # Every fifth storage request fails: 503 and 429 in turn (the probe's listing included).
    rules = [Rule("503", nth=range(2, 1000, 10)), Rule("429", nth=range(7, 1000, 10))]
    with FaultProxy(gcs_emulator.host, rules) as proxy:
        run = run_timed(_env(sim, gcs_emulator, "faults", STORAGE_EMULATOR_HOST=proxy.url),
                        timeout=100)
        injected = len(proxy.injected())
        requests_seen = len(proxy.events)
    print(f"must-show 5: exit {run.code} after {run.ended - run.started:.1f}s,"
          f" {injected} faults injected in {requests_seen} storage requests")
    assert run.code == 0, run.stderr[-2000:]
    summary = _assert_exactly_once(sim, sink, "faults")
    events = [e.get("event") for e in run.events]
    written = events.index("summary_written")
    warnings = [e for e in run.events[:written] if e.get("event") == "storage_retry"]
    assert injected >= 5
    assert summary["retries"]["storage"] > 0
    assert summary["retries"]["storage"] == len(warnings)
    assert len(run.named("storage_retry")) == injected  # every fault retried, and logged
    assert {w["severity"] for w in run.named("storage_retry")} == {"WARNING"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_kept_snapshot_survives_a_refused_cleanup_delete(
        make_simulator, gcs_emulator: GcsEmulator, sink: GCSSink) -> None:  # type: ignore[no-untyped-def]
    """A refresh whose day 2 stays incomplete keeps the earlier snapshot and deletes its own
    fetch; storage refusing that delete (and the sweep's) is a warning, not a failed run:
    exit 3 with day 2 kept, as without the fault."""
    from app.simulator import Fault

    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    seed = run_timed(_env(sim, gcs_emulator, "seed"))
    assert seed.code == 0, seed.stderr[-2000:]
    sim.add_fault(Fault(kind="http_502", date=DAYS[1], page=2))
    with FaultProxy(gcs_emulator.host, [Rule("403", on="delete")]) as proxy:
        run = run_timed(_env(sim, gcs_emulator, "kept", STORAGE_EMULATOR_HOST=proxy.url,
                             SNAPSHOT_MAX_AGE="0"), timeout=100)
        assert proxy.injected("delete")
    assert run.code == 3, [e for e in run.events if e["severity"] == "ERROR"]
    assert run.named("snapshot_kept") and run.named("cleanup_failed")
    assert not run.named("storage_failed")
    summary = _summary(sink, "kept")
    assert summary["status"] == "partial"
    assert [d["date"] for d in summary["kept_days"]] == [DAYS[1]]
