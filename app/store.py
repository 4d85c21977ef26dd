"""Where bytes live, and the rules for replacing them: the day store and the runs.

    days/account={account}/date={YYYY-MM-DD}/conversions.ndjson.gz
        The current snapshot of one (account, day): the durable data. Its metadata (GCS object
        metadata; locally a sidecar) says when it was fetched, by which execution, how many
        records, whether it is complete, in which currency, and the counts by status.
    runs/{START}_{END}/{EXECUTION}/
        conversions.ndjson.gz       the range as this execution delivered it
        summary.json                written last
        tasks/task-{index:05d}.json one task's own summary (rewritten by each attempt)
        parts/{account}/{date}/{run}.ndjson.gz   scratch: the run's copy of each day
        chunks/...                  scratch: chunks of a big day, composed into its part

Rules (see the contract, "Output layout"):
- A complete snapshot in the same currency that is younger than SNAPSHOT_MAX_AGE, or was
  written by this same execution, is reused (this is resume).
- A fetch replaces the day's snapshot atomically, by generation, only when it ranks higher:
  complete beats incomplete, and between two of the same kind the later fetch wins. So an
  incomplete fetch never replaces a complete snapshot, and an older fetch never a newer one.
  The job's `settle` (app/outcome.py) may still refuse a replacement that ranks higher: a
  complete fetch that lacks records of the complete snapshot it would replace.
- Each replacement is compared with the snapshot it replaces (`DayChange`): the old snapshot
  is streamed against the new day's id -> status map, so memory holds one day's map.
- A snapshot records, in its metadata (CHANGES_KEY), every change its execution made to the
  day so far, written in the same compose: a task retry that finds it (reused, or replaced
  again) still reports what the earlier attempt changed, even when that attempt never heard
  its replace succeed.

Each execution serves its result from its own copies under `parts/` (fetched days, and copies
of the snapshots it reused or kept), so a concurrent execution replacing a day never changes
what this one delivers.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import gzip
import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app import jsoncodec
from app.errors import AlreadyExists, StorageError
from app.models import IdKey, id_key
from app.sinks import ObjectInfo, Sink

DAYS_PREFIX = "days/"
RUNS_PREFIX = "runs/"
RACE_ATTEMPTS = 5
"""A write or a copy that loses a race with another execution (the day's snapshot replaced
meanwhile) looks again; this many times at most (replace, reuse, keep)."""
CHANGES_KEY = "execution_changes"
"""Snapshot metadata: the changes the snapshot's execution made to the day, all its attempts
so far (JSON: added, removed, transitions)."""


def day_object(account: str, date: str) -> str:
    """The snapshot of (account, day), in hive-style folders that BigQuery and DuckDB read."""
    return f"{DAYS_PREFIX}account={account}/date={date}/conversions.ndjson.gz"


@dataclass(frozen=True)
class RunLayout:
    """The objects of one execution of one range."""

    range_name: str
    execution: str

    @property
    def prefix(self) -> str:
        return f"{RUNS_PREFIX}{self.range_name}/{self.execution}/"

    @property
    def result(self) -> str:
        return f"{self.prefix}conversions.ndjson.gz"

    @property
    def summary(self) -> str:
        return f"{self.prefix}summary.json"

    def task_summary(self, index: int) -> str:
        return f"{self.prefix}tasks/task-{index:05d}.json"

    def part(self, account: str, date: str, run_id: str) -> str:
        return f"{self.prefix}parts/{account}/{date}/{run_id}.ndjson.gz"

    def chunk(self, account: str, date: str, run_id: str, index: int) -> str:
        return f"{self.prefix}chunks/{account}/{date}/{run_id}-{index:05d}.ndjson.gz"

    @property
    def scratch_prefixes(self) -> tuple[str, ...]:
        """What may be deleted once the result is written."""
        return (f"{self.prefix}parts/", f"{self.prefix}chunks/")


# -- snapshot metadata -------------------------------------------------------------------------


def iso_utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class SnapshotMeta:
    """What a day snapshot says about itself."""

    fetched_at: float
    """Wall-clock time (epoch seconds) the fetch of this snapshot started."""
    execution: str
    records: int
    complete: bool
    currency: str
    """The `PREFERRED_CURRENCY` it was fetched in; "" for the accounts' local currency."""
    statuses: Mapping[str, int] = field(default_factory=dict)
    """Records by `conversion_status`."""

    def to_metadata(self) -> dict[str, str]:
        return {
            "fetched_at": iso_utc(self.fetched_at),
            "execution": self.execution,
            "records": str(self.records),
            "complete": "true" if self.complete else "false",
            "currency": self.currency,
            "status_counts": json.dumps(dict(sorted(self.statuses.items())), ensure_ascii=False),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> SnapshotMeta | None:
        """None when the metadata is missing or unreadable: such a snapshot ranks lowest."""
        try:
            statuses = json.loads(metadata.get("status_counts") or "{}")
            return cls(
                fetched_at=dt.datetime.fromisoformat(metadata["fetched_at"]).timestamp(),
                execution=metadata["execution"],
                records=int(metadata["records"]),
                complete=metadata["complete"] == "true",
                currency=metadata.get("currency", ""),
                statuses={str(k): int(v) for k, v in statuses.items()},
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            return None

    @property
    def rank(self) -> tuple[bool, float]:
        return (self.complete, self.fetched_at)


@dataclass(frozen=True)
class Snapshot:
    info: ObjectInfo
    meta: SnapshotMeta | None

    @property
    def rank(self) -> tuple[bool, float]:
        return self.meta.rank if self.meta is not None else (False, float("-inf"))

    @property
    def complete(self) -> bool:
        return self.meta is not None and self.meta.complete


# -- reading many days at once -----------------------------------------------------------------

_DAY_NAME = re.compile(
    r"^days/account=(?P<account>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/conversions\.ndjson\.gz$")


def date_prefixes(start: dt.date, end: dt.date) -> list[str]:
    """Prefixes of `YYYY-MM-DD` that together cover start..end, for listing few objects in few
    requests: the month when the range touches at most two months (a 14-day window: at most
    2 listings of at most 31 objects), else the year (a 90-day range: one listing per year it
    touches, at most 366 objects, one GCS list page)."""
    months = (end.year - start.year) * 12 + end.month - start.month + 1
    if months <= 2:
        first = start.replace(day=1)
        second = end.replace(day=1)
        return sorted({f"{first:%Y-%m}-", f"{second:%Y-%m}-"})
    return [f"{year:04d}-" for year in range(start.year, end.year + 1)]


def stored_days(sink: Sink, start: dt.date, end: dt.date, accounts: Sequence[str] | None = None
                ) -> tuple[list[str], dict[tuple[str, str], Snapshot]]:
    """The day snapshots from start to end, read from listings, never one stat per day: a GCS
    listing carries each object's metadata (locally, the sidecars are read with it).

    With `accounts`, one listing per account and `date_prefixes` entry; without, one listing of
    the whole `days/` (every account ever stored, then kept to the range). Returns the accounts
    (`accounts` as given, else every account found, sorted) and the snapshots by
    (account, YYYY-MM-DD)."""
    if accounts is None:
        infos = sink.list(DAYS_PREFIX)
    else:
        infos = [info for account in accounts for prefix in date_prefixes(start, end)
                 for info in sink.list(f"{DAYS_PREFIX}account={account}/date={prefix}")]
    low, high = start.isoformat(), end.isoformat()
    found: dict[tuple[str, str], Snapshot] = {}
    seen: set[str] = set()
    for info in infos:
        match = _DAY_NAME.match(info.name)
        if match is None:
            continue
        seen.add(match["account"])
        if low <= match["date"] <= high:
            found[(match["account"], match["date"])] = Snapshot(
                info, SnapshotMeta.from_metadata(info.metadata))
    return (list(accounts) if accounts is not None else sorted(seen)), found


# -- what changed ------------------------------------------------------------------------------


@dataclass
class DayChange:
    """A snapshot against the one it replaced (no earlier snapshot: every record is added)."""

    account: str
    date: str
    added: int = 0
    removed: int = 0
    transitions: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.transitions)

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "date": self.date, "added": self.added,
                "removed": self.removed, "transitions": dict(sorted(self.transitions.items()))}

    def plus(self, other: DayChange | None) -> DayChange:
        """Both changes, one after the other (counts and transitions add up)."""
        if other is None:
            return self
        return DayChange(self.account, self.date, self.added + other.added,
                         self.removed + other.removed, self.transitions + other.transitions)

    def to_metadata(self) -> str:
        return json.dumps({"added": self.added, "removed": self.removed,
                           "transitions": dict(sorted(self.transitions.items()))},
                          ensure_ascii=False, separators=(",", ":"))


