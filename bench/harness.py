"""Running one client process under measurement, and the servers it talks to.

`run_measured` spawns a process and returns what it cost: wall time (spawn to exit), its exact
peak RSS and CPU seconds (from `os.wait4` in `bench.launch`, a small launcher, which reports the
rusage of that one child, see there why not directly from here), and the peak bytes in the
folders it writes scratch or output to (polled every 20 ms).

`GcsEmulatorProcess` runs gcp-storage-emulator in its own process (`python -m bench.gcs_emulator`),
so its CPU and memory are never counted against the job.

`ClientRun` is one run of either client against a `Simulator`, with the simulator's ledger
entries attached: the request times come from the same system-wide monotonic clock the bench
reads just before spawning, so "spawn -> first request" is a plain subtraction.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from app.simulator import LedgerEntry, Simulator

REPO = Path(__file__).resolve().parents[1]
SECRET = "demo-secret"  # noqa: S105 - a made-up credential the simulator accepts
"""The made-up API secret every bench simulator account uses."""
POLL_SECONDS = 0.02


def dir_bytes(paths: Sequence[Path]) -> int:
    """Total size of the regular files under `paths` (files vanishing mid-walk are skipped)."""
    total = 0
    for root in paths:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(folder, name), follow_symlinks=False).st_size
    return total


@dataclass
class ProcessRun:
    """What one child process cost."""

    argv: list[str]
    code: int
    spawned: float
    """time.monotonic() just before the spawn."""
    wall: float
    """Seconds from spawn to exit."""
    max_rss_bytes: int
    """Peak resident set size of the child (ru_maxrss), bytes."""
    cpu_seconds: float
    """User + system CPU of the child."""
    peak_disk_bytes: int
    """Largest total size seen in the watched folders."""
    stdout_path: Path
    stderr_path: Path
    timed_out: bool = False
    output_tail: str = ""
    """The end of the child's stderr and stdout, read at exit: the scenario's scratch folder
    holding the full logs is usually gone by the time a failure is reported."""

    def tail(self) -> str:
        """The end of the child's stderr and stdout, for failure messages."""
        return self.output_tail


def _read_tail(paths: Sequence[Path], chars: int = 2000) -> str:
    parts = []
    for path in paths:
        with contextlib.suppress(OSError):
            parts.append(path.read_text(errors="replace")[-chars:])
    return "\n".join(parts)


def run_measured(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    workdir: Path,
    watch: Sequence[Path] = (),
    timeout: float = 900.0,
) -> ProcessRun:
    """Spawn `argv` in the repository root, wait for it, and measure it (see module doc)."""
    stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
    usage_path = workdir / "rusage.json"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        spawned = time.monotonic()
        # Through bench.launch: measured directly, the child's peak RSS would include ours.
        proc = subprocess.Popen([sys.executable, "-m", "bench.launch", str(usage_path), *argv],
                                cwd=REPO, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        peak = 0
        timed_out = False
        while True:
            try:
                proc.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if watch:
                peak = max(peak, dir_bytes(watch))
            if not timed_out and time.monotonic() - spawned > timeout:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)  # the launcher and the client it runs
    try:
        usage = json.loads(usage_path.read_text())
    except (OSError, ValueError):  # killed before it could write
        usage = {"code": proc.returncode, "max_rss_bytes": 0, "cpu_seconds": 0.0,
                 "started": spawned, "ended": time.monotonic()}
    proc.returncode = int(usage["code"])
    return ProcessRun(
        argv=list(argv),
        code=proc.returncode,
        spawned=float(usage["started"]),
        wall=float(usage["ended"]) - float(usage["started"]),
        max_rss_bytes=int(usage["max_rss_bytes"]),
        cpu_seconds=float(usage["cpu_seconds"]),
        peak_disk_bytes=peak,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        timed_out=timed_out,
        output_tail=_read_tail((stderr_path, stdout_path)),
    )


