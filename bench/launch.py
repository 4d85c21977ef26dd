"""`python -m bench.launch OUT.json ARGV...`: run ARGV, then write its own rusage to OUT.json.

Why a launcher: Linux reports as a process's ru_maxrss the larger of its own peak and the
resident size of the address space it replaced at exec, which for a child of the bench is the
bench's own (vfork shares it, fork copies it). The bench holds the simulator, whose ledger
reaches ~90 MB in a 1 M-record run, so a job spawned by it directly showed a peak RSS that was
partly the bench's. This launcher is small (a bare interpreter, ~10 MB, less than any job), so
the figure it reports for ARGV is ARGV's own.

OUT.json: {"code", "max_rss_bytes", "cpu_seconds", "started", "ended"}; `started` is taken just
before the spawn and `ended` just after the wait, on the system-wide monotonic clock the bench
and the simulator's ledger use. The launcher exits with ARGV's exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m bench.launch OUT.json PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    out, command = argv[0], argv[1:]
    started = time.monotonic()
    pid = os.posix_spawnp(command[0], command, os.environ)
    _pid, status, usage = os.wait4(pid, 0)
    ended = time.monotonic()
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"code": code, "max_rss_bytes": int(usage.ru_maxrss) * 1024,  # Linux: KiB
                   "cpu_seconds": usage.ru_utime + usage.ru_stime,
                   "started": started, "ended": ended}, handle)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
