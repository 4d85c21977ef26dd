"""Run the job the way Cloud Run does: `python -m app` as a subprocess with a chosen environment."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

FAST = {
    # The seed's waits, scaled down 100x so faults cost milliseconds.
    "RETRY_BACKOFF": "0.1,0.2,0.3,0.4,0.6",
    "RATE_LIMIT_DELAY": "0.3",
    "REQUEST_DELAY": "0",
    "REQUESTS_PER_MINUTE": "100000",
    "REQUEST_TIMEOUT": "1",
    "LOG_FORMAT": "json",
    "LOG_LANGUAGE": "en",
    "RESOURCE_REPORT_INTERVAL": "30",
}


def job_env(base_url: str, start: str, end: str, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "INVOLVE_ASIA_BASE_URL": base_url,
        "INVOLVE_ASIA_API_SECRET": "demo-secret",
        "START_DATE": start,
        "END_DATE": end,
        **FAST,
    }
    env.update(extra)
    return env


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]


def run_job(env: Mapping[str, str], *, timeout: float = 120, args: Sequence[str] = ()) -> Run:
    proc = subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=dict(env),
                          capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def start_job(env: Mapping[str, str], stdout: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=dict(env),
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def read_ndjson_gz(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]


def run_folder(root: Path, start: str, end: str, execution: str) -> Path:
    """`runs/{START}_{END}/{EXECUTION}/` under a local output root."""
    return root / "runs" / f"{start}_{end}" / execution


def read_summary(root: Path, start: str, end: str, execution: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(
        (run_folder(root, start, end, execution) / "summary.json").read_text())
    return summary


def read_result(root: Path, start: str, end: str, execution: str) -> list[dict[str, Any]]:
    """The records of an execution's composed result."""
    return read_ndjson_gz((run_folder(root, start, end, execution) / "conversions.ndjson.gz")
                          .read_bytes())


def day_file(root: Path, account: str, date: str) -> Path:
    """The day store's snapshot of (account, date) under a local output root."""
    return root / "days" / f"account={account}" / f"date={date}" / "conversions.ndjson.gz"


def day_meta(root: Path, account: str, date: str) -> dict[str, str]:
    """The snapshot's metadata (locally: its sidecar)."""
    sidecar = day_file(root, account, date).with_name("conversions.ndjson.gz.meta.json")
    metadata: dict[str, str] = json.loads(sidecar.read_text())["metadata"]
    return metadata


def read_day(root: Path, account: str, date: str) -> list[dict[str, Any]]:
    return read_ndjson_gz(day_file(root, account, date).read_bytes())
