"""Resource snapshots (psutil) and the stall watchdog: when the job is slow or stuck, the logs say
where and why.

`ResourceMonitor.snapshot()` measures memory, CPU, connections, disk, output files, uptime and
whether the API host accepts a TCP connection. Each field is measured on its own: one that fails
holds `{"error": "<text>"}` and the others still have values. Nothing here raises into the run.

`Watchdog` runs `check()` about once a second on a daemon thread: a resource report every
`report_interval` seconds (the heartbeat), and when no page has completed for `stall_timeout`
seconds a WARNING with the resources and the stack of every thread (what each one is blocked in),
repeated each further `stall_timeout` while the stall lasts. It never stops the run: the
per-request deadlines do that.

Waiting out a back-off is not a stall. Threads that sleep through `Watchdog.backing_off(s)` (or a
sleep wrapped by `Watchdog.backoff_sleep`) declare when their wait ends. While no page completes
and every pending wait is such a back-off, still within its stated end, the watchdog logs a
light `waiting_backoff` (no resources, no stacks) in place of `stall_detected`, at most once per
`stall_timeout`. A back-off that overruns its end by more than `overrun_grace` seconds, or no
progress with no back-off pending, is a stall as before.

Retries and skips are reported from the watchdog's thread too: a fetch worker hands the event
over (`Watchdog.trouble`, a queue put) and goes on; it never takes a snapshot or probes the API.
A skip gets the full resource report (ERROR). A retry gets one INFO `resource_report` entry of
one line (`kind` "retry"), at most one per account per `report_interval`: the retries in
between are counted in the next one's `retries_unreported`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import queue
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import structlog

from app import logs
from app.errors import truncate
from app.messages import render_message
from app.reports import render_resource_line, render_resource_report

MAX_ERROR_CHARS = 200
"""A failed field's error text is cut to this length."""
NEWEST_FILES = 3
"""How many of the newest output files a snapshot lists."""
MAX_SCANNED_FILES = 20_000
"""The output-file walk stops here so a huge tree cannot make a snapshot slow."""

Snapshot = dict[str, object]


def _error(exc: BaseException) -> dict[str, object]:
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
            self._process_error = _error(exc)
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
            return _error(exc)

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
                outcome["detail"] = _error(exc)["error"]

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


def thread_stacks() -> list[dict[str, object]]:
    """Each live thread's name and formatted stack, innermost frame last."""
    names = {t.ident: t for t in threading.enumerate()}
    stacks: list[dict[str, object]] = []
    for ident, frame in sys._current_frames().items():
        thread = names.get(ident)
        stacks.append(
            {
                "name": thread.name if thread is not None else f"thread-{ident}",
                "ident": ident,
                "daemon": thread.daemon if thread is not None else None,
                "stack": "".join(traceback.format_stack(frame)),
            }
        )
    stacks.sort(key=lambda item: str(item["name"]))
    return stacks


OVERRUN_GRACE = 5.0
"""Seconds a declared back-off may run past its stated end before it counts as a stall."""


@dataclass(frozen=True)
class _Wait:
    thread: str
    started: float
    ends: float


