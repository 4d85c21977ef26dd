"""Resource snapshots, resource reports, and the stall watchdog with its thread stack dumps."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from structlog.testing import capture_logs

from app import logs
from app.reports import render_resource_report
from app.resources import ResourceMonitor
from app.watchdog import Watchdog, thread_stacks

LABELS = {"job": "j", "execution": "e", "task_index": "0", "attempt": "0"}
NUMERIC_FIELDS = {
    "memory": {"rss_bytes", "vms_bytes", "percent"},
    "cpu": {"process_percent", "system_percent", "cores"},
    "connections": {"established", "total"},
    "disk": {"total_bytes", "used_bytes", "free_bytes", "percent"},
    "output_files": {"count", "total_bytes"},
}


@pytest.fixture(autouse=True)
def reset_log_config() -> Iterator[None]:
    """Each test starts and ends with no log handler and structlog defaults."""
    logs.reset_logging()
    yield
    logs.reset_logging()


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel completes the handshake)."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on."""
    sock = socket.create_server(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """An output folder with three part files of known sizes and ages."""
    root = tmp_path / "out"
    parts = root / "2025-01-01_2025-01-02" / "parts" / "acme"
    parts.mkdir(parents=True)
    for age, (name, size) in enumerate([("a.ndjson.gz", 100), ("b.ndjson.gz", 2000),
                                        ("c.ndjson.gz", 30)]):  # fmt: skip
        path = parts / name
        path.write_bytes(b"x" * size)
        stamp = 1_700_000_000 + age * 10
        os.utime(path, (stamp, stamp))
    return root


def json_stream(language: logs.LanguageCode = "zh") -> io.StringIO:
    stream = io.StringIO()
    logs.configure_logging(fmt="json", language=language, labels=LABELS, stream=stream)
    return stream


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class NoMemoryProcess(psutil.Process):
    """The real current process, except that reading its memory is refused."""

    def memory_info(self) -> Any:
        raise psutil.AccessDenied(pid=self.pid, msg="memory is off limits")


# --- snapshot ----------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_snapshot_measures_every_field(output_dir: Path, listening_port: int) -> None:
    """A healthy snapshot has numbers in every field, the newest files and a reachable API."""
    clock = FakeClock()
    monitor = ResourceMonitor(
        output_dir=output_dir, api_url=f"http://127.0.0.1:{listening_port}/api", clock=clock
    )
    clock.now += 83.5
    snap = monitor.snapshot()
    for field, keys in NUMERIC_FIELDS.items():
        part = snap[field]
        assert isinstance(part, dict)
        assert "error" not in part
        for key in keys:
            assert isinstance(part[key], int | float), (field, key)
    assert snap["uptime_seconds"] == 83.5
    files = snap["output_files"]
    assert isinstance(files, dict)
    assert (files["count"], files["total_bytes"]) == (3, 2130)
    prefix = str(Path("2025-01-01_2025-01-02") / "parts" / "acme")
    assert files["newest"] == [
        {"name": str(Path(prefix) / "c.ndjson.gz"), "bytes": 30},
        {"name": str(Path(prefix) / "b.ndjson.gz"), "bytes": 2000},
        {"name": str(Path(prefix) / "a.ndjson.gz"), "bytes": 100},
    ]
    api = snap["api_connectivity"]
    assert isinstance(api, dict)
    assert (api["host"], api["port"], api["reachable"]) == ("127.0.0.1", listening_port, True)
    assert isinstance(api["latency_ms"], float)
    assert isinstance(snap["snapshot_ms"], float)


@pytest.mark.timeout(10)
def test_connections_are_counted(listening_port: int) -> None:
    """An open client connection of this process shows up as established."""
    monitor = ResourceMonitor(output_dir=None, api_url=None)
    before = monitor.snapshot()["connections"]
    with socket.create_connection(("127.0.0.1", listening_port)):
        during = monitor.snapshot()["connections"]
    assert isinstance(before, dict) and isinstance(during, dict)
    assert during["established"] >= before["established"] + 1


@pytest.mark.timeout(10)
def test_unreachable_api_is_a_result_not_a_failure(closed_port: int) -> None:
    """A refused TCP connect reads reachable=False with the reason."""
    monitor = ResourceMonitor(output_dir=None, api_url=f"https://127.0.0.1:{closed_port}")
    api = monitor.snapshot()["api_connectivity"]
    assert isinstance(api, dict)
    assert api["reachable"] is False
    assert "ConnectionRefusedError" in str(api["detail"])


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("url", "port"), [("https://127.0.0.1/api", 443),
                                           ("http://127.0.0.1/api", 80)])  # fmt: skip
