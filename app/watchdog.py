"""The stall watchdog: when the job is slow or stuck, the logs say where and why.

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
import itertools
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from app import logs
from app.messages import render_message
from app.reports import render_resource_line, render_resource_report
from app.resources import ResourceMonitor, error_field


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
            return {"status": error_field(exc)}

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
