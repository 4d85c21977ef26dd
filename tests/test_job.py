"""The job end to end, as a subprocess against the simulator, writing to a local folder:
layout (day store and runs), exactly-once result, exit codes, the second pass, resume."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.simulator import Fault, SimAccount
from app.sinks import crc32c_file
from tests.support.jobrun import (
    job_env,
    read_day,
    read_ndjson_gz,
    read_result,
    read_summary,
    run_folder,
    run_job,
)

START, END = "2025-02-01", "2025-02-03"
DAYS = [dt.date(2025, 2, d) for d in (1, 2, 3)]


def _expected(sim, account: str = "default") -> set[int]:  # type: ignore[no-untyped-def]
    return sim.expected_ids(account, DAYS[0], DAYS[-1])


@pytest.mark.timeout(120)
def test_a_run_lands_day_snapshots_result_and_summary_with_every_record_once(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two accounts x 3 days: one day snapshot per unit, the run's result holds each record
    once, the summary names the result with its real size and crc32c; the run's scratch is
    gone and its folder holds the result, the summary and the task summary."""
    accounts = [SimAccount(name="IAByteC", key="general", secret="s1+/="),
                SimAccount(name="shop", key="general", secret="s2")]
    sim = make_simulator(accounts=accounts, records_per_day=230, rate_limit_per_minute=None)
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                  INVOLVE_ASIA_ACCOUNTS=json.dumps([{"name": a.name, "key": a.key,
                                                     "secret": a.secret} for a in accounts]),
                  CLOUD_RUN_EXECUTION="exec-a")
    run = run_job(env)
    assert run.code == 0, run.stderr[-2000:]
    days = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("days/**/*.ndjson.gz"))
    assert days == [f"days/account={a}/date={d}/conversions.ndjson.gz"
                    for a in ("IAByteC", "shop") for d in DAYS]
    root = run_folder(tmp_path, START, END, "exec-a")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["conversions.ndjson.gz", "summary.json", "tasks/task-00000.json"]
    rows = read_ndjson_gz((root / "conversions.ndjson.gz").read_bytes())
    for account in ("IAByteC", "shop"):
        ids = [r["conversion_id"] for r in rows if r["_account"] == account]
        assert len(ids) == len(set(ids))
        assert set(ids) == _expected(sim, account)
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["execution"] == "exec-a"
    assert summary["records"] == summary["records_fetched"] == len(rows) == 6 * 230
    assert summary["pages"] == 6 * 3
    assert summary["skipped_pages"] == []
    assert summary["result"]["size"] == (root / "conversions.ndjson.gz").stat().st_size
    assert summary["result"]["crc32c"] == crc32c_file(root / "conversions.ndjson.gz")
    for key in ("start_date", "end_date", "accounts", "currency", "retries", "duration_seconds",
                "resources", "reused_days", "kept_days", "changes", "stop_reason"):
        assert key in summary
    assert summary["changes"]["added"] == 6 * 230 and summary["reused_days"] == []


@pytest.mark.timeout(120)
def test_a_page_that_recovers_in_the_second_pass_leaves_nothing_skipped(make_simulator,
                                                                         tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Page 2 of day 2 fails 6 times, then recovers: exit 0, nothing skipped, every record."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_502", date=DAYS[1].isoformat(), page=2,
                        attempts=set(range(1, 7))))
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 0, run.stderr[-2000:]
    assert len(run.named("page_skipped")) == 1
    assert len(run.named("page_recovered")) == 1
    summary = read_summary(tmp_path, START, END, "e1")
    assert summary["skipped_pages"] == [] and summary["status"] == "succeeded"
    assert summary["retries"] == {"http_status": 6}
    rows = read_result(tmp_path, START, END, "e1")
    assert {r["conversion_id"] for r in rows} == _expected(sim) and len(rows) == 900