def test_api_port_defaults_from_the_scheme(url: str, port: int) -> None:
    """Without a port in the URL, https means 443 and http means 80."""
    api = ResourceMonitor(output_dir=None, api_url=url).snapshot()["api_connectivity"]
    assert isinstance(api, dict)
    assert (api["host"], api["port"]) == ("127.0.0.1", port)


def test_unconfigured_parts() -> None:
    """No API URL and no local output are reported as such, not as errors."""
    snap = ResourceMonitor(output_dir=None, api_url=None).snapshot()
    assert snap["api_connectivity"] == {"configured": False}
    assert snap["output_files"] == {"dir": None, "count": 0, "total_bytes": 0, "newest": []}


def test_missing_output_dir_measures_the_nearest_existing_parent(tmp_path: Path) -> None:
    """Before the output folder exists, disk usage is that of its closest existing parent."""
    monitor = ResourceMonitor(output_dir=tmp_path / "not" / "yet", api_url=None)
    snap = monitor.snapshot()
    assert snap["disk"]["path"] == str(tmp_path)  # type: ignore[index]
    assert snap["output_files"]["count"] == 0  # type: ignore[index]


def test_one_failing_psutil_call_leaves_the_other_fields(output_dir: Path) -> None:
    """A psutil call that raises becomes that field's error text; every other field has values."""
    monitor = ResourceMonitor(output_dir=output_dir, api_url=None, process=NoMemoryProcess())
    snap = monitor.snapshot()
    memory = snap["memory"]
    assert isinstance(memory, dict)
    assert list(memory) == ["error"]
    assert "AccessDenied" in str(memory["error"])
    assert "memory is off limits" in str(memory["error"])
    for field in ("cpu", "connections", "disk", "output_files"):
        part = snap[field]
        assert isinstance(part, dict) and "error" not in part, field
    text = render_resource_report("第15页超时重试2", snap, "zh")
    assert "内存:      ❌ 获取失败: AccessDenied" in text
    assert "CPU:       进程" in text
    assert "输出文件:  3个文件" in text


