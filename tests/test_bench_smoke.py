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
