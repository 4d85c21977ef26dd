"""The run summary: one task's account of its work, and the merge of every task's into
`summary.json` (fields listed in the contract)."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any

from app.outcome import EXIT_CONFIG, EXIT_OK, EXIT_RETRY, EXIT_SKIPPED, UnitState

__all__ = ["EXIT_CONFIG", "EXIT_OK", "EXIT_RETRY", "EXIT_SKIPPED", "days_in", "merge"]


def merge(task_summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several task summaries (records, pages, requests, retries, skips)."""
    retries: collections.Counter[str] = collections.Counter()
    skipped: list[dict[str, Any]] = []
    totals = {"records": 0, "records_fetched": 0, "records_reused": 0, "pages": 0,
              "requests": 0, "bytes_written": 0, "duplicates": 0, "rereads": 0}
    units = {"total": 0, "done": 0, "failed": 0, **{state.value: 0 for state in UnitState}}
    for task in task_summaries:
        for key in totals:
            totals[key] += int(task.get(key, 0) or 0)
        retries.update({k: int(v) for k, v in (task.get("retries") or {}).items()})
        skipped.extend(task.get("skipped_pages") or [])
        for key in units:
            units[key] += int((task.get("units") or {}).get(key, 0) or 0)
    skipped.sort(key=lambda s: (str(s.get("account")), str(s.get("date")), int(s.get("page", 0))))
    return {**totals, "retries": dict(sorted(retries.items())), "skipped_pages": skipped,
            "units": units}


def days_in(unit_reports: Iterable[Mapping[str, Any]], state: UnitState) -> list[dict[str, Any]]:
    """The summary's `reused_days` / `kept_days`: the days in `state`, with the fetch time and
    records of the snapshot served."""
    days = [{"account": u["account"], "date": u["date"], "fetched_at": u.get("fetched_at"),
             "records": u.get("records", 0)}
            for u in unit_reports if u.get("state") == state]
    return sorted(days, key=lambda d: (str(d["account"]), str(d["date"])))
