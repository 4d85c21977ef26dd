"""The run summary: what became of each unit (`UnitReport`), one task's account of its work,
and the merge of every task's into `summary.json` (fields listed in the contract and README)."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.config import CloudRunTask, Settings
from app.outcome import Outcome, Status, UnitState
from app.sinks import ObjectInfo
from app.store import total_changes

__all__ = ["UnitReport", "days_in", "merge", "run_summary", "task_summary", "unit_counts"]


@dataclass
class UnitReport:
    """What became of one unit: its state, and the run's copy of its data (`object`)."""

    account: str
    date: str
    state: UnitState
    records: int = 0
    pages: int = 0
    duplicates: int = 0
    object: str | None = None
    size: int = 0
    crc32c: str = ""
    fetched_at: str | None = None
    """When the data this run serves for the day was fetched (ISO UTC)."""
    missing_pages: list[int] = field(default_factory=list)
    change: dict[str, Any] | None = None
    """Against the snapshot this run replaced (DayChange.as_dict()), if it replaced one."""
    reason: str | None = None
    """KEPT: why the older snapshot was kept (`incomplete` or `shrank`)."""
    fetched_records: int | None = None
    """KEPT: the records of this run's fetch that was not stored."""

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "state": self.state.value}


def unit_counts(states: Iterable[UnitState]) -> dict[str, int]:
    """The summary's `units`: how many units ended in each state, and the totals."""
    counts = collections.Counter(states)
    delivered = sum(n for state, n in counts.items() if state != UnitState.MISSING)
    return {"total": sum(counts.values()), "done": delivered,
            "failed": counts[UnitState.MISSING],
            **{state.value: counts[state] for state in UnitState}}


def task_summary(reports: Iterable[UnitReport], state: Mapping[str, Any], *, status: Status,
                 task: CloudRunTask, run_id: str, stop_reason: str | None, duration: float,
                 error: BaseException | None) -> dict[str, Any]:
    """One task's summary (`runs/.../tasks/task-NNNNN.json`): its units and counters."""
    ordered = sorted(reports, key=lambda r: (r.account, r.date))
    fetched = [r for r in ordered if r.state not in (UnitState.REUSED, UnitState.MISSING)]
    return {
        "status": status.value,
        "task_index": task.index,
        "task_count": task.count,
        "execution": task.execution,
        "attempt": task.attempt,
        "run_id": run_id,
        "stop_reason": stop_reason,
        "records": sum(r.records for r in ordered if r.object),
        "records_fetched": sum(r.records for r in fetched if r.state != UnitState.KEPT),
        "records_reused": sum(r.records for r in ordered if r.state == UnitState.REUSED),
        "duplicates": sum(r.duplicates for r in ordered),
        "bytes_written": sum(r.size for r in fetched),
        "pages": state["pages"],
        "requests": state["requests"],
        "auth_requests": state["auth_requests"],
        "rereads": state["rereads"],
        "retries": state["retries"],
        "skipped_pages": state["skipped_pages"],
        "units": unit_counts(r.state for r in ordered),
        "unit_reports": [r.as_dict() for r in ordered],
        "duration_seconds": round(duration, 3),
        "error": str(error) if error else None,
    }


def run_summary(outcome: Outcome, tasks: list[dict[str, Any]], result: ObjectInfo | None, *,
                settings: Settings, currency: str, duration: float,
                resources: Mapping[str, Any]) -> dict[str, Any]:
    """`summary.json` of an execution, from every task's summary and the composed result."""
    merged = merge(tasks)
    units = [u for t in tasks for u in t.get("unit_reports", [])]
    if result is None:
        merged["records"] = 0
    return {
        "status": outcome.status.value,
        "exit_code": outcome.exit_code,
        "start_date": settings.start_date.isoformat(),
        "end_date": settings.end_date.isoformat(),
        "accounts": [a.name for a in settings.accounts],
        "currency": currency or None,
        **merged,
        "reused_days": days_in(units, UnitState.REUSED),
        "kept_days": days_in(units, UnitState.KEPT),
        "changes": total_changes([u["change"] for u in units if u.get("change")]),
        "duration_seconds": round(duration, 3),
        "result": ({"uri": result.uri, "name": result.name, "size": result.size,
                    "crc32c": result.crc32c} if result is not None else None),
        "resources": dict(resources),
        "execution": settings.task.execution,
        "task_count": settings.task.count,
        "stop_reason": next((t.get("stop_reason") for t in tasks if t.get("stop_reason")), None),
    }


def merge(task_summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several task summaries (records, pages, requests, retries, skips)."""
    retries: collections.Counter[str] = collections.Counter()
    skipped: list[dict[str, Any]] = []
    totals = {"records": 0, "records_fetched": 0, "records_reused": 0, "pages": 0,
              "requests": 0, "auth_requests": 0, "bytes_written": 0, "duplicates": 0,
              "rereads": 0}
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
             "records": u.get("records", 0), **_kept_fields(u)}
            for u in unit_reports if u.get("state") == state]
    return sorted(days, key=lambda d: (str(d["account"]), str(d["date"])))


def _kept_fields(unit: Mapping[str, Any]) -> dict[str, Any]:
    """A kept day's `reason`, and for `shrank` both counts: the kept snapshot's records and the
    fetch's."""
    if unit.get("state") != UnitState.KEPT:
        return {}
    reason = unit.get("reason") or "incomplete"
    if reason != "shrank":
        return {"reason": reason}
    return {"reason": reason, "kept_records": unit.get("records", 0),
            "fetched_records": unit.get("fetched_records")}
