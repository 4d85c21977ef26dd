"""`python -m bench.profiler OUT.json`: run `python -m app` in-process under cProfile, every thread.

Why not pyinstrument: it records one thread, and the job does its work on worker threads (one
per account, FETCH_CONCURRENCY per account for pages), so a pyinstrument profile of `python -m app`
shows the main thread waiting on futures. Here `threading.setprofile` installs a hook that
starts a `cProfile.Profile` in each new thread on its first event, timed by that thread's CPU
clock (`time.thread_time`, so a thread blocked on a socket or a lock costs nothing); at the end
the per-thread profiles are merged with `pstats`. Like any deterministic profiler, cProfile inflates code that
makes many small Python calls (the HTTP stack) relative to C work (json, zlib): read the shares
as a ranking, and the CPU seconds of the unprofiled `volume` runs as the truth.

OUT.json.pstats holds the merged raw profile (`python -m pstats OUT.json.pstats`). The report
written to OUT.json: the profiled CPU in total, the share of each area (HTTP stack,
JSON, gzip, logging, ...), and the top functions by own time.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gzip / zlib", ("gzip.py", "zlib")),
    ("JSON decode / encode", ("json/", "_json", "scanner")),
    ("logging (structlog, stdlib logging)", ("logging/", "structlog/", "app/logs.py",
                                             "app/redaction.py", "app/messages.py")),
    ("GCS client (google-cloud-storage, google-auth)", ("google/", "google_crc32c")),
    ("HTTP stack (requests, urllib3, http.client)", ("requests/", "urllib3/", "http/client.py",
                                                     "email/", "idna", "charset_normalizer")),
    ("socket calls", ("socket", "select", "poll", "recv", "send")),
    ("threads and locks", ("threading.py", "concurrent/", "queue.py", "lock")),
    ("imports", ("importlib", "<frozen", "marshal", "built-in method builtins.exec")),
)


def area_of(path: str, name: str) -> str:
    """Which part of the stack a pstats entry belongs to."""
    text = f"{path} {name}"
    if "/app/" in path and "app/logs.py" not in path and "app/messages.py" not in path:
        return "app: " + path.rsplit("/app/", 1)[1]
    for area, markers in AREAS:
        if any(marker in text for marker in markers):
            return area
    return "other"


def _label(path: str, line: int, name: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", "/app/"):
        if marker in path:
            short = ("app/" if marker == "/app/" else "") + path.rsplit(marker, 1)[1]
            return f"{name} ({short}:{line})"
    return name if path == "~" else f"{name} ({path}:{line})"


class ThreadProfiles:
    """A cProfile.Profile per thread, started on the thread's first profiling event."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start(self, frame: FrameType, event: str, arg: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    def install(self) -> None:
        threading.setprofile(self._start)

    def uninstall(self) -> None:
        threading.setprofile(None)

    def merged(self, main: cProfile.Profile) -> pstats.Stats:
        stats = pstats.Stats(main)
        with self._lock:
            for profile in self.profiles:
                stats.add(profile)
        return stats

    def report(self, stats: pstats.Stats, top: int = 20) -> dict[str, Any]:
        entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
        total = sum(value[2] for value in entries.values()) or 1.0
        areas: dict[str, float] = {}
        for (path, _line, name), value in entries.items():
            area = area_of(path, name)
            callers: dict[tuple[str, int, str], tuple[Any, ...]] = value[4]
            if area == "other" and path == "~" and callers:
                # A builtin (isinstance, len, str methods...): charge it to whoever called it.
                for (caller_path, _caller_line, caller_name), timing in callers.items():
                    caller_area = area_of(caller_path, caller_name)
                    areas[caller_area] = areas.get(caller_area, 0.0) + timing[2]
                continue
            areas[area] = areas.get(area, 0.0) + value[2]
        ranked = sorted(entries.items(), key=lambda item: -item[1][2])[:top]
        return {
            "profiled_cpu_seconds": round(total, 3),
            "threads_profiled": len(self.profiles) + 1,
            "areas": [{"area": area, "percent": round(100 * seconds / total, 1)}
                      for area, seconds in sorted(areas.items(), key=lambda kv: -kv[1])],
            "self": [{"function": _label(*key), "percent": round(100 * value[2] / total, 1),
                      "calls": value[1]} for key, value in ranked],
        }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.profiler OUT.json  (the job's settings come from the env)",
              file=sys.stderr)
        return 2
    from app.__main__ import main as app_main

    threads = ThreadProfiles()
    threads.install()
    main_profile = cProfile.Profile(time.thread_time)
    main_profile.enable()
    try:
        code = app_main([])
    finally:
        main_profile.disable()
        threads.uninstall()
        stats = threads.merged(main_profile)
        stats.dump_stats(argv[0] + ".pstats")  # for `python -m pstats` or snakeviz
        Path(argv[0]).write_text(json.dumps(threads.report(stats), indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