@pytest.mark.timeout(120)
def test_the_next_day_is_fetched_while_a_page_waits_out_its_back_off(make_simulator,
                                                                     tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The last page of day 1 fails once and waits 1.5 s before its retry: day 2 is fetched
    in that wait (not after it), and every record still lands exactly once."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_503", date=DAYS[0].isoformat(), page=3, attempts={1}))
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          RETRY_BACKOFF="1.5", FETCH_CONCURRENCY="1", CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 0, run.stderr[-2000:]
    pages = [e for e in sim.ledger.snapshot() if e.endpoint == "range"]
    failed, retried = [e for e in pages if (e.start_date, e.page) == (DAYS[0].isoformat(), 3)]
    assert failed.outcome == "http_503" and retried.outcome == "ok"
    in_the_wait = [e for e in pages if failed.finished < e.started < retried.started]
    assert {e.start_date for e in in_the_wait} >= {DAYS[1].isoformat()}
    assert all(e.outcome == "ok" for e in in_the_wait)
    rows = read_result(tmp_path, START, END, "e1")
    assert len(rows) == 900 and {r["conversion_id"] for r in rows} == _expected(sim)


@pytest.mark.timeout(120)
def test_a_dead_page_is_listed_and_exits_3_then_a_rerun_completes(make_simulator,
                                                                   tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A page dead for the whole run: summary `partial` naming it, exit 3; once the API heals, a
    rerun fetches only that unit (the others are fresh, complete snapshots) and ends
    `succeeded` with every record once."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_500", date=DAYS[2].isoformat(), page=3))
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1")
    run = run_job(env)
    assert run.code == 3, run.stderr[-2000:]
    summary = read_summary(tmp_path, START, END, "e1")
    assert summary["status"] == "partial"
    assert [(s["account"], s["date"], s["page"]) for s in summary["skipped_pages"]] == [
        ("default", DAYS[2].isoformat(), 3)]
    rows = read_result(tmp_path, START, END, "e1")
    assert len(rows) == 800  # everything but the dead page

    sim.clear_faults()
    before = len(sim.ledger.snapshot())
    rerun = run_job({**env, "CLOUD_RUN_EXECUTION": "e2"})
    assert rerun.code == 0, rerun.stderr[-2000:]
    asked = {(e.start_date, e.page) for e in sim.ledger.snapshot()[before:] if e.endpoint == "range"}
    assert {d for d, _ in asked} == {DAYS[2].isoformat()}  # only the unfinished unit
    summary = read_summary(tmp_path, START, END, "e2")
    assert summary["status"] == "succeeded"
    assert [d["date"] for d in summary["reused_days"]] == [DAYS[0].isoformat(), DAYS[1].isoformat()]
    rows = read_result(tmp_path, START, END, "e2")
    assert len(rows) == 900 and {r["conversion_id"] for r in rows} == _expected(sim)


