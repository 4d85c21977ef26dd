"""`python -m app status`: the day store at a glance, from the snapshots' metadata only.

For each account and day of a range (default: the 35 days up to yesterday in TIMEZONE), whether
its snapshot is complete, incomplete or missing, its records, how many are still `pending`, and
its age; days whose volume dropped are flagged `low_volume`. A table for people (colour on a
terminal), `--json` for scripts; exit 0 when every day is complete, 3 when any is incomplete or
missing, 2 for bad settings (as the job), 1 when storage could not be read.

Storage is opened exactly as the job opens it (settings validated by `load_settings`, the sink
opened and probed by `app.runner`), so bad storage settings fail here as they fail the job. The
API is never asked and no API credentials are needed. Reads: the probe, then `stored_days`
(one listing per account and month or year of the range; without configured accounts one
listing of `days/`), never one request per day.

Log entries (errors only) go to stderr: stdout carries the table or the JSON alone.

The volume check (`volume_drop`) is shared with the job, which runs it for each day it stores
against the account's 14 stored days before it (`day_volume_low`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import enum
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from app.messages import label
from app.outcome import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RETRY,
    EXIT_SKIPPED,
    is_config_error,
)
from app.reports import display_width
from app.store import Snapshot, iso_utc, stored_days
from app.volume import volume_drop

DEFAULT_DAYS = 35
"""Days shown when START_DATE is unset (ending END_DATE, default yesterday)."""
_NO_SECRET = "status-reads-no-api"  # noqa: S105  # pragma: allowlist secret (a placeholder, never sent)
"""Stands in for the API secret `load_settings` requires of the job: status never calls the API."""
_SHOWN_SETTINGS = ("START_DATE", "END_DATE", "TIMEZONE", "GCS_BUCKET", "GCS_PREFIX",
                   "OUTPUT_DIR", "INVOLVE_ASIA_ACCOUNT_NAME", "LOG_LANGUAGE", "LOG_FORMAT")
"""The job's settings that status takes as flags too."""
_ACCOUNT_SETTINGS = ("INVOLVE_ASIA_ACCOUNTS", "INVOLVE_ASIA_API_SECRET", "INVOLVE_ASIA_ACCOUNT_NAME")


# -- what the store holds ------------------------------------------------------------------------


