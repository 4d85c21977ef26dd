"""The benchmark's output: result rows, the table they print as, and the machine they ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

HEADER = ("scenario", "metric", "ours", "seed baseline", "ratio/goal", "pass")


@dataclass
class Row:
    """One measured figure, ours beside the seed baseline's.

    `fmt` formats a value (seconds, MB, a ratio...); `goal` is the target in words ("≤ 1.05");
    `passed` is None for figures without a goal, and for a goal that is shown but not judged in
    this run: then `not_judged` says why (a run too small for the goal to hold, a sweep cell
    shown for reference), and the row prints that reason. `ratio` (ours / seed) is shown when
    both exist and `show_ratio` is set.
    """

    scenario: str
    metric: str
    ours: float | None
    seed: float | None = None
    unit: str = ""
    goal: str = ""
    passed: bool | None = None
    not_judged: str = ""
    show_ratio: bool = True
    digits: int = 2
    details: dict[str, Any] = field(default_factory=dict)

    def _format(self, value: float | None) -> str:
        if value is None:
            return "—"
        text = f"{value:,.{self.digits}f}"
        return f"{text} {self.unit}".strip()

    def cells(self) -> tuple[str, str, str, str, str, str]:
        notes = []
        if self.show_ratio and self.ours is not None and self.seed:
            notes.append(f"{self.ours / self.seed:.2f}× seed")
        if self.goal and self.not_judged:
            notes.append(f"goal {self.goal} not judged: {self.not_judged}")
        elif self.goal:
            notes.append(f"goal {self.goal}")
        verdict = {True: "PASS", False: "FAIL", None: "info"}[self.passed]
        return (self.scenario, self.metric, self._format(self.ours), self._format(self.seed),
                "; ".join(notes), verdict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judged(ok: bool, not_judged: str) -> bool | None:
    """The verdict of a goal: `ok`, or None (info) when there is a reason not to judge it."""
    return None if not_judged else ok


def exit_code(rows: Sequence[Row]) -> int:
    """1 when a judged goal failed, else 0 (info rows never fail the run)."""
    return 1 if any(row.passed is False for row in rows) else 0


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable as plain text, pasteable into docs)."""
    body = [row.cells() for row in rows]
    widths = [max(len(HEADER[i]), *(len(cells[i]) for cells in body)) if body else len(HEADER[i])
              for i in range(len(HEADER))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(HEADER), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(cells) for cells in body)
    return "\n".join(out)


def _command(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=10,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    """What the figures came from: CPU, cores, memory, Python, OS, date."""
    lscpu = _command(["lscpu"])
    fields: dict[str, str] = {}
    for entry in lscpu.splitlines():
        name, _, value = entry.partition(":")
        fields[name.strip()] = value.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": fields.get("Model name", platform.processor()),
        "hypervisor": fields.get("Hypervisor vendor", ""),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def render_machine(info: dict[str, Any]) -> str:
    return (f"machine: {info['nproc']} vCPU {info['cpu_model']}"
            f"{' (' + info['hypervisor'] + ' VM)' if info['hypervisor'] else ''}, "
            f"{info['memory_gib']} GiB RAM, Python {info['python']}, {info['os']}; "
            f"{info['date']}; load average at start {info['load_average_at_start']}")


def render_profile(profile: dict[str, Any], top: int = 12) -> str:
    """The profile's top functions by own time, as a Markdown table."""
    rows = ["| function (own time, every thread) | share of profiled CPU | calls |",
            "|---|---|---|"]
    for entry in profile.get("self", [])[:top]:
        rows.append(f"| {entry['function']} | {entry['percent']} % | {entry['calls']:,} |")
    return "\n".join(rows)
