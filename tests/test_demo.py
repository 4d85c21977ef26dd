"""`python -m app --demo`: the real job against the bundled simulator, writing only its own
folder; a store it did not create is never written to, cleared or deleted."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.demo import DEMO_MARKER, claim_demo_folder

REPO = Path(__file__).resolve().parent.parent


def _demo(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "LOG_LANGUAGE": "en",
           "LOG_FORMAT": "json", "NO_GCE_CHECK": "True", **extra}
    return subprocess.run([sys.executable, "-m", "app", "--demo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def _real_store(root: Path) -> Path:
    """A store as the real job leaves it: day snapshots with sidecars, a run's summary."""
    day = root / "days" / "account=shop" / "date=2025-01-02"
    day.mkdir(parents=True)
    (day / "conversions.ndjson.gz").write_bytes(b"\x1f\x8b real data")
    (day / "conversions.ndjson.gz.meta.json").write_text('{"metadata": {}}')
    run = root / "runs" / "2025-01-02_2025-01-02" / "prod-1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"status": "succeeded"}')
    return root


def _state(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: content hash, or "dir"."""
    return {p.relative_to(root).as_posix(): ("dir" if p.is_dir() else
                                             hashlib.sha256(p.read_bytes()).hexdigest())
            for p in root.rglob("*")}


def _results(folder: Path) -> list[Path]:
    return sorted(folder.glob("runs/*/*/conversions.ndjson.gz"))


def test_the_demo_claims_only_a_new_empty_or_marked_folder(tmp_path: Path) -> None:
    """A folder is the demo's when it is new or empty (the marker is then written) or holds
    the marker; a non-empty folder without it, or a file, is not, and is left untouched."""
    new = tmp_path / "new" / "demo"
    assert claim_demo_folder(new) and (new / DEMO_MARKER).is_file()
    assert claim_demo_folder(new)  # marked: still the demo's
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_demo_folder(empty) and (empty / DEMO_MARKER).is_file()
    store = _real_store(tmp_path / "store")
    before = _state(store)
    assert not claim_demo_folder(store)
    assert _state(store) == before
    file = tmp_path / "file"
    file.write_text("x")
    assert not claim_demo_folder(file) and file.read_text() == "x"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_leaves_the_real_store_alone_and_reruns_in_its_own_folder(
        tmp_path: Path) -> None:
    """With OUTPUT_DIR and GCS_BUCKET exported for the real job, the demo leaves every file of
    that store unchanged and writes ./demo-output instead; a second demo into its own folder
    works again, and starts afresh there."""
    store = _real_store(tmp_path / "real-store")
    before = _state(store)
    work = tmp_path / "work"
    work.mkdir()
    first = _demo(work, OUTPUT_DIR=str(store), GCS_BUCKET="real-bucket")
    assert first.returncode == 0, first.stderr[-3000:]
    assert _state(store) == before
    folder = work / "demo-output"
    assert (folder / DEMO_MARKER).is_file()
    assert len(_results(folder)) == 2  # the first execution and the refresh
    assert "demo-output" in first.stderr
    second = _demo(work, OUTPUT_DIR=str(store), GCS_BUCKET="real-bucket")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _state(store) == before
    assert len(_results(folder)) == 2
    assert sorted(p.name for p in folder.iterdir()) == [DEMO_MARKER, "days", "runs"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_demo_refuses_a_folder_it_did_not_make_with_exit_2(tmp_path: Path) -> None:
    """--output-dir naming a store the demo did not create: exit 2, a message that names the
    folder and the way out, nothing run, every file as it was."""
    store = _real_store(tmp_path / "store")
    before = _state(store)
    refused = _demo(tmp_path, "--output-dir", str(store))
    assert refused.returncode == 2
    assert str(store) in refused.stderr and "--output-dir" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _state(store) == before


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_twice_during_the_demo_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C while the demo's first execution fetches, and again as the demo prints its closing
    lines: exit 130, no traceback, that execution's summary `failed`/`interrupted`, no refresh
    started."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "LOG_LANGUAGE": "en",
           "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, "-m", "app", "--demo"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if '"event":"page_fetched"' in line.replace(" ", ""):
                    break
            proc.send_signal(signal.SIGINT)
            assert proc.stderr is not None
            err = ""
            for line in proc.stderr:  # the demo's closing lines: the job has stopped
                err += line
                if "Demo finished" in line:
                    break
            proc.send_signal(signal.SIGINT)
            _, rest = proc.communicate(timeout=30)
            err += rest
        finally:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    summaries = list((tmp_path / "demo-output").glob("runs/*/*/summary.json"))
    assert [p.parent.name for p in summaries] == ["demo-first"]
    summary = json.loads(summaries[0].read_text())
    assert summary["status"] == "failed" and summary["stop_reason"] == "interrupted"