@pytest.mark.timeout(120)
def test_eleven_dead_pages_fail_the_run_with_exit_1(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """More than MAX_SKIPPED_PAGES skipped: fetching stops, status `failed`, exit 1."""
    sim = make_simulator(records_per_day=1500, rate_limit_per_minute=None)
    for page in range(2, 14):
        sim.add_fault(Fault(kind="envelope_error", date=DAYS[0].isoformat(), page=page))
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          RETRY_BACKOFF="0.01", FETCH_CONCURRENCY="1", CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 1, run.stderr[-2000:]
    summary = read_summary(tmp_path, START, END, "e1")
    assert summary["status"] == "failed" and summary["stop_reason"] == "skip_cap"
    # the 11th skip stops the run; pages already handed out (a window of 4 per request slot)
    # finish as skipped too, nothing new is asked
    assert 11 <= len(summary["skipped_pages"]) <= 11 + 3
    assert not (run_folder(tmp_path, START, END, "e1") / "conversions.ndjson.gz").exists()
    assert not (tmp_path / "days" / "account=default" / f"date={DAYS[0].isoformat()}").exists()
    assert not any(e.start_date == DAYS[2].isoformat() for e in sim.ledger.snapshot()
                   if e.endpoint == "range")


@pytest.mark.timeout(60)
def test_bad_credentials_exit_2_within_one_request(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A wrong secret: exit 2 after a single authenticate call, nothing written."""
    sim = make_simulator(rate_limit_per_minute=None)
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          INVOLVE_ASIA_API_SECRET="not-the-secret"))
    assert run.code == 2, run.stderr[-2000:]
    assert sim.request_count(endpoint="authenticate") == 1
    assert sim.request_count(endpoint="range") == 0
    errors = [e for e in run.events() if e["severity"] == "ERROR"]
    assert any("Invalid Credentials" in json.dumps(e) for e in errors)


@pytest.mark.timeout(120)
def test_a_big_day_goes_up_in_bounded_chunks_and_is_composed(make_simulator, gcs_sink) -> None:  # type: ignore[no-untyped-def]
    """A 4,000-record day with 1 KB chunks: over 32 chunks are uploaded as the day is paged, then
    composed (in rounds) into one part holding every record once; no chunk is left behind."""
    from app.config import load_settings
    from app.job import Job

    sim = make_simulator(records_per_day=4000, rate_limit_per_minute=None)
    settings = load_settings(job_env(sim.base_url, "2025-02-01", "2025-02-01",
                                     GCS_BUCKET="unused", CLOUD_RUN_EXECUTION="e1"))
    uploads: list[str] = []

    class CountingSink:
        """Passes everything to the real GCS sink, noting chunk uploads."""

        def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
            self.inner = inner
            self.root = inner.root

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

        def put_file(self, name: str, path, **kwargs):  # type: ignore[no-untyped-def]
            if "/chunks/" in name:
                uploads.append(name)
            return self.inner.put_file(name, path, **kwargs)

    result = Job(settings, sink=CountingSink(gcs_sink), chunk_bytes=1024).run()
    assert result.exit_code == 0
    assert len(uploads) > 32
    rows = read_ndjson_gz(gcs_sink.get_bytes(
        "days/account=default/date=2025-02-01/conversions.ndjson.gz"))
    ids = [r["conversion_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 4000
    assert set(ids) == sim.expected_ids("default", dt.date(2025, 2, 1), dt.date(2025, 2, 1))
    assert gcs_sink.list("runs/2025-02-01_2025-02-01/e1/chunks/") == []
    assert gcs_sink.list("runs/2025-02-01_2025-02-01/e1/parts/") == []


@pytest.mark.timeout(120)
def test_leftovers_of_killed_attempts_are_deleted_once_the_result_is_written(
        make_simulator, gcs_sink) -> None:  # type: ignore[no-untyped-def]
    """A compose cut short leaves intermediate objects (copies of the data), an unfinished big
    unit leaves chunks, an attempt leaves day copies: all go once the execution's result is
    composed; nothing else of the execution, and nothing of another execution, does."""
    from app.config import load_settings
    from app.job import Job

    sim = make_simulator(records_per_day=150, rate_limit_per_minute=None)
    run = "runs/2025-02-01_2025-02-02/e1"
    other = "runs/2025-02-01_2025-02-02/e0/parts/default/2025-02-01/t0-a0-00.ndjson.gz"
    leftovers = [f"{run}/_compose/0f1e/0-00000",
                 f"{run}/parts/default/_compose/9a8b/1-00003",
                 f"{run}/parts/default/2025-02-01/t0-a0-1234.ndjson.gz",
                 f"{run}/chunks/default/2025-02-01/run7-00002.ndjson.gz"]
    for name in [*leftovers, other]:
        gcs_sink.put_bytes(name, b"stale", content_type="application/octet-stream")
    gcs_sink.put_bytes(f"{run}/notes/_compose.txt", b"an operator's file")
    settings = load_settings(job_env(sim.base_url, "2025-02-01", "2025-02-02",
                                     GCS_BUCKET="unused", CLOUD_RUN_EXECUTION="e1"))

    result = Job(settings, sink=gcs_sink).run()

    assert result.exit_code == 0
    names = {o.name for o in gcs_sink.list("runs/")}
    assert not names & set(leftovers)
    assert {f"{run}/notes/_compose.txt", other, f"{run}/conversions.ndjson.gz"} <= names
    rows = read_ndjson_gz(gcs_sink.get_bytes(f"{run}/conversions.ndjson.gz"))
    assert len(rows) == 300


@pytest.mark.timeout(60)
def test_an_unreachable_api_fails_the_run_fast_with_exit_1(tmp_path: Path) -> None:
    """INVOLVE_ASIA_BASE_URL on a closed port: connection refused is `network` (not a timeout),
    and the run ends `failed` with exit 1 after the first page's first attempts, not after
    page after page of skips."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    run = run_job(job_env(f"http://127.0.0.1:{port}/api", START, END, OUTPUT_DIR=str(tmp_path),
                          CLOUD_RUN_EXECUTION="e1"))
    elapsed = time.monotonic() - began
    assert run.code == 1, run.stderr[-2000:]
    assert elapsed < 20
    failed = run.named("run_failed")
    assert failed and {e["error_class"] for e in failed} == {"network"}
    assert run.named("page_skipped") == []
    assert all(e.get("error_class") != "timeout" for e in run.events())
    summary = read_summary(tmp_path, START, END, "e1")
    assert summary["status"] == "failed" and summary["stop_reason"] == "fatal"
    assert summary["retries"] == {"network": 3}