def recorded_change(snapshot: Snapshot | None, account: str, date: str,
                    execution: str) -> DayChange | None:
    """What `execution` changed in the day so far, as recorded in the snapshot it wrote; None
    when another execution wrote it, or it records nothing readable."""
    if snapshot is None or snapshot.meta is None or snapshot.meta.execution != execution:
        return None
    try:
        raw = json.loads(snapshot.info.metadata[CHANGES_KEY])
        return DayChange(account, date, int(raw["added"]), int(raw["removed"]),
                         collections.Counter({str(k): int(v)
                                              for k, v in raw["transitions"].items()}))
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


def compare(account: str, date: str, old: Sink | None, old_name: str | None,
            new_statuses: Mapping[IdKey, str]) -> DayChange:
    """Stream the old snapshot (if any) against the new day's id -> status map."""
    change = DayChange(account, date)
    matched = 0
    if old is not None and old_name is not None:
        with old.open_read(old_name) as raw, gzip.GzipFile(fileobj=raw) as lines:
            for line in lines:
                if not line.strip():
                    continue
                record = jsoncodec.loads(line)
                key = id_key(record.get("conversion_id"))
                if key is None:
                    continue
                status = new_statuses.get(key)
                if status is None:
                    change.removed += 1
                    continue
                matched += 1
                before = str(record.get("conversion_status"))
                if before != status:
                    change.transitions[f"{before}->{status}"] += 1
    change.added = len(new_statuses) - matched
    return change


