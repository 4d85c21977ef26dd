"""The run summary: one task's account of its work, and the merge of every task's into
`summary.json` (fields listed in the contract)."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any

SUCCEEDED = "succeeded"
PARTIAL = "partial"
FAILED = "failed"

EXIT_OK = 0
EXIT_RETRY = 1
EXIT_CONFIG = 2
EXIT_SKIPPED = 3


def status_of(*, failed: bool, partial: bool) -> str:
    if failed:
        return FAILED
    return PARTIAL if partial else SUCCEEDED


def exit_code_for(status: str, *, fatal: bool = False, fail_on_skipped: bool = True) -> int:
    if fatal:
        return EXIT_CONFIG
    if status == FAILED:
        return EXIT_RETRY
    if status == PARTIAL and fail_on_skipped:
        return EXIT_SKIPPED
    return EXIT_OK


def merge(task_summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several task summaries (records, pages, requests, retries, skips)."""
    retries: collections.Counter[str] = collections.Counter()
    skipped: list[dict[str, Any]] = []
    totals = {"records": 0, "pages": 0, "requests": 0, "bytes_written": 0, "duplicates": 0,
              "rereads": 0}
    units = {"total": 0, "done": 0, "partial": 0, "failed": 0}
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
