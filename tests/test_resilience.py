"""Results in GCS that survive crashes, tested with the real job (subprocesses), the simulator
and gcp-storage-emulator behind the real google-cloud-storage client: kill -9 and rerun,
parallel tasks, overlapping executions, storage faults, SIGTERM, Ctrl-C (SIGINT)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.simulator import Fault, Simulator
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.gcs_fixtures import GcsEmulator, make_test_gcs_sink
from tests.support.jobrun import job_env, run_job, start_job

pytestmark = pytest.mark.slow

START, END = "2025-04-01", "2025-04-06"
RANGE = f"{START}_{END}"
DAYS = [dt.date(2025, 4, d) for d in range(1, 7)]
EXECUTION = "ia-x1"
RUN = f"runs/{RANGE}/{EXECUTION}"


@pytest.fixture
def sim(make_simulator) -> Simulator:  # type: ignore[no-untyped-def]
    # 6 days x 3 pages; a little latency so a kill can land inside a run
    return make_simulator(records_per_day=260, rate_limit_per_minute=None, latency=0.04)


@pytest.fixture
def bucket_sink(gcs_emulator: GcsEmulator) -> Iterator[Any]:
    sink = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket)
    yield sink
    sink.close()


def _env(sim: Simulator, gcs: GcsEmulator, **extra: str) -> dict[str, str]:
    return {**job_env(sim.base_url, START, END, **gcs.env()), "CLOUD_RUN_JOB": "ia",
            "CLOUD_RUN_EXECUTION": EXECUTION, **extra}


def _result_rows(sink: Any, run: str = RUN) -> list[dict[str, Any]]:
    data = sink.get_bytes(f"{run}/conversions.ndjson.gz")
    assert data is not None, f"{run}/conversions.ndjson.gz missing"
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]


def _assert_exactly_once(sim: Simulator, sink: Any, run: str = RUN) -> None:
    """The execution's result and summary exist, agree, and hold every record once; so does
    the day store."""
    rows = _result_rows(sink, run)
    ids = [r["conversion_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicates in the result"
    assert set(ids) == sim.expected_ids("default", DAYS[0], DAYS[-1]), "records lost"
    summary = json.loads(sink.get_bytes(f"{run}/summary.json"))
    info = sink.stat(f"{run}/conversions.ndjson.gz")
    assert summary["status"] == "succeeded"
    assert summary["records"] == len(rows)
    assert summary["result"]["size"] == info.size
    assert summary["result"]["crc32c"] == info.crc32c
    stored = [json.loads(line) for o in sink.list("days/")
              for line in gzip.decompress(sink.get_bytes(o.name)).splitlines()]
    stored_ids = [r["conversion_id"] for r in stored]
    assert len(stored_ids) == len(set(stored_ids)) and set(stored_ids) == set(ids)


def _done_days(sink: Any) -> set[str]:
    """Days whose complete snapshot is in the day store."""
    return {o.name.split("date=")[1].split("/")[0] for o in sink.list("days/")
            if o.metadata.get("complete") == "true"}


def _kill_when(proc: subprocess.Popen[str], condition: Callable[[], bool],
               timeout: float = 60) -> bool:
    """SIGKILL the job as soon as `condition()` holds; False if it exited first."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if condition():
                proc.kill()
                return True
            time.sleep(0.002)
        proc.kill()
        raise AssertionError("condition never met")
    finally:
        proc.communicate(timeout=10)  # reap it and close its pipes