class Watchdog:
    """Heartbeat resource reports, and a loud report with every thread's stack on a stall; a
    light note instead while the job only waits out declared back-offs."""

    def __init__(
        self,
        *,
        monitor: ResourceMonitor,
        log: structlog.stdlib.BoundLogger,
        stall_timeout: float,
        report_interval: float,
        clock: Callable[[], float] = time.monotonic,
        status: Callable[[], Mapping[str, object]] | None = None,
        tick: float = 1.0,
        overrun_grace: float = OVERRUN_GRACE,
    ) -> None:
        self._monitor = monitor
        self._log = log
        self._stall_timeout = stall_timeout
        self._report_interval = report_interval
        self._clock = clock
        self._status = status
        self._tick = tick
        self._overrun_grace = overrun_grace
        now = clock()
        self._last_progress = now
        self._stall_anchor = now
        self._stall_reports = 0
        self._dumped_at = 0
        """The stall count (`_stall_reports`) at which the last stack dump was logged."""
        self._next_heartbeat = now + report_interval
        self._waits: dict[int, _Wait] = {}
        self._wait_ids = itertools.count()
        self._waits_lock = threading.Lock()
        self._troubles: queue.SimpleQueue[tuple[str, str, dict[str, object]]] = queue.SimpleQueue()
        self._retry_reported: dict[object, float] = {}
        """When each account's last retry diagnosis was logged (watchdog clock)."""
        self._retry_unreported: dict[object, int] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def progress(self) -> None:
        """A page completed: the stall timer starts again (one attribute write)."""
        self._last_progress = self._clock()

    @contextlib.contextmanager
    def backing_off(self, seconds: float) -> Iterator[None]:
        """The calling thread waits out a back-off of `seconds` from now inside this block.

        While every thread without progress is inside such a block, and none has run more than
        `overrun_grace` past its stated end, no stall is reported. Thread-safe; nests."""
        now = self._clock()
        wait = _Wait(threading.current_thread().name, now, now + max(seconds, 0.0))
        with self._waits_lock:
            key = next(self._wait_ids)
            self._waits[key] = wait
        try:
            yield
        finally:
            with self._waits_lock:
                del self._waits[key]

    def backoff_sleep(self, sleep: Callable[[float], object]) -> Callable[[float], object]:
        """`sleep`, declaring each wait to the watchdog as a back-off (see `backing_off`).

        For the pager's and the rate limiter's `sleep=`; keeps `sleep`'s return value (so
        `threading.Event().wait` still tells whether it was set)."""

        def declared(seconds: float) -> object:
            if seconds <= 0:
                return sleep(seconds)
            with self.backing_off(seconds):
                return sleep(seconds)

        return declared

    def trouble(self, kind: str, title: str, fields: Mapping[str, object]) -> None:
        """A retry ("retry") or a skipped page ("skip") on a fetch worker, titled for the report:
        queued for the watchdog's thread, which takes the snapshot and logs it. Thread-safe and
        cheap: the worker goes on at once."""
        self._troubles.put((kind, title, dict(fields)))
        self._wake.set()

    def report_troubles(self, now: float | None = None) -> None:
        """Log the retries and skips handed over so far (the watchdog's thread does this as they
        come; `stop()` once more at the end)."""
        while True:
            try:
                kind, title, fields = self._troubles.get_nowait()
            except queue.Empty:
                return
            if kind == "retry":
                self._report_retry(title, fields, self._clock() if now is None else now)
            else:
                self._monitor.report(title, self._log, level="error", kind=kind, **fields)

    def _report_retry(self, title: str, fields: dict[str, object], now: float) -> None:
        """One line per account per `report_interval`: the resources when a retry happened."""
        if not self._monitor.enabled:
            return
        account = fields.get("account")
        last = self._retry_reported.get(account)
        if last is not None and now - last < self._report_interval:
            self._retry_unreported[account] = self._retry_unreported.get(account, 0) + 1
            return
        self._retry_reported[account] = now
        unreported = self._retry_unreported.pop(account, 0)
        snap = self._monitor.snapshot()
        with contextlib.suppress(Exception):  # a report must never break the run
            message = render_resource_line(title, snap, logs.current_language(), unreported)
            which = {k: fields[k] for k in ("account", "date", "page", "attempt", "error_class")
                     if k in fields}
            self._log.info("resource_report", message=message, kind="retry", title=title,
                           retries_unreported=unreported, **which, **snap)

    def _pending_waits(self) -> list[_Wait]:
        with self._waits_lock:
            return list(self._waits.values())

    def check(self, now: float | None = None) -> None:
        """One step: a stall report (or a back-off note) if one is due, else a heartbeat if
        one is due."""
        now = self._clock() if now is None else now
        last = self._last_progress
        if last != self._stall_anchor:  # progress since the last check: a new stall count
            self._stall_anchor = last
            self._stall_reports = 0
            self._dumped_at = 0
        stalled = now - last
        if self._stall_timeout > 0 and stalled >= self._stall_timeout:
            due = int(stalled // self._stall_timeout)
            waits = self._pending_waits()
            overrun = [w for w in waits if now > w.ends + self._overrun_grace]
            if due > self._stall_reports:
                self._stall_reports = due
                if waits and not overrun:
                    self._report_backoff(stalled, waits, now)
                else:
                    self._dumped_at = due
                    self._report_stall(stalled, waits, now)
                self._next_heartbeat = now + self._report_interval
                return
            if overrun and self._dumped_at < due:
                # Quiet so far for this stall count, and now a back-off has overrun: say so now.
                self._dumped_at = due
                self._report_stall(stalled, waits, now)
                self._next_heartbeat = now + self._report_interval
                return
        if self._report_interval > 0 and now >= self._next_heartbeat:
            self._next_heartbeat += self._report_interval
            if self._next_heartbeat <= now:
                self._next_heartbeat = now + self._report_interval
            self._heartbeat()

    def _status_fields(self) -> dict[str, object]:
        if self._status is None:
            return {}
        try:
            return {"status": dict(self._status())}
        except Exception as exc:
            return {"status": _error(exc)}

    def _heartbeat(self) -> None:
        fields = self._status_fields()
        if self._monitor.enabled:
            self._monitor.report("heartbeat", self._log, level="info", **fields)
        else:
            self._log.info("heartbeat", **fields)

    def _report_backoff(self, stalled: float, waits: list[_Wait], now: float) -> None:
        self._log.info(
            "waiting_backoff",
            seconds=round(stalled, 1),
            backoffs=len(waits),
            backoff_ends_in=round(max(w.ends for w in waits) - now, 1),
            **self._status_fields(),
        )

    @staticmethod
    def _describe_waits(waits: list[_Wait], now: float) -> list[dict[str, object]]:
        return [
            {
                "thread": w.thread,
                "seconds": round(w.ends - w.started, 1),
                "overrun": round(max(now - w.ends, 0.0), 1),
            }
            for w in sorted(waits, key=lambda w: w.ends)
        ]

    def _report_stall(self, stalled: float, waits: list[_Wait], now: float) -> None:
        seconds = round(stalled, 1)
        language = logs.current_language()
        headline = render_message("stall_detected", {"seconds": seconds}, language)
        fields: dict[str, Any] = {"seconds": seconds, **self._status_fields()}
        if waits:  # back-offs pending, one of them past its end: which, and by how much
            fields["backoff_waits"] = self._describe_waits(waits, now)
        message = headline
        if self._monitor.enabled:
            snap = self._monitor.snapshot()
            fields["resources"] = snap
            message = render_resource_report(headline, snap, language)
        fields["stacks"] = thread_stacks()
        self._log.warning("stall_detected", message=message, **fields)

    def start(self) -> None:
        """Run `check()` about once a `tick` on a daemon thread until `stop()`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._tick)  # a tick, or a retry or skip handed over
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.report_troubles()
                self.check()
            except Exception as exc:  # the watchdog must never take the run down
                with contextlib.suppress(Exception):
                    self._log.warning("watchdog_failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """End the thread and wait for it (at most a few seconds), then log the retries and
        skips still queued (on the calling thread: the run is over)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._thread = None
        with contextlib.suppress(Exception):
            self.report_troubles()

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