@pytest.mark.timeout(20)
def test_a_process_that_exited_fails_only_its_own_fields(output_dir: Path) -> None:
    """Watching a process that is gone fails memory, CPU and connections; the rest still reports."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    process = psutil.Process(child.pid)
    child.wait(timeout=15)
    monitor = ResourceMonitor(output_dir=output_dir, api_url=None, process=process)
    snap = monitor.snapshot()
    for field in ("memory", "cpu", "connections"):
        assert "NoSuchProcess" in str(snap[field]["error"]), field  # type: ignore[index]
    assert snap["disk"]["total_bytes"] > 0  # type: ignore[index]
    assert snap["output_files"]["count"] == 3  # type: ignore[index]


# --- report ------------------------------------------------------------------------------------


def test_report_logs_the_snapshot_and_the_block(output_dir: Path) -> None:
    """report() logs event resource_report with the title, snapshot fields and rendered block."""
    stream = json_stream("en")
    monitor = ResourceMonitor(output_dir=output_dir, api_url=None)
    snap = monitor.report("page 15 timeout, retry 2", logs.get_logger(account="acme"),
                          level="warning", page=15)  # fmt: skip
    assert snap is not None
    (entry,) = entries(stream)
    assert entry["severity"] == "WARNING"
    assert entry["event"] == "resource_report"
    assert entry["title"] == "page 15 timeout, retry 2"
    assert entry["page"] == 15
    assert entry["memory"] == snap["memory"]
    assert entry["output_files"]["count"] == 3
    assert entry["message"].startswith("📊 Resource report · page 15 timeout, retry 2\n")
    assert "  Output files:  3 files · 2.1 KB" in entry["message"]
    assert entry["logging.googleapis.com/labels"]["account"] == "acme"


def test_disabled_monitor_reports_nothing() -> None:
    """RESOURCE_MONITOR_ENABLED=false: report() logs nothing and returns None."""
    json_stream()
    monitor = ResourceMonitor(output_dir=None, api_url=None, enabled=False)
    with capture_logs() as captured:
        assert monitor.report("heartbeat", logs.get_logger()) is None
    assert captured == []


# --- watchdog ----------------------------------------------------------------------------------


def make_watchdog(
    clock: FakeClock,
    *,
    enabled: bool = True,
    stall: float = 120,
    interval: float = 60,
    status: Any = None,
) -> Watchdog:
    monitor = ResourceMonitor(output_dir=None, api_url=None, enabled=enabled, clock=clock)
    return Watchdog(monitor=monitor, log=logs.get_logger(), stall_timeout=stall,
                    report_interval=interval, clock=clock, status=status)  # fmt: skip


def test_stall_is_reported_then_repeated_while_it_lasts() -> None:
    """No progress for stall_timeout: one WARNING; again each further stall_timeout; not between."""
    clock = FakeClock()
    dog = make_watchdog(clock, interval=10_000, status=lambda: {"unit": "acme/2025-01-01"})
    with capture_logs() as captured:
        dog.check(clock.now + 119.9)
        assert captured == []
        dog.check(clock.now + 120)
        dog.check(clock.now + 200)
        dog.check(clock.now + 240.5)
    assert [e["event"] for e in captured] == ["stall_detected", "stall_detected"]
    first, second = captured
    assert first["log_level"] == "warning"
    assert (first["seconds"], second["seconds"]) == (120.0, 240.5)
    assert first["status"] == {"unit": "acme/2025-01-01"}
    assert set(first["resources"]) >= {"memory", "cpu", "disk", "api_connectivity"}
    names = [s["name"] for s in first["stacks"]]
    assert "MainThread" in names


def test_progress_resets_the_stall_timer_quietly() -> None:
    """A page completing after a stall logs nothing special, and the count starts over."""
    clock = FakeClock()
    dog = make_watchdog(clock, interval=10_000)
    with capture_logs() as captured:
        dog.check(clock.now + 130)
        clock.now += 130
        dog.progress()
        dog.check(clock.now + 1)
        dog.check(clock.now + 119)
        assert len(captured) == 1
        dog.check(clock.now + 121)
    assert [e["event"] for e in captured] == ["stall_detected", "stall_detected"]
    assert captured[1]["seconds"] == 121.0


def test_heartbeat_every_interval() -> None:
    """A resource report titled "heartbeat" with the status comes every report_interval."""
    clock = FakeClock()
    dog = make_watchdog(clock, stall=10_000, interval=60, status=lambda: {"pages": 7})
    with capture_logs() as captured:
        for offset in (59, 60, 90, 119, 120, 200):
            dog.progress()
            dog.check(clock.now + offset)
    assert [(e["event"], e["title"]) for e in captured] == [("resource_report", "heartbeat")] * 3
    assert captured[0]["status"] == {"pages": 7}


def test_heartbeat_without_resources_when_the_monitor_is_off() -> None:
    """With the monitor disabled the heartbeat is a plain event with no resource report."""
    clock = FakeClock()
    dog = make_watchdog(clock, enabled=False, stall=10_000, interval=60)
    with capture_logs() as captured:
        dog.check(clock.now + 60)
    assert [e["event"] for e in captured] == ["heartbeat"]


def test_failing_status_callback_does_not_stop_the_report() -> None:
    """A status callable that raises shows as the status's error; the stall is still reported."""

    def broken() -> dict[str, object]:
        raise RuntimeError("status exploded")

    clock = FakeClock()
    dog = make_watchdog(clock, enabled=False, status=broken)
    with capture_logs() as captured:
        dog.check(clock.now + 120)
    (entry,) = captured
    assert entry["status"] == {"error": "RuntimeError: status exploded"}
    assert "resources" not in entry


