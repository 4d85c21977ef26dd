"""What a run says about itself: request counts, progress lines, pacing, trouble reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from app.simulator import Fault
from tests.support.jobrun import job_env, read_summary, run_job

START, END = "2025-02-01", "2025-02-02"
DAYS = [dt.date(2025, 2, 1), dt.date(2025, 2, 2)]


@pytest.mark.timeout(120)
def test_summary_requests_count_every_request_the_api_saw(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`requests` is every request the API saw: pages, a retry, a page repeated after its token
    was rejected, and the authentications, which `auth_requests` counts apart."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_502", date=DAYS[0].isoformat(), page=2, attempts={1}))
    sim.add_fault(Fault(kind="token_revoked", date=DAYS[1].isoformat(), page=2, attempts={1}))
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 0, run.stderr[-2000:]
    summary = read_summary(tmp_path, START, END, "e1")
    ledger = sim.ledger.snapshot()
    auth = [e for e in ledger if e.endpoint == "authenticate"]
    assert len(auth) == 2  # the first sign-in, and the one after the token was revoked
    assert summary["pages"] == 6
    assert summary["requests"] == len(ledger) == 6 + 1 + 1 + 2
    assert summary["auth_requests"] == 2
    (final,) = run.named("run_summary")
    assert (final["requests"], final["auth_requests"]) == (10, 2)
    assert "Requests:" in final["message"] and "10 (2 to authenticate)" in final["message"]
