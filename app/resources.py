"""Resource snapshots (psutil): `ResourceMonitor.snapshot()` measures memory, CPU, connections, disk,
output files, uptime and whether the API host accepts a TCP connection. Each field is measured on its own:
one that fails holds `{"error": "<text>"}` and the others still have values. Nothing here raises into the
run. `report()` logs a snapshot as a resource report. Snapshots are taken on the watchdog's thread (and at
the end of a run), never on a fetch worker.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import structlog

from app import logs
from app.errors import truncate
from app.reports import render_resource_report

MAX_ERROR_CHARS = 200
"""A failed field's error text is cut to this length."""
NEWEST_FILES = 3
"""How many of the newest output files a snapshot lists."""
MAX_SCANNED_FILES = 20_000
"""The output-file walk stops here so a huge tree cannot make a snapshot slow."""

Snapshot = dict[str, object]


def error_field(exc: BaseException) -> dict[str, object]:
    return {"error": truncate(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS)}


def _api_target(api_url: str | None) -> tuple[str, int] | None:
    if not api_url:
        return None
    parts = urlsplit(api_url)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


class ResourceMonitor:
    """Takes resource snapshots and logs them as human-readable reports."""

    def __init__(
        self,
        *,
        output_dir: Path | None,
        api_url: str | None,
        enabled: bool = True,
        process: psutil.Process | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect_timeout: float = 0.2,
    ) -> None:
        self.enabled = enabled
        self.output_dir = output_dir
        self.api_url = api_url
        self._target = _api_target(api_url)
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._started = clock()
        self._lock = threading.Lock()
        self._pending_probe: threading.Thread | None = None
        self._process: psutil.Process | None = None
        self._process_error: dict[str, object] | None = None
        try:
            self._process = process if process is not None else psutil.Process()
        except Exception as exc:  # no process handle: every process field reports this
            self._process_error = error_field(exc)
        if enabled:
            self._prime_cpu()

    def _prime_cpu(self) -> None:
        # psutil's cpu_percent(None) compares with the previous call; the first one returns 0.0.
        # A failure here shows up in the snapshot's cpu field, where it matters.
        with contextlib.suppress(Exception):
            if self._process is not None:
                self._process.cpu_percent(None)
        with contextlib.suppress(Exception):
            psutil.cpu_percent(None)

    # -- snapshot ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every field measured on its own; a field that fails holds {"error": text}."""
        started = time.perf_counter()
        with self._lock:
            result: Snapshot = {
                "memory": self._measure(self._memory),
                "cpu": self._measure(self._cpu),
                "connections": self._measure(self._connections),
                "disk": self._measure(self._disk),
                "output_files": self._measure(self._output_files),
                "uptime_seconds": round(self._clock() - self._started, 3),
                "api_connectivity": self._measure(self._api_connectivity),
            }
        result["snapshot_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return result

    FIELDS = ("memory", "cpu", "connections", "disk", "api_connectivity")
    """The snapshot fields `measure` takes one at a time."""

    def measure(self, name: str) -> dict[str, object]:
        """One snapshot field (one of FIELDS), measured now on its own, as `snapshot` holds it:
        {"error": text} when it fails. For callers that ask one question at a time (the
        original module's resource monitor, `app.involve_asia.ResourceMonitor`)."""
        fields: dict[str, Callable[[], dict[str, object]]] = {
            "memory": self._memory,
            "cpu": self._cpu,
            "connections": self._connections,
            "disk": self._disk,
            "api_connectivity": self._api_connectivity,
        }
        if name not in fields:
            raise ValueError(f"unknown field {name!r}; expected one of {self.FIELDS}")
        with self._lock:
            return self._measure(fields[name])

    def uptime(self) -> float:
        """Seconds since the monitor was built (the snapshot's `uptime_seconds`)."""
        return self._clock() - self._started

    @staticmethod
    def _measure(field: Callable[[], dict[str, object]]) -> dict[str, object]:
        try:
            return field()
        except Exception as exc:
            return error_field(exc)

    def _proc(self) -> psutil.Process:
        if self._process is None:
            raise RuntimeError(str((self._process_error or {}).get("error", "no process")))
        return self._process

    def _memory(self) -> dict[str, object]:
        process = self._proc()
        info = process.memory_info()
        return {
            "rss_bytes": info.rss,
            "vms_bytes": info.vms,
            "percent": round(process.memory_percent(), 2),
        }

    def _cpu(self) -> dict[str, object]:
        process_percent = self._proc().cpu_percent(None)
        return {
            "process_percent": round(process_percent, 1),
            "system_percent": round(psutil.cpu_percent(None), 1),
            "cores": psutil.cpu_count() or 0,
        }

    def _connections(self) -> dict[str, object]:
        connections = self._proc().net_connections(kind="inet")
        established = sum(1 for c in connections if c.status == psutil.CONN_ESTABLISHED)
        return {"established": established, "total": len(connections)}

    def _disk_path(self) -> Path:
        path = self.output_dir if self.output_dir is not None else Path(tempfile.gettempdir())
        path = path.absolute()
        while not path.exists() and path != path.parent:  # the output dir may not exist yet
            path = path.parent
        return path

    def _disk(self) -> dict[str, object]:
        path = self._disk_path()
        usage = psutil.disk_usage(str(path))
        return {
            "path": str(path),
            "total_bytes": usage.total,
            "used_bytes": usage.used,
            "free_bytes": usage.free,
            "percent": usage.percent,
        }

    def _output_files(self) -> dict[str, object]:
        root = self.output_dir
        if root is None:
            return {"dir": None, "count": 0, "total_bytes": 0, "newest": []}
        count = 0
        total = 0
        newest: list[tuple[float, str, int]] = []
        truncated = False
        pending = [str(root)] if root.exists() else []
        while pending and not truncated:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        stat = entry.stat(follow_symlinks=False)
                    except OSError:  # removed while we looked
                        continue
                    count += 1
                    total += stat.st_size
                    item = (stat.st_mtime, entry.path, stat.st_size)
                    if len(newest) < NEWEST_FILES:
                        heapq.heappush(newest, item)
                    else:
                        heapq.heappushpop(newest, item)
                    if count >= MAX_SCANNED_FILES:
                        truncated = True
                        break
        listed = [
            {"name": os.path.relpath(path, root), "bytes": size}
            for _, path, size in sorted(newest, reverse=True)
        ]
        result: dict[str, object] = {
            "dir": str(root),
            "count": count,
            "total_bytes": total,
            "newest": listed,
        }
        if truncated:
            result["truncated"] = True
        return result

    def _api_connectivity(self) -> dict[str, object]:
        if self._target is None:
            return {"configured": False}
        host, port = self._target
        base: dict[str, object] = {"host": host, "port": port}
        pending = self._pending_probe
        if pending is not None and pending.is_alive():
            return {**base, "reachable": False, "detail": "previous check still waiting (DNS?)"}
        outcome: dict[str, object] = {}
        timeout = self._connect_timeout

        def probe() -> None:
            started = time.perf_counter()
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    pass
                outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
                outcome["reachable"] = True
            except OSError as exc:
                outcome["reachable"] = False
                outcome["detail"] = error_field(exc)["error"]

        # A thread, because a DNS lookup ignores socket timeouts; the wait below bounds us.
        thread = threading.Thread(target=probe, name="api-probe", daemon=True)
        thread.start()
        thread.join(2 * timeout + 0.05)
        if thread.is_alive():
            self._pending_probe = thread
            return {**base, "reachable": False, "detail": f"no answer within {2 * timeout:g}s"}
        return {**base, **outcome}

    # -- report --------------------------------------------------------------------------------

    def report(
        self,
        title: str,
        log: structlog.stdlib.BoundLogger,
        *,
        level: str = "info",
        **fields: object,
    ) -> dict[str, object] | None:
        """Log event "resource_report" (title, snapshot fields, the rendered block) and return
        the snapshot; nothing and None when the monitor is disabled. Never raises."""
        if not self.enabled:
            return None
        snap = self.snapshot()
        with contextlib.suppress(Exception):  # a report must never break the run
            message = render_resource_report(title, snap, logs.current_language())
            payload: dict[str, Any] = {**snap, **fields, "title": title, "message": message}
            payload.pop("event", None)
            getattr(log, level, log.info)("resource_report", **payload)
        return snap