@pytest.mark.timeout(300)
def test_kill_9_at_many_moments_then_rerun_ends_with_every_record_once(
    sim: Simulator, gcs_emulator: GcsEmulator, bucket_sink: Any
) -> None:
    """Killed mid-page, between units, mid-upload and mid-compose, then retried each time as
    Cloud Run retries a task (same execution, next attempt): the final result holds every record
    exactly once, and no retry re-fetches a day whose complete snapshot is stored."""
    with FaultProxy(gcs_emulator.host, []) as proxy:
        env = _env(sim, gcs_emulator, STORAGE_EMULATOR_HOST=proxy.url, FETCH_CONCURRENCY="1")
        uploads = lambda: proxy.forwarded("upload")  # noqa: E731
        composes = lambda: proxy.forwarded("compose")  # noqa: E731
        moments: list[tuple[str, Callable[[int, int, int], Callable[[], bool]]]] = [
            # (name, factory(range requests so far, uploads so far, composes so far) -> condition)
            ("mid-page of the first unit", lambda r, u, c: lambda: sim.request_count() >= r + 2),
            ("just after a unit's last page", lambda r, u, c: lambda: sim.request_count() >= r + 3),
            ("mid-upload", lambda r, u, c: lambda: uploads() >= u + 1),
            ("between units", lambda r, u, c: lambda: uploads() >= u + 2),
            ("mid-page later on", lambda r, u, c: lambda: sim.request_count() >= r + 5),
            ("mid-compose", lambda r, u, c: lambda: composes() >= c + 1),
        ]
        kills = 0
        for attempt, (name, make_condition) in enumerate(moments):
            done_before = _done_days(bucket_sink)
            ledger_before = len(sim.ledger.snapshot())
            condition = make_condition(sim.request_count(), uploads(), composes())
            proc = start_job({**env, "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
                              "SNAPSHOT_MAX_AGE": "0"})
            killed = _kill_when(proc, condition)
            kills += killed
            refetched = {e.start_date for e in sim.ledger.snapshot()[ledger_before:]
                         if e.endpoint == "range"}
            assert not refetched & done_before, f"{name}: finished units fetched again"
        assert kills >= 5
        ledger_before = len(sim.ledger.snapshot())
        done_before = _done_days(bucket_sink)
        final = run_job({**env, "CLOUD_RUN_TASK_ATTEMPT": str(len(moments)),
                         "SNAPSHOT_MAX_AGE": "0"})
        assert final.code == 0, final.stderr[-3000:]
        refetched = {e.start_date for e in sim.ledger.snapshot()[ledger_before:]
                     if e.endpoint == "range"}
        assert not refetched & done_before
    _assert_exactly_once(sim, bucket_sink)
    assert bucket_sink.list(f"{RUN}/chunks/") == []
    assert bucket_sink.list(f"{RUN}/parts/") == []


def _unit_order(lines: list[bytes]) -> list[tuple[str, str]]:
    """The (account, day) units in the order their lines appear, each unit once per run of
    consecutive lines."""
    order: list[tuple[str, str]] = []
    for line in lines:
        record = json.loads(line)
        unit = (record["_account"], record["datetime_conversion"][:10])
        if not order or order[-1] != unit:
            order.append(unit)
    return order


@pytest.mark.timeout(300)
@pytest.mark.parametrize("tasks", [3, 4])
def test_parallel_tasks_produce_the_single_task_result(make_simulator, gcs_emulator: GcsEmulator,
                                                       tasks: int) -> None:  # type: ignore[no-untyped-def]
    """N tasks as concurrent processes give the same result as one task: the same lines, units
    in the same order (within a unit, lines are in page arrival order); one summary.json."""
    sim = make_simulator(records_per_day=260, rate_limit_per_minute=None)
    single = run_job(_env(sim, gcs_emulator, GCS_PREFIX="single", CLOUD_RUN_EXECUTION="one"))
    assert single.code == 0, single.stderr[-3000:]
    execution = {"CLOUD_RUN_JOB": "ia", "CLOUD_RUN_EXECUTION": f"ia-{tasks}",
                 "CLOUD_RUN_TASK_COUNT": str(tasks), "CLOUD_RUN_TASK_ATTEMPT": "0"}
    procs = [start_job(_env(sim, gcs_emulator, GCS_PREFIX="parallel", **execution,
                            CLOUD_RUN_TASK_INDEX=str(i))) for i in range(tasks)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    one = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket, prefix="single")
    many = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket, prefix="parallel")
    try:
        run = f"runs/{RANGE}/ia-{tasks}"
        single_lines = gzip.decompress(
            one.get_bytes(f"runs/{RANGE}/one/conversions.ndjson.gz") or b"").splitlines()
        many_lines = gzip.decompress(
            many.get_bytes(f"{run}/conversions.ndjson.gz") or b"").splitlines()
        assert sorted(single_lines) == sorted(many_lines)
        assert len(single_lines) == len(set(single_lines)) == 6 * 260
        assert _unit_order(single_lines) == _unit_order(many_lines) == sorted(
            set(_unit_order(single_lines)))
        summaries = [o.name for o in many.list("runs/") if o.name.endswith("summary.json")]
        assert summaries == [f"{run}/summary.json"]
        summary = json.loads(many.get_bytes(f"{run}/summary.json") or b"{}")
        assert summary["status"] == "succeeded" and summary["task_count"] == tasks
        assert summary["records"] == 6 * 260
        assert len(many.list(f"{run}/tasks/")) == tasks
        assert len(many.list("days/")) == 6
    finally:
        one.close()
        many.close()


