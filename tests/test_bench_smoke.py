"""Smoke test of the benchmark: the smallest scenario runs end to end and prints the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_startup_quick_prints_the_table() -> None:
    """`python -m bench --only startup --quick` exits 0 and prints the table header and its rows."""
    proc = subprocess.run([sys.executable, "-m", "bench", "--only", "startup", "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| scenario"))
              .strip("|").split("|")]
    assert header == ["scenario", "metric", "ours", "seed baseline", "ratio/goal", "pass"]
    rows = [line for line in lines if line.startswith("| startup")]
    assert any("spawn → first request, local output" in row for row in rows), proc.stdout
    assert proc.stdout.startswith("machine: "), proc.stdout[:200]


@pytest.mark.timeout(60)
def test_measured_peak_rss_is_the_childs_own_not_the_bench_s(tmp_path: Path) -> None:
    """The bench holds 300 MB here; a bare interpreter it measures still peaks near 10 MB (a
    child spawned directly would report the bench's 300 MB as its own peak)."""
    from bench.harness import base_env, run_measured

    ballast = b"\x01" * (300 * 1024 * 1024)  # written, so resident
    run = run_measured([sys.executable, "-c", "pass"], base_env(tmp_path), workdir=tmp_path)
    assert run.code == 0
    assert 0 < run.max_rss_bytes < 60 * 1024 * 1024, run.max_rss_bytes
    assert len(ballast) == 300 * 1024 * 1024