def _read_from_silent_server(sock: socket.socket, got: list[bytes]) -> None:
    got.append(sock.recv(1))  # blocks: the server never sends


@pytest.mark.timeout(10)
def test_stall_dump_names_the_frame_a_thread_is_blocked_in() -> None:
    """The stall entry's stacks show a thread blocked in recv on a silent socket, innermost last."""
    stream = json_stream("en")
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    got: list[bytes] = []
    reader = threading.Thread(target=_read_from_silent_server, args=(client, got),
                              name="page-fetch-acme", daemon=True)  # fmt: skip
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until the thread sits inside recv
            stack = next((s for s in thread_stacks() if s["name"] == "page-fetch-acme"), None)
            if stack is not None and "sock.recv(1)" in str(stack["stack"]):
                break
            time.sleep(0.01)
        clock = FakeClock()
        dog = make_watchdog(clock)
        dog.check(clock.now + 125)
    finally:
        conn.close()  # the reader's recv returns b"" and the thread ends
        reader.join(timeout=5)
        client.close()
        server.close()
    (entry,) = entries(stream)
    assert entry["severity"] == "WARNING"
    assert entry["event"] == "stall_detected"
    assert entry["seconds"] == 125.0
    assert entry["message"].startswith("📊 Resource report · 🐢 No page completed for 125.0s")
    (blocked,) = [s for s in entry["stacks"] if s["name"] == "page-fetch-acme"]
    last_frame = blocked["stack"].rstrip("\n").splitlines()[-2:]
    assert "_read_from_silent_server" in last_frame[0]
    assert last_frame[1].strip() == "got.append(sock.recv(1))  # blocks: the server never sends"
    assert got == [b""]


@pytest.mark.timeout(10)
def test_background_thread_reports_and_stops_promptly() -> None:
    """start() checks on a daemon thread; stop() ends and joins it."""
    stream = json_stream()
    monitor = ResourceMonitor(output_dir=None, api_url=None, enabled=False)
    dog = Watchdog(monitor=monitor, log=logs.get_logger(), stall_timeout=0.05,
                   report_interval=3600, tick=0.01)  # fmt: skip
    with dog:
        deadline = time.monotonic() + 5
        while "stall_detected" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        (thread,) = [t for t in threading.enumerate() if t.name == "stall-watchdog"]
        assert thread.daemon
    assert not thread.is_alive()
    assert "stall_detected" in stream.getvalue()


# --- watchdog and declared back-offs ------------------------------------------------------------


def test_a_declared_back_off_is_noted_lightly_instead_of_a_stall() -> None:
    """No progress for stall_timeout while the only wait is a declared back-off within its end:
    one INFO `waiting_backoff` (no stacks, no resources), once per stall_timeout, no stall."""
    clock = FakeClock()
    dog = make_watchdog(clock, interval=10_000, status=lambda: {"unit": "acme/2025-01-01"})
    with capture_logs() as captured:
        clock.now += 70
        with dog.backing_off(60):  # ends at +130
            dog.check(clock.now + 50)  # 120 s without progress
            dog.check(clock.now + 55)
            dog.check(clock.now + 59)
    assert [(e["event"], e["log_level"]) for e in captured] == [("waiting_backoff", "info")]
    (note,) = captured
    assert (note["seconds"], note["backoffs"], note["backoff_ends_in"]) == (120.0, 1, 10.0)
    assert note["status"] == {"unit": "acme/2025-01-01"}
    assert "stacks" not in note and "resources" not in note


def test_long_back_offs_in_a_row_never_dump_stacks() -> None:
    """The seed's waits 10..60 s, back to back with no page completing: a note each
    stall_timeout, never a stall_detected."""
    clock = FakeClock()
    dog = make_watchdog(clock, stall=120, interval=10_000)

    def fake_sleep(seconds: float) -> None:
        for _ in range(int(seconds)):  # the watchdog ticks once a second meanwhile
            clock.now += 1
            dog.check()

    sleep = dog.backoff_sleep(fake_sleep)
    with capture_logs() as captured:
        for wait in (10, 20, 30, 40, 60, 60, 60):
            sleep(wait)
    assert [e["event"] for e in captured] == ["waiting_backoff"] * 2
    assert [e["seconds"] for e in captured] == [120.0, 240.0]