@pytest.mark.timeout(300)
def test_storage_faults_lose_and_duplicate_nothing(sim: Simulator, gcs_emulator: GcsEmulator,
                                                  bucket_sink: Any) -> None:
    """503s and resets on uploads and compose (including a reset after the write happened) are
    retried by the storage client; the result holds every record exactly once."""
    rules = [Rule("503", on="upload", nth={1, 4}), Rule("reset_after", on="upload", nth={2}),
             Rule("reset", on="upload", nth={6}), Rule("503", on="compose", nth={1}),
             Rule("reset_after", on="compose", nth={2}), Rule("429", on="list", nth={1})]
    with FaultProxy(gcs_emulator.host, rules, seed=3) as proxy:
        run = run_job(_env(sim, gcs_emulator, STORAGE_EMULATOR_HOST=proxy.url))
        assert run.code == 0, run.stderr[-3000:]
        assert proxy.injected("upload") and proxy.injected("compose")
    _assert_exactly_once(sim, bucket_sink)


@pytest.mark.timeout(120)
def test_a_permanent_storage_failure_exits_2_with_a_clear_message(sim: Simulator,
                                                                  gcs_emulator: GcsEmulator) -> None:
    """Storage answering 403 to everything is configuration (issue 18, the contract's exit 2):
    exit 2 and one ERROR entry naming GCS_BUCKET."""
    with FaultProxy(gcs_emulator.host, [Rule("403", on="any")]) as proxy:
        run = run_job(_env(sim, gcs_emulator, STORAGE_EMULATOR_HOST=proxy.url))
    assert run.code == 2
    errors = [e for e in run.events() if e["severity"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["error_class"] == "config"
    assert errors[0]["variable"] == "GCS_BUCKET"


@pytest.mark.timeout(120)
def test_uploads_failing_mid_run_stop_the_account_after_at_most_one_more_day(
        sim: Simulator, gcs_emulator: GcsEmulator) -> None:
    """Storage lists and reads fine but refuses every upload: the first day's part fails, the
    account starts no new day (the day already overlapping may finish), exit 1. Storage has
    failed for the run (a `storage_failed` ERROR entry); the summary, tried once after it,
    is refused too."""
    with FaultProxy(gcs_emulator.host, [Rule("403", on="upload")]) as proxy:
        run = run_job(_env(sim, gcs_emulator, STORAGE_EMULATOR_HOST=proxy.url))
    assert run.code == 1
    errors = [e for e in run.events() if e["severity"] == "ERROR"]
    assert [e["error_class"] for e in errors if e["event"] == "storage_failed"] == ["storage"]
    assert errors[-1]["event"] == "run_summary" and errors[-1]["exit_code"] == 1
    assert run.named("summary_not_written")
    fetched = {e.start_date for e in sim.ledger.snapshot() if e.endpoint == "range"}
    assert 1 <= len(fetched) <= 3, sorted(fetched)


def _signal_mid_run(proc: subprocess.Popen[str], sim: Simulator, bucket_sink: Any,
                    signum: int) -> float:
    """Once two days are stored, make the request in flight never answer, then send `signum`;
    the time it was sent."""
    deadline = time.monotonic() + 60
    while len(_done_days(bucket_sink)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    sim.add_fault(Fault(kind="no_answer"))  # the request in flight at the signal never answers
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signum)
    return sent


def _assert_rerun_completes(sim: Simulator, bucket_sink: Any, env: dict[str, str],
                            done: set[Any]) -> None:
    """A rerun (another execution) fetches none of the days already stored and delivers the
    range with every record once."""
    sim.clear_faults()
    before = len(sim.ledger.snapshot())
    rerun = run_job({**env, "CLOUD_RUN_EXECUTION": "ia-x2"})
    assert rerun.code == 0, rerun.stderr[-3000:]
    refetched = {e.start_date for e in sim.ledger.snapshot()[before:] if e.endpoint == "range"}
    assert not refetched & done
    _assert_exactly_once(sim, bucket_sink, f"runs/{RANGE}/ia-x2")


@pytest.mark.timeout(120)
def test_sigterm_exits_1_within_10_s_and_a_rerun_completes(make_simulator,
                                                           gcs_emulator: GcsEmulator,
                                                           bucket_sink: Any) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM mid-run: exit 1 within 10 s, finished units uploaded, summary `failed` naming what
    is missing; a rerun fetches only the rest and completes the range."""
    sim = make_simulator(records_per_day=260, rate_limit_per_minute=None, latency=0.25,
                         hang_seconds=60.0)
    env = _env(sim, gcs_emulator, REQUEST_TIMEOUT="30", FETCH_CONCURRENCY="1")
    proc = start_job(env, stdout=subprocess.PIPE)
    sent = _signal_mid_run(proc, sim, bucket_sink, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert proc.returncode == 1, err[-3000:]
    done = _done_days(bucket_sink)
    assert len(done) >= 2
    raw = bucket_sink.get_bytes(f"{RUN}/summary.json")
    assert raw is not None, out[-3000:]
    summary = json.loads(raw)
    assert summary["status"] == "failed" and summary["stop_reason"] == "interrupted"
    assert summary["units"]["failed"] == 6 - len(done)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    names = [e.get("event") for e in events]
    assert "unit_started" not in names[names.index("sigterm_received"):]
    assert summary["skipped_pages"] == [] and "timeout" not in summary["retries"]
    _assert_rerun_completes(sim, bucket_sink, env, done)


@pytest.mark.timeout(300)
def test_two_executions_of_three_tasks_at_once_each_end_consistent(make_simulator,
                                                                   gcs_emulator: GcsEmulator,
                                                                   bucket_sink: Any) -> None:  # type: ignore[no-untyped-def]
    """Two executions of the same range, 3 tasks each, all six started at once (a Scheduler run
    during a backfill): every task that exits 0 belongs to an execution whose result and
    summary exist, agree (crc32c), and hold every record once; the day store too."""
    sim = make_simulator(records_per_day=260, rate_limit_per_minute=None, latency=0.01)
    procs = []
    for execution in ("ia-a", "ia-b"):
        for index in range(3):
            procs.append((execution, start_job(_env(
                sim, gcs_emulator, CLOUD_RUN_EXECUTION=execution, CLOUD_RUN_TASK_COUNT="3",
                CLOUD_RUN_TASK_INDEX=str(index), CLOUD_RUN_TASK_ATTEMPT="0"))))
    succeeded: set[str] = set()
    for execution, proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode in (0, 1), err[-3000:]
        if proc.returncode == 0:
            succeeded.add(execution)
    assert succeeded  # at least one execution finished
    for execution in succeeded:
        _assert_exactly_once(sim, bucket_sink, f"runs/{RANGE}/{execution}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_like_sigterm_exits_130_and_a_rerun_completes(
        make_simulator, gcs_emulator: GcsEmulator, bucket_sink: Any, tmp_path: Any,  # type: ignore[no-untyped-def]
        presses: int) -> None:
    """SIGINT mid-run (pressed once or twice): no request more than 1 s later, exit 130 within
    10 s, no traceback, summary `failed`/`interrupted`, scratch removed; a rerun completes the
    range with every record once."""
    sim = make_simulator(records_per_day=260, rate_limit_per_minute=None, latency=0.25,
                         hang_seconds=60.0)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = _env(sim, gcs_emulator, REQUEST_TIMEOUT="30", FETCH_CONCURRENCY="1",
               TMPDIR=str(scratch))
    proc = start_job(env, stdout=subprocess.PIPE)
    try:
        sent = _signal_mid_run(proc, sim, bucket_sink, signal.SIGINT)
        if presses == 2:
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # it did not stop: do not leave it running
            proc.kill()
            proc.communicate()
    assert time.monotonic() - sent < 10
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    time.sleep(0.3)  # let the simulator record anything still in its hands
    late = [e for e in sim.ledger.snapshot() if e.started > sent + 1.0]
    assert late == []
    raw = bucket_sink.get_bytes(f"{RUN}/summary.json")
    assert raw is not None, out[-3000:]
    summary = json.loads(raw)
    assert summary["status"] == "failed" and summary["stop_reason"] == "interrupted"
    names = [json.loads(line).get("event") for line in out.splitlines() if line.strip()]
    assert names.count("sigint_received") == 1
    assert "unit_started" not in names[names.index("sigint_received"):]
    assert bucket_sink.list(f"{RUN}/parts/") == [] and bucket_sink.list(f"{RUN}/chunks/") == []
    assert list(scratch.iterdir()) == []
    done = _done_days(bucket_sink)
    assert len(done) >= 2
    _assert_rerun_completes(sim, bucket_sink, env, done)
