"""`python -m bench`: measure the job against the simulator, beside the seed's approach, and
print one table.

    python -m bench                  every scenario, full size (about 15 minutes on 2 cores)
    python -m bench --quick          reduced sizes, no sweep, no profile (about a minute)
    python -m bench --only hang      one scenario (comma-separate several)
    python -m bench --json out.json  also write every row, the machine and raw details

Progress goes to stderr; the table (Markdown) goes to stdout. The exit code is 1 when a judged
goal fails. `--quick` is a smoke check: a goal that cannot hold at its reduced size (a throttle
ratio over 40 pages, where start-up alone is a fifth of the ideal time) is shown as info, with
the reason in its row; goals that hold at any size (no 429, no record lost, hang detection,
memory growth) are still judged. Scenarios: see bench/scenarios.py; methodology and the latest
figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app.config import DEFAULT_FETCH_CONCURRENCY
from bench.report import Row, exit_code, machine_info, render_machine, render_profile, render_table
from bench.scenarios import QUICK, SCENARIOS, Context


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="reduced sizes; skips the concurrency sweep and the profile")
    parser.add_argument("--only", metavar="SCENARIO",
                        help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_FETCH_CONCURRENCY,
                        help="FETCH_CONCURRENCY of the job outside the sweep "
                             f"(default: the job's default, {DEFAULT_FETCH_CONCURRENCY})")
    args = parser.parse_args(argv)
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
        args.scenarios = names
    else:
        args.scenarios = list(QUICK if args.quick else SCENARIOS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[bench {time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    machine = machine_info()
    ctx = Context(quick=args.quick, concurrency=args.concurrency, log=log)
    rows: list[Row] = []
    for name in args.scenarios:
        log(f"scenario {name}")
        rows.extend(SCENARIOS[name](ctx))
    elapsed = time.monotonic() - began
    print(render_machine(machine))
    print(f"FETCH_CONCURRENCY={args.concurrency} outside the sweep; "
          f"{'quick' if args.quick else 'full'} run of {', '.join(args.scenarios)} "
          f"took {elapsed:.0f} s")
    print()
    print(render_table(rows))
    if "profile" in ctx.results:
        print()
        print("Top CPU costs of the job (all threads, 100,000 records):")
        print(render_profile(ctx.results["profile"]))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine, "quick": args.quick, "concurrency": args.concurrency,
            "elapsed_seconds": round(elapsed, 1),
            "rows": [row.as_dict() for row in rows], "results": ctx.results,
        }, indent=2, ensure_ascii=False, default=str))
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
