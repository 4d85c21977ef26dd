"""Even pacing against a real throttled server, through the job's own fetch path (issue 12, item 1).

The simulator admits 20 requests in any 1 s window (a sliding window of admitted requests). The
job runs as a subprocess at REQUESTS_PER_MINUTE=1080 (18/s) with REQUEST_DELAY=0 and the default
FETCH_CONCURRENCY, over one day of 180 pages. A throttle that only caps "R in any 60 s" sends
its requests as fast as the concurrent slots allow and gets 429s; an even pacer sends one every
1/18 s and gets none, and takes about 180/18 = 10 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.jobrun import job_env, run_job

DAY = "2025-03-04"
PAGES = 180
PER_SECOND = 18


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_18_per_second_against_20_per_second_server_no_429_and_near_the_bound(
    make_simulator, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """180 pages at 18/s against a 20-per-1-s server: no 429, fetch time within 1.1x of 10 s."""
    sim = make_simulator(records_per_day=PAGES * 100, rate_limit_per_minute=20, rate_window=1.0)
    env = job_env(sim.base_url, DAY, DAY, OUTPUT_DIR=str(tmp_path),
                  REQUESTS_PER_MINUTE=str(PER_SECOND * 60), REQUEST_DELAY="0",
                  RATE_LIMIT_DELAY="1", RETRY_BACKOFF="0.1,0.1,0.1,0.1,0.1",
                  MAX_RETRY_ATTEMPTS="10")
    run = run_job(env, timeout=100)

    entries = sim.ledger.snapshot()
    rejected = [e for e in entries if e.status == 429]
    assert len(rejected) == 0, f"{len(rejected)} HTTP 429 in {len(entries)} requests"
    assert run.code == 0, run.stderr[-2000:]
    pages = [e for e in entries if e.endpoint == "range" and e.status == 200]
    assert sorted(e.page for e in pages) == list(range(1, PAGES + 1))

    # Fetch time from the server's own clock: the first request (authentication) to the last
    # page's answer. 181 requests paced at 1/18 s span 180/18 = 10 s.
    span = max(e.finished for e in entries) - min(e.started for e in entries)
    bound = PAGES / PER_SECOND
    assert span <= 1.1 * bound, f"fetch took {span:.2f}s, bound {bound:.1f}s"
    assert span >= bound - 0.5, f"fetch took {span:.2f}s: faster than the pacing allows"