@pytest.mark.timeout(120)
def test_run_progress_never_goes_backwards_and_ends_at_100(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two days fetched side by side: `run_percent` only grows, and the last report says 100."""
    sim = make_simulator(records_per_day=2000, rate_limit_per_minute=None)
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 0, run.stderr[-2000:]
    percents = [e["run_percent"] for e in run.named("progress")]
    assert len(percents) >= 6
    assert percents == sorted(percents)
    assert percents[-1] == 100.0


# --- scratch: no attempt leaves any, locally no empty folder either ----------------------------


def _empty_folders(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_dir() and not any(p.iterdir()))


def _interrupt_when(job: Any, condition: Callable[[], bool]) -> threading.Thread:
    """Call `job.interrupt()` (what the SIGTERM/SIGINT handler calls) once `condition()` holds."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        job.interrupt("SIGINT")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(120)
def test_a_local_run_leaves_no_scratch_and_no_empty_folder(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A local run with big days cut in chunks: once it succeeds, no `parts/` or `chunks/`
    folder is left under the run's folder, and no empty folder anywhere in the store."""
    from app.config import load_settings
    from app.job import Job
    from app.sinks import LocalSink

    sim = make_simulator(records_per_day=450, rate_limit_per_minute=None)
    settings = load_settings(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                                     CLOUD_RUN_EXECUTION="e1"))
    result = Job(settings, sink=LocalSink(tmp_path), chunk_bytes=20_000).run()
    assert result.exit_code == 0
    run = run_folder(tmp_path, START, END, "e1")
    assert sorted(p.name for p in run.iterdir()) == ["conversions.ndjson.gz", "summary.json",
                                                     "tasks"]
    assert _empty_folders(tmp_path) == []
    assert len(read_result(tmp_path, START, END, "e1")) == 3 * 450


@pytest.mark.timeout(120)
def test_an_interrupted_attempt_removes_its_scratch_and_that_of_killed_attempts(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Stopped (Ctrl-C) after its first day: the attempt's summary says `failed`, and no day
    copy or chunk of it, nor of an earlier attempt killed outright, is left; the execution's
    other files stay, and no folder is left empty."""
    from app.config import load_settings
    from app.job import Job
    from app.sinks import LocalSink

    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None, latency=0.05)
    sink = LocalSink(tmp_path)
    run = "runs/2025-02-01_2025-02-03/e1"
    killed = [f"{run}/parts/default/2025-02-01/t0-a0-dead0000.ndjson.gz",
              f"{run}/chunks/default/2025-02-02/t0-a0-dead0000-00001.ndjson.gz"]
    for name in killed:
        sink.put_bytes(name, b"stale", content_type="application/octet-stream")
    sink.put_bytes(f"{run}/notes/operator.txt", b"an operator's file")
    settings = load_settings(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                                     CLOUD_RUN_EXECUTION="e1", CLOUD_RUN_TASK_ATTEMPT="1",
                                     FETCH_CONCURRENCY="1"))
    job = Job(settings, sink=sink)
    own = f"{run}/parts/default/{DAYS[0].isoformat()}/{job.run_id}.ndjson.gz"
    watcher = _interrupt_when(job, lambda: sink.stat(own) is not None)

    result = job.run()
    watcher.join()

    assert result.status == "failed" and result.summary["stop_reason"] == "interrupted"
    names = {o.name for o in sink.list("runs/")}
    assert names == {f"{run}/notes/operator.txt", f"{run}/summary.json",
                     f"{run}/tasks/task-00000.json"}
    assert not (tmp_path / run / "parts").exists() and not (tmp_path / run / "chunks").exists()
    assert _empty_folders(tmp_path) == []
    assert read_day(tmp_path, "default", DAYS[0].isoformat())  # the finished day is kept


@pytest.mark.timeout(120)
def test_a_stopped_task_of_several_removes_only_its_own_scratch(make_simulator,
                                                               tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two tasks: task 0 finishes and waits for task 1 to compose; task 1 is stopped and
    removes its own day copies only (task 0's are still to be composed, an earlier killed
    attempt's are swept later); its retry composes the result, every record once, and then
    no scratch is left at all."""
    from app.config import load_settings
    from app.job import Job
    from app.sinks import LocalSink

    start, end = "2025-02-01", "2025-02-04"
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None, latency=0.05)
    sink = LocalSink(tmp_path)
    run = f"runs/{start}_{end}/e1"
    killed = f"{run}/parts/default/2025-02-04/t1-a9-dead0000.ndjson.gz"
    sink.put_bytes(killed, b"stale", content_type="application/octet-stream")

    def task(index: int, attempt: int) -> Any:
        return Job(load_settings(job_env(
            sim.base_url, start, end, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1",
            CLOUD_RUN_TASK_COUNT="2", CLOUD_RUN_TASK_INDEX=str(index),
            CLOUD_RUN_TASK_ATTEMPT=str(attempt), FETCH_CONCURRENCY="1")), sink=sink)

    first = task(0, 0).run()  # days 1 and 3
    assert first.status == "succeeded"
    parts = {o.name for o in sink.list(f"{run}/parts/")}
    assert len(parts - {killed}) == 2
    stopped = task(1, 0)  # days 2 and 4, stopped once day 2 is stored
    own = f"{run}/parts/default/2025-02-02/{stopped.run_id}.ndjson.gz"
    watcher = _interrupt_when(stopped, lambda: sink.stat(own) is not None)
    assert stopped.run().status == "failed"
    watcher.join()
    assert {o.name for o in sink.list(f"{run}/parts/")} == parts
    assert sink.list(f"{run}/chunks/") == []

    retry = task(1, 1).run()
    assert retry.exit_code == 0 and retry.summary["status"] == "succeeded"
    assert sink.list(f"{run}/parts/") == [] and sink.list(f"{run}/chunks/") == []
    assert _empty_folders(tmp_path) == []
    rows = read_ndjson_gz((tmp_path / run / "conversions.ndjson.gz").read_bytes())
    ids = [r["conversion_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 4 * 300


@pytest.mark.timeout(120)
def test_sigint_ignored_by_the_parent_stays_ignored(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A job started with SIGINT ignored (a background job of a shell script) is not stopped by
    it: it runs to the end and exits 0 with every record."""
    import signal
    import subprocess
    import sys

    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None, latency=0.05)
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1",
                  FETCH_CONCURRENCY="1")
    # `trap "" INT` ignores SIGINT; exec keeps it ignored in the job, as a shell does for `&`
    command = ["sh", "-c", 'trap "" INT; exec "$0" -m app', sys.executable]
    with subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 60
            while sim.request_count() < 2:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert read_summary(tmp_path, START, END, "e1")["status"] == "succeeded"
    assert {r["conversion_id"] for r in read_result(tmp_path, START, END, "e1")} == _expected(sim)