def test_a_back_off_that_overruns_its_end_is_a_stall_at_once() -> None:
    """A declared 18 s back-off still pending 6 s after its end: stall_detected with stacks and
    the overrun named, at that check, not a stall_timeout later; then again each stall_timeout."""
    clock = FakeClock()
    dog = make_watchdog(clock, enabled=False, interval=10_000)
    with capture_logs() as captured:
        clock.now += 100
        with dog.backing_off(18):  # ends at +118; grace 5 s: overrun from +123
            dog.check(clock.now + 20)
            dog.check(clock.now + 23)
            assert [e["event"] for e in captured] == ["waiting_backoff"]
            dog.check(clock.now + 24)
            dog.check(clock.now + 30)
            dog.check(clock.now + 140)  # +240: the next stall count
    assert [e["event"] for e in captured] == ["waiting_backoff", "stall_detected",
                                              "stall_detected"]
    stall = captured[1]
    assert stall["log_level"] == "warning"
    assert stall["seconds"] == 124.0
    assert stall["backoff_waits"] == [{"thread": "MainThread", "seconds": 18.0, "overrun": 6.0}]
    assert "MainThread" in [s["name"] for s in stall["stacks"]]


def test_no_progress_once_the_back_off_has_ended_is_a_stall() -> None:
    """A back-off that ended, then nothing: the next stall count is a stall_detected as before."""
    clock = FakeClock()
    dog = make_watchdog(clock, enabled=False, interval=10_000)
    with capture_logs() as captured:
        clock.now += 110
        with dog.backing_off(30):
            dog.check(clock.now + 10)
        dog.check(clock.now + 130)  # 240 s without progress, no back-off pending
    assert [e["event"] for e in captured] == ["waiting_backoff", "stall_detected"]
    assert "backoff_waits" not in captured[1]


def test_progress_after_a_back_off_starts_the_count_over() -> None:
    """A page completing after a noted back-off resets the stall count: the next note or stall
    comes a full stall_timeout later."""
    clock = FakeClock()
    dog = make_watchdog(clock, enabled=False, interval=10_000)
    with capture_logs() as captured, dog.backing_off(400):
        dog.check(clock.now + 120)
        clock.now += 150
        dog.progress()
        dog.check(clock.now + 119)
        assert len(captured) == 1
        dog.check(clock.now + 120)
    assert [e["event"] for e in captured] == ["waiting_backoff", "waiting_backoff"]
    assert captured[1]["seconds"] == 120.0


@pytest.mark.timeout(10)
def test_back_offs_from_several_threads_are_tracked_until_each_returns() -> None:
    """Three pool threads sleeping through a wrapped Event.wait: a note counting all three with
    the latest end; each wait's return value passes through; once they return, a stall again."""
    clock = FakeClock()
    dog = make_watchdog(clock, enabled=False, stall=30, interval=10_000)
    release = threading.Event()
    asleep = threading.Semaphore(0)

    def event_wait(seconds: float) -> bool:
        asleep.release()  # inside the declared wait now
        return release.wait(5)

    sleep = dog.backoff_sleep(event_wait)
    results: list[object] = []
    lock = threading.Lock()

    def retrying(seconds: float) -> None:
        outcome = sleep(seconds)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=retrying, args=(s,), name=f"page-{s:g}")
               for s in (40.0, 50.0, 60.0)]
    for th in threads:
        th.start()
    with capture_logs() as captured:
        for _ in threads:
            assert asleep.acquire(timeout=5)
        dog.check(clock.now + 30)
        release.set()
        for th in threads:
            th.join()
        dog.check(clock.now + 60)
    assert results == [True, True, True]
    assert [e["event"] for e in captured] == ["waiting_backoff", "stall_detected"]
    assert captured[0]["backoffs"] == 3
    assert captured[0]["backoff_ends_in"] == 30.0