class State(enum.StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    MISSING = "missing"


class Flag(enum.StrEnum):
    LOW_VOLUME = "low_volume"
    """Complete, but under a fifth of the median of the account's complete days in the range."""
    NO_METADATA = "no_metadata"
    """A snapshot without readable metadata: counted incomplete (the job replaces it)."""


@dataclass(frozen=True)
class DayStatus:
    account: str
    date: dt.date
    state: State
    records: int | None = None
    pending: int | None = None
    fetched_at: float | None = None
    execution: str | None = None
    flags: tuple[Flag, ...] = ()
    median: float | None = None
    """The median this day fell under a fifth of (low_volume only)."""

    def as_json(self) -> dict[str, Any]:
        return {"account": self.account, "date": self.date.isoformat(), "state": self.state.value,
                "records": self.records, "pending": self.pending,
                "fetched_at": None if self.fetched_at is None else iso_utc(self.fetched_at),
                "execution": self.execution, "flags": [f.value for f in self.flags]}

    @property
    def problem(self) -> bool:
        return self.state != State.COMPLETE or bool(self.flags)


@dataclass(frozen=True)
class StoreStatus:
    root: str
    start: dt.date
    end: dt.date
    accounts: tuple[str, ...]
    days: tuple[DayStatus, ...]
    """Accounts in order, each account's days ascending."""

    def count(self, state: State) -> int:
        return sum(1 for day in self.days if day.state == state)

    @property
    def exit_code(self) -> int:
        """0 when every day is complete, 3 when any is incomplete or missing."""
        return EXIT_OK if all(d.state == State.COMPLETE for d in self.days) else EXIT_SKIPPED

    def as_json(self) -> dict[str, Any]:
        return {"start_date": self.start.isoformat(), "end_date": self.end.isoformat(),
                "days": [day.as_json() for day in self.days],
                **{state.value: self.count(state) for state in State}}

    def of(self, account: str) -> list[DayStatus]:
        return [day for day in self.days if day.account == account]


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def assess(root: str, start: dt.date, end: dt.date, accounts: Sequence[str],
           snapshots: Mapping[tuple[str, str], Snapshot]) -> StoreStatus:
    """Each (account, day) of the range as the snapshots found say it is (pure)."""
    days: list[DayStatus] = []
    for account in accounts:
        own: list[DayStatus] = []
        for day in _days(start, end):
            snapshot = snapshots.get((account, day.isoformat()))
            if snapshot is None:
                own.append(DayStatus(account, day, State.MISSING))
            elif snapshot.meta is None:
                own.append(DayStatus(account, day, State.INCOMPLETE, flags=(Flag.NO_METADATA,)))
            else:
                meta = snapshot.meta
                own.append(DayStatus(
                    account, day, State.COMPLETE if meta.complete else State.INCOMPLETE,
                    records=meta.records, pending=int(meta.statuses.get("pending", 0)),
                    fetched_at=meta.fetched_at, execution=meta.execution))
        reference = [d.records for d in own if d.state == State.COMPLETE and d.records is not None]
        for n, status in enumerate(own):
            if status.state == State.COMPLETE and status.records is not None:
                median = volume_drop(status.records, reference)
                if median is not None:
                    own[n] = dataclasses.replace(status, flags=(Flag.LOW_VOLUME,), median=median)
        days.extend(own)
    return StoreStatus(root, start, end, tuple(accounts), tuple(days))


# -- the table -----------------------------------------------------------------------------------

_COLOURS = {State.COMPLETE: "32", State.INCOMPLETE: "33", State.MISSING: "31"}
_FLAG_COLOUR = "35"
_DIM = "2"
_BOLD = "1"


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour and text else text


def _pad(text: str, width: int, *, right: bool = False) -> str:
    gap = " " * max(width - display_width(text), 0)
    return gap + text if right else text + gap


def human_age(seconds: float, language: str) -> str:
    """Compact age: "3d 4h", "5h 12m", "12m" (zh "3天4小时", "5小时12分", "12分")."""
    units = label("status_age_units", language).split(",")
    sep = " " if language == "en" else ""
    minutes = max(int(seconds // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}{units[0]}{sep}{hours}{units[1]}"
    if hours:
        return f"{hours}{units[1]}{sep}{mins}{units[2]}"
    return f"{mins}{units[2]}"


def _share(pending: int | None, records: int | None) -> str:
    if pending is None or not records:
        return "—"
    return f"{100 * pending / records:.1f}%"


def backfill_command(start: dt.date, end: dt.date, *, on_gcs: bool, output_dir: Path) -> str:
    """The command line that fetches start..end again into this store (README, "Scheduling
    and backfills"): the Cloud Run job for a bucket, the job itself for a local folder."""
    if on_gcs:
        return f"PROJECT=<project> deploy/backfill.sh {start} {end}"
    return (f"OUTPUT_DIR={shlex.quote(str(output_dir))} START_DATE={start} END_DATE={end}"
            " python -m app")


def _runs(days: Sequence[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive dates grouped into (first, last) runs."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in sorted(days):
        if runs and (day - runs[-1][1]).days == 1:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _problem_line(day: DayStatus, now: float, language: str) -> str:
    fields: dict[str, Any] = {"date": day.date.isoformat(),
                              "records": f"{day.records:,}" if day.records is not None else "?"}
    if day.fetched_at is not None:
        fields["age"] = human_age(now - day.fetched_at, language)
    if Flag.NO_METADATA in day.flags:
        key = "status_problem_no_metadata"
    elif day.state == State.INCOMPLETE:
        key = "status_problem_incomplete"
    else:
        key = "status_problem_low_volume"
        fields["median"] = f"{day.median:,.0f}" if day.median is not None else "?"
    return label(key, language).format(**fields)


def _problem_lines(problems: Sequence[DayStatus], now: float, language: str) -> list[str]:
    """A line per problem day; a run of consecutive missing days is one line."""
    lines: list[str] = []
    missing: list[dt.date] = []

    def flush() -> None:
        if len(missing) == 1:
            lines.append(label("status_problem_missing", language).format(date=missing[0]))
        elif missing:
            lines.append(label("status_problem_missing_run", language).format(
                first=missing[0], last=missing[-1], days=len(missing)))
        missing.clear()

    for day in problems:
        if day.state == State.MISSING and (not missing or (day.date - missing[-1]).days == 1):
            missing.append(day.date)
            continue
        flush()
        if day.state == State.MISSING:
            missing.append(day.date)
        else:
            lines.append(_problem_line(day, now, language))
    flush()
    return lines


def render_table(status: StoreStatus, *, now: float, language: str, timezone: str,
                 on_gcs: bool, output_dir: Path, colour: bool) -> str:
    """One block per account: a row per day (fits 80 columns), then its problem days and the
    command lines that fetch them again."""
    weekdays = label("status_weekdays", language).split(",")
    heads = [label(key, language) for key in ("status_col_date", "status_col_weekday",
                                              "status_col_state", "status_col_records",
                                              "status_col_pending", "status_col_age",
                                              "status_col_flags")]
    states = {state: label(f"status_state_{state.value}", language) for state in State}
    flags = {flag: label(f"status_flag_{flag.value}", language) for flag in Flag}
    widths = [10, max(display_width(w) for w in [*weekdays, heads[1]]),
              max(display_width(s) for s in [*states.values(), heads[2]]),
              max(9, display_width(heads[3])), max(7, display_width(heads[4])),
              max(10, display_width(heads[5]))]
    today = dt.datetime.fromtimestamp(now, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")
    lines = [_paint(label("status_title", language).format(root=status.root), _BOLD, colour),
             label("status_range", language).format(
                 start=status.start, end=status.end, days=(status.end - status.start).days + 1,
                 now=today, timezone=timezone)]
    for account in status.accounts:
        days = status.of(account)
        counts = {state.value: sum(1 for d in days if d.state == state) for state in State}
        lines += ["", _paint(label("status_account", language).format(account=account, **counts),
                             _BOLD, colour)]
        head = "  ".join(_pad(h, w, right=n in (3, 4)) for n, (h, w) in enumerate(
            zip(heads, widths, strict=False)))
        lines.append(_paint(("  " + head + "  " + heads[6]).rstrip(), _DIM, colour))
        for day in days:
            cells = [day.date.isoformat(), weekdays[day.date.weekday()], states[day.state],
                     "—" if day.records is None else f"{day.records:,}",
                     _share(day.pending, day.records),
                     "—" if day.fetched_at is None else human_age(now - day.fetched_at, language)]
            padded = [_pad(c, w, right=n in (3, 4)) for n, (c, w) in enumerate(
                zip(cells, widths, strict=True))]
            padded[2] = _paint(padded[2], _COLOURS[day.state], colour)
            flag_text = _paint(" ".join(flags[f] for f in day.flags), _FLAG_COLOUR, colour)
            lines.append(("  " + "  ".join(padded) + "  " + flag_text).rstrip())
        problems = [d for d in days if d.problem]
        if not problems:
            lines.append("  " + _paint(label("status_all_complete", language),
                                       _COLOURS[State.COMPLETE], colour))
            continue
        lines.append("  " + _paint(label("status_problems", language), _BOLD, colour))
        lines += ["    " + line for line in _problem_lines(problems, now, language)]
        if any(Flag.LOW_VOLUME in d.flags for d in problems):
            lines += ["    " + _paint(text, _FLAG_COLOUR, colour)
                      for text in label("status_low_volume_note", language).split("\n")]
        lines.append("  " + label("status_fix", language))
        lines += ["    " + backfill_command(first, last, on_gcs=on_gcs, output_dir=output_dir)
                  for first, last in _runs([d.date for d in problems])]
    totals = {state.value: status.count(state) for state in State}
    lines += ["", label("status_total", language).format(code=status.exit_code, **totals)]
    return "\n".join(lines) + "\n"


# -- the command ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from app.config import OPTIONS

    parser = argparse.ArgumentParser(
        prog="python -m app status",
        description=(
            "Show, per account and day, whether the day store holds a complete snapshot, its "
            "records, the share still pending and its age, from the snapshots' metadata only "
            f"(never the API). Default range: the {DEFAULT_DAYS} days up to yesterday in "
            "TIMEZONE. Accounts: INVOLVE_ASIA_ACCOUNTS' names, or INVOLVE_ASIA_ACCOUNT_NAME "
            "when set (or with INVOLVE_ASIA_API_SECRET), else every account in the store."),
        epilog="Exit codes: 0 every day complete; 3 a day incomplete or missing; 2 bad settings;"
               " 1 storage could not be read.")
    parser.add_argument("--json", action="store_true",
                        help="print JSON for scripts instead of the table")
    for opt in OPTIONS:
        if opt.env in _SHOWN_SETTINGS:
            default = "(unset)" if opt.default is None else opt.default
            text = (f"first day, inclusive (default: {DEFAULT_DAYS} days ending END_DATE;"
                    " DEFAULT_DATE_RANGE does not apply)" if opt.env == "START_DATE" else opt.help)
            parser.add_argument(opt.flag, dest=opt.env, metavar=opt.env,
                                help=f"{text} [env {opt.env}, default {default}]")
    return parser


def _given(name: str, env: Mapping[str, str], overrides: Mapping[str, str | None]) -> bool:
    value = overrides.get(name)
    return bool(value if value is not None else env.get(name))


def main(argv: Sequence[str], env: Mapping[str, str], *, stdout: TextIO | None = None,
         now: Callable[[], float] = time.time) -> int:
    """`python -m app status ARGS`: the exit code (0 complete, 3 not, 2 settings, 1 storage)."""
    out = stdout if stdout is not None else sys.stdout
    try:
        return _main(argv, env, out, now)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str], env: Mapping[str, str], out: TextIO, now: Callable[[], float]
          ) -> int:
    from app.config import load_settings
    from app.errors import ConfigError, JobError
    from app.logs import get_logger
    from app.runner import open_sink_or_exit_code, report_config_error, setup_logging

    args = build_parser().parse_args(argv)
    overrides: dict[str, str | None] = {name: getattr(args, name) for name in _SHOWN_SETTINGS}
    overrides["DEFAULT_DATE_RANGE"] = str(DEFAULT_DAYS)
    configured = any(_given(name, env, overrides) for name in _ACCOUNT_SETTINGS)
    if not (_given("INVOLVE_ASIA_ACCOUNTS", env, overrides)
            or _given("INVOLVE_ASIA_API_SECRET", env, overrides)):
        overrides["INVOLVE_ASIA_API_SECRET"] = _NO_SECRET
    # Log entries go to stderr: the logger binds to sys.stdout when it is set up.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            settings = load_settings(env, overrides)
        except ConfigError as exc:
            report_config_error(exc, {**env, **{k: v for k, v in overrides.items()
                                                if v is not None and v != _NO_SECRET}})
            return EXIT_CONFIG
        setup_logging(settings, env)
        opened = open_sink_or_exit_code(settings)
    if isinstance(opened, int):
        return opened
    log = get_logger()
    try:
        accounts, snapshots = stored_days(
            opened, settings.start_date, settings.end_date,
            [a.name for a in settings.accounts] if configured else None)
    except JobError as exc:
        log.error("status_failed", error_class=exc.error_class, error=str(exc))
        return EXIT_CONFIG if is_config_error(exc) else EXIT_RETRY
    if not accounts:  # nothing configured, nothing stored: the job's default account
        accounts = [settings.accounts[0].name]
    status = assess(opened.root, settings.start_date, settings.end_date, accounts, snapshots)
    if args.json:
        json.dump(status.as_json(), out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        colour = _isatty(out) and not env.get("NO_COLOR")
        out.write(render_table(status, now=now(), language=settings.log_language,
                               timezone=settings.timezone, on_gcs=bool(settings.gcs_bucket),
                               output_dir=settings.output_dir, colour=colour))
    out.flush()
    return status.exit_code


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