class GcsEmulatorProcess:
    """gcp-storage-emulator in a child process, with one bucket; `.host`, `.bucket`, `.env()`."""

    def __init__(self, bucket: str = "bench") -> None:
        self.bucket = bucket
        self.host = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GcsEmulatorProcess:
        proc = subprocess.Popen([sys.executable, "-m", "bench.gcs_emulator", self.bucket],
                                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        self._proc = proc
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"GCS emulator did not start: {line!r}")
        self.host = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def env(self) -> dict[str, str]:
        """The variables that point the job at this emulator and bucket."""
        return {"STORAGE_EMULATOR_HOST": self.host, "GCS_BUCKET": self.bucket}

    def cpu_seconds(self) -> float:
        """CPU the emulator process has used so far."""
        if self._proc is None:
            return 0.0
        times = psutil.Process(self._proc.pid).cpu_times()
        return float(times.user + times.system)

    def get(self, name: str) -> bytes | None:
        """An object's bytes, or None when it is absent."""
        url = (f"{self.host}/storage/v1/b/{self.bucket}/o/"
               f"{urllib.parse.quote(name, safe='')}?alt=media")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our emulator
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def requests(self) -> dict[str, int]:
        """Requests the emulator has served so far, by kind (list, get, upload, other)."""
        from bench.gcs_emulator import COUNTS_PATH

        with urllib.request.urlopen(f"{self.host}{COUNTS_PATH}", timeout=30) as response:  # noqa: S310 - our emulator
            counts: dict[str, int] = json.loads(response.read())
        return counts

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> GcsEmulatorProcess:
        return self.start() if self._proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh temporary folder, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def base_env(tmpdir: Path) -> dict[str, str]:
    """A minimal environment for a client process: nothing of the bench's own settings leaks in."""
    env = {"PATH": os.environ.get("PATH", ""), "TMPDIR": str(tmpdir), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return env


@dataclass
class ClientRun:
    """One run of a client (ours or the seed baseline) against a simulator."""

    client: str
    proc: ProcessRun
    entries: list[LedgerEntry]
    records: int | None
    """Records the client reports it stored (None when it could not be read)."""
    info: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    """Our job's summary.json (empty for the seed, or when it was not written)."""

    @property
    def ok(self) -> bool:
        return self.proc.code == 0 and not self.proc.timed_out

    @property
    def requests(self) -> int:
        return len(self.entries)

    def count(self, outcome: str) -> int:
        return sum(1 for entry in self.entries if entry.outcome == outcome)

    @property
    def first_request_after_spawn(self) -> float | None:
        if not self.entries:
            return None
        return min(entry.started for entry in self.entries) - self.proc.spawned

    @property
    def request_span(self) -> float:
        """First request's arrival to the last request's answer, seconds."""
        if not self.entries:
            return 0.0
        return (max(entry.finished for entry in self.entries)
                - min(entry.started for entry in self.entries))


def ours_command() -> list[str]:
    return [sys.executable, "-m", "app"]


def seed_command() -> list[str]:
    return [sys.executable, "-m", "bench.seed_baseline"]


def client_env(sim: Simulator, start: str, end: str, tmpdir: Path,
               settings: Mapping[str, str]) -> dict[str, str]:
    """Environment for either client: the simulator, the range, and the scenario's settings."""
    return {
        **base_env(tmpdir),
        "INVOLVE_ASIA_BASE_URL": sim.base_url,
        "INVOLVE_ASIA_API_SECRET": SECRET,
        "START_DATE": start,
        "END_DATE": end,
        "LOG_FORMAT": "json",
        **settings,
    }


_executions = itertools.count(1)


def run_ours(sim: Simulator, start: str, end: str, settings: Mapping[str, str], *,
             workdir: Path, gcs: GcsEmulatorProcess | None = None,
             argv: Sequence[str] | None = None, timeout: float = 900.0) -> ClientRun:
    """`python -m app` against `sim`; output to `gcs` if given, else a local folder.

    The job's scratch space is a fresh TMPDIR; peak disk counts it, plus the local output
    folder when there is no GCS (then the output really is on the local disk). Two runs
    against one `gcs` share its day store: the second reuses or refreshes the first's days.
    Each run is its own execution (CLOUD_RUN_EXECUTION `bench-N`, unless `settings` names
    one), so its summary is found at `runs/{START}_{END}/{EXECUTION}/summary.json`.
    """
    tmpdir, output = workdir / "tmp", workdir / "output"
    tmpdir.mkdir()
    output.mkdir()
    execution = settings.get("CLOUD_RUN_EXECUTION") or f"bench-{next(_executions)}"
    env = client_env(sim, start, end, tmpdir, {"OUTPUT_DIR": str(output),
                                               "CLOUD_RUN_EXECUTION": execution, **settings})
    if gcs is not None:
        env.update(gcs.env())
    watch = [tmpdir] if gcs is not None else [tmpdir, output]
    skip = len(sim.ledger)
    proc = run_measured(argv or ours_command(), env, workdir=workdir, watch=watch, timeout=timeout)
    entries = sim.ledger.snapshot()[skip:]
    name = f"runs/{start}_{end}/{execution}/summary.json"
    raw: bytes | None
    if gcs is not None:
        raw = gcs.get(f"{env.get('GCS_PREFIX', 'conversions')}/{name}")
    else:
        raw = (output / name).read_bytes() if (output / name).exists() else None
    summary: dict[str, Any] = json.loads(raw) if raw else {}
    records = summary.get("records")
    return ClientRun("ours", proc, entries, int(records) if isinstance(records, int) else None,
                     info={"summary_status": summary.get("status"),
                           "retries": summary.get("retries"),
                           "skipped_pages": len(summary.get("skipped_pages") or [])},
                     summary=summary)


def run_seed(sim: Simulator, start: str, end: str, settings: Mapping[str, str], *,
             workdir: Path, timeout: float = 900.0) -> ClientRun:
    """`python -m bench.seed_baseline` against `sim`; its one JSON file goes to a local folder."""
    tmpdir, output = workdir / "tmp", workdir / "output"
    tmpdir.mkdir()
    output.mkdir()
    env = client_env(sim, start, end, tmpdir, {"OUTPUT_DIR": str(output), **settings})
    skip = len(sim.ledger)
    proc = run_measured(seed_command(), env, workdir=workdir, watch=[tmpdir, output],
                        timeout=timeout)
    entries = sim.ledger.snapshot()[skip:]
    report: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        lines = proc.stdout_path.read_text().strip().splitlines()
        if lines:
            report = json.loads(lines[-1])
    records = report.get("total_records")
    return ClientRun("seed", proc, entries, int(records) if isinstance(records, int) else None,
                     info={"skipped_pages": len(report.get("skipped_pages") or [])})


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
