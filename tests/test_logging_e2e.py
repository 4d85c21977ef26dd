"""What a run tells Cloud Logging, checked on the real job's stdout (a subprocess against the
simulator): every line a structured entry, no secret or token anywhere, stalls explained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.simulator import Fault
from tests.support.jobrun import job_env, run_job

START, END = "2025-03-01", "2025-03-02"
CLOUD_RUN = {"CLOUD_RUN_JOB": "involve-asia", "CLOUD_RUN_EXECUTION": "involve-asia-x7k2p",
             "CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "1",
             "CLOUD_RUN_TASK_ATTEMPT": "2"}
SECRET = "Zx+9/made-up=SECRET"


@pytest.mark.timeout(120)
def test_every_stdout_line_is_a_cloud_logging_entry(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each line parses as JSON with severity, message, event, the labels and a source location."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_503", date=START, page=2, attempts={1}))
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), **CLOUD_RUN)
    env.pop("LOG_FORMAT")  # on Cloud Run the default is JSON
    run = run_job(env)
    assert run.code == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) > 10
    events = set()
    for line in lines:
        entry = json.loads(line)
        assert entry["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert isinstance(entry["message"], str) and entry["message"]
        labels = entry["logging.googleapis.com/labels"]
        assert labels["execution"] == "involve-asia-x7k2p"
        assert labels["task_index"] == "0" and labels["attempt"] == "2"
        assert "account" in labels
        location = entry["logging.googleapis.com/sourceLocation"]
        assert location["file"].endswith(".py") and int(location["line"]) > 0
        assert "structlog" not in location["file"] and "logging/__init__" not in location["file"]
        events.add(entry["event"])
    assert {"job_started", "page_fetched", "page_retry", "snapshot_replaced", "day_changed",
            "run_summary"} <= events
    retry = next(json.loads(line) for line in lines if '"page_retry"' in line)
    assert retry["logging.googleapis.com/labels"]["account"] == "default"
    assert retry["page"] == 2 and retry["attempt"] == 1 and retry["error_class"] == "http_status"
    assert "wait" in retry


@pytest.mark.timeout(120)
def test_no_secret_or_token_ever_reaches_the_output(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A faulty run (expiring and revoked tokens, errors) and a bad-credentials run: neither the
    secret nor any token the simulator issued appears anywhere in stdout or stderr."""
    from app.simulator import SimAccount

    sim = make_simulator(accounts=[SimAccount(name="default", key="general", secret=SECRET)],
                         records_per_day=600, rate_limit_per_minute=None, token_ttl=0.4,
                         latency=0.02)
    sim.add_fault(Fault(kind="token_revoked", date=START, page=3, attempts={1}))
    # A second revocation: at least three tokens however fast the run (expiry alone, at
    # 0.4 s, depends on the run being slow enough).
    sim.add_fault(Fault(kind="token_revoked", date=END, page=5, attempts={1}))
    sim.add_fault(Fault(kind="http_500", date=END, page=2, attempts={1, 2}))
    sim.add_fault(Fault(kind="malformed_json", date=END, page=4, attempts={1}))
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                  INVOLVE_ASIA_API_SECRET=SECRET)
    run = run_job(env)
    assert run.code == 0, run.stderr[-2000:]
    bad = run_job({**env, "INVOLVE_ASIA_API_SECRET": SECRET + "-wrong", "LOG_FORMAT": "console",
                   "OUTPUT_DIR": str(tmp_path / "bad")})
    assert bad.code == 2
    tokens = sim.issued_tokens
    assert len(tokens) >= 3
    for text in (run.stdout, run.stderr, bad.stdout, bad.stderr):
        assert SECRET not in text
        assert "Bearer " not in text
        for token in tokens:
            assert token not in text
            for segment in token.split("."):
                if len(segment) > 16:
                    assert segment not in text


@pytest.mark.timeout(120)
def test_a_stall_logs_the_stack_the_fetch_is_blocked_in(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A page that never answers: after STALL_TIMEOUT a WARNING names the blocked frames, then the
    deadline ends the request and the run completes."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None, hang_seconds=30.0)
    sim.add_fault(Fault(kind="no_answer", date=START, page=2, attempts={1}))
    run = run_job(job_env(sim.base_url, START, START, OUTPUT_DIR=str(tmp_path),
                          STALL_TIMEOUT="1", REQUEST_TIMEOUT="4", FETCH_CONCURRENCY="1"))
    assert run.code == 0, run.stderr[-2000:]
    stalls = run.named("stall_detected")
    assert stalls, "no stall report"
    first = stalls[0]
    assert first["severity"] == "WARNING"
    dump = json.dumps(first["stacks"])
    assert "post_form" in dump and "fetch_page" in dump  # the frames the fetch waits in
    assert "memory" in json.dumps(first)