def total_changes(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's `changes`: totals over `days` (each a DayChange.as_dict()), and the days
    that changed."""
    transitions: collections.Counter[str] = collections.Counter()
    for day in days:
        transitions.update(day.get("transitions") or {})
    changed = [d for d in days if d.get("added") or d.get("removed") or d.get("transitions")]
    return {
        "added": sum(int(d.get("added", 0)) for d in days),
        "removed": sum(int(d.get("removed", 0)) for d in days),
        "transitions": dict(sorted(transitions.items())),
        "days": sorted(changed, key=lambda d: (str(d["account"]), str(d["date"]))),
    }


# -- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replacement:
    """What `DayStore.replace` did: replaced the snapshot (with its change), or kept the
    current one because it ranks higher."""

    replaced: bool
    current: Snapshot | None
    change: DayChange | None = None
    total: DayChange | None = None
    """With `change`: every change this execution made to the day, earlier attempts included
    (what the summary counts; `change` alone is what this replace did)."""


class DayStore:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def look(self, account: str, date: str) -> Snapshot | None:
        info = self.sink.stat(day_object(account, date))
        if info is None:
            return None
        return Snapshot(info, SnapshotMeta.from_metadata(info.metadata))

    @staticmethod
    def reusable(snapshot: Snapshot | None, *, now: float, max_age: float, execution: str,
                 currency: str) -> bool:
        """A complete snapshot in this currency, written by this execution or younger than
        `max_age` seconds."""
        if snapshot is None or snapshot.meta is None or not snapshot.meta.complete:
            return False
        meta = snapshot.meta
        if meta.currency != currency:
            return False
        return meta.execution == execution or now - meta.fetched_at < max_age

    def replace(self, account: str, date: str, source: ObjectInfo, meta: SnapshotMeta,
                statuses: Mapping[IdKey, str], *,
                accept: Callable[[Snapshot | None, DayChange | None], bool] = lambda _s, _c: True,
                ) -> Replacement:
        """Make `source` (this run's copy) the day's snapshot if it ranks above the current one
        and `accept(current, change)` agrees (the job's `settle`; `change` is None when the
        current snapshot ranks at or above the fetch, for then nothing is compared).

        The write is conditional on the generation looked at, so a concurrent replacement
        makes it look again (and ask `accept` again) rather than overwrite; the change is
        computed against exactly the version replaced."""
        name = day_object(account, date)
        for _ in range(RACE_ATTEMPTS):
            current = self.look(account, date)
            if current is not None and current.rank >= meta.rank:
                accept(current, None)
                return Replacement(False, current)
            try:
                change = compare(account, date, self.sink if current else None,
                                 name if current else None, statuses)
            except (OSError, EOFError, ValueError, zlib.error):
                # An unreadable old snapshot (not gzip NDJSON): replace it, count all as added.
                change = compare(account, date, None, None, statuses)
            if not accept(current, change):
                return Replacement(False, current, change)
            total = change.plus(recorded_change(current, account, date, meta.execution))
            try:
                info = self.sink.compose(
                    name, [source.name],
                    metadata={**meta.to_metadata(), CHANGES_KEY: total.to_metadata()},
                    if_generation_match=current.info.generation if current else 0)
            except AlreadyExists:
                continue
            return Replacement(True, Snapshot(info, meta), change, total)
        raise StorageError(f"{name}: replaced concurrently {RACE_ATTEMPTS} times in a row")

    def copy_for_run(self, snapshot: Snapshot, target: str) -> ObjectInfo | None:
        """Copy `snapshot` into this run's folder as `target`; None when the day's snapshot
        was replaced meanwhile (the copy then holds other bytes and is removed)."""
        info = self.sink.compose(target, [snapshot.info.name], if_generation_match=0)
        if info.crc32c == snapshot.info.crc32c and info.size == snapshot.info.size:
            return info
        with contextlib.suppress(StorageError):  # scratch: swept with the rest if it stays
            self.sink.delete(target)
        return None
