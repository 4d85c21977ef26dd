"""The day store's rules on their own: which snapshot ranks higher, when one is reused, and the
change report streamed from an old snapshot (on a real local sink)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from app.sinks import LocalSink
from app.store import DayStore, Snapshot, SnapshotMeta, compare, day_object

NOW = 1_800_000_000.0


def _meta(*, fetched_at: float = NOW, complete: bool = True, execution: str = "e1",
          currency: str = "USD") -> SnapshotMeta:
    return SnapshotMeta(fetched_at=fetched_at, execution=execution, records=3,
                        complete=complete, currency=currency, statuses={"pending": 3})


def _snapshot(sink: LocalSink, meta: SnapshotMeta | None, records: list[dict[str, object]],
              account: str = "a", date: str = "2025-01-01") -> Snapshot:
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    info = sink.put_bytes(day_object(account, date), data, content_type="application/gzip",
                          if_generation_match=None,
                          metadata=meta.to_metadata() if meta else None)
    return Snapshot(info, meta)


def test_metadata_round_trips_and_unreadable_metadata_ranks_lowest(tmp_path: Path) -> None:
    """A snapshot's metadata reads back as written; missing metadata means "ranks below any
    fetch", so even an incomplete fetch replaces it."""
    meta = _meta(complete=False)
    assert SnapshotMeta.from_metadata(meta.to_metadata()) == meta
    assert SnapshotMeta.from_metadata({"fetched_at": "yesterday"}) is None
    sink = LocalSink(tmp_path)
    bare = _snapshot(sink, None, [])
    assert bare.rank < _meta(complete=False, fetched_at=0).rank


def test_complete_beats_incomplete_and_newer_beats_older() -> None:
    """The replace order: an incomplete fetch never outranks a complete snapshot, and between
    two of a kind the later fetch wins."""
    assert _meta(complete=True, fetched_at=1).rank > _meta(complete=False, fetched_at=9).rank
    assert _meta(fetched_at=9).rank > _meta(fetched_at=1).rank
    assert _meta(complete=False, fetched_at=9).rank > _meta(complete=False, fetched_at=1).rank


def test_reuse_needs_complete_same_currency_and_fresh_or_own(tmp_path: Path) -> None:
    """Reused: complete, same currency, and younger than SNAPSHOT_MAX_AGE or written by this
    execution (a task retry) even when SNAPSHOT_MAX_AGE is 0."""
    sink = LocalSink(tmp_path)
    fresh = _snapshot(sink, _meta(fetched_at=NOW - 60), [])

    def reusable(snapshot: Snapshot | None, *, max_age: float = 3600, execution: str = "e2",
                 currency: str = "USD") -> bool:
        return DayStore.reusable(snapshot, now=NOW, max_age=max_age, execution=execution,
                                 currency=currency)

    assert reusable(fresh)
    assert not reusable(fresh, max_age=30)  # too old
    assert not reusable(fresh, currency="MYR")
    assert not reusable(fresh, currency="")
    assert reusable(fresh, max_age=0, execution="e1")  # this execution's own
    assert not reusable(_snapshot(sink, _meta(complete=False), []), execution="e1")
    assert not reusable(None)


def test_the_change_report_streams_the_old_snapshot_against_the_new_map(tmp_path: Path) -> None:
    """Added, removed and transitions, exactly; an id past 64 bits is matched exactly (not as
    the float orjson would make of it); ids written as digit strings match their numbers."""
    sink = LocalSink(tmp_path)
    big = 2**70 + 1
    old = [{"conversion_id": 1, "conversion_status": "pending"},
           {"conversion_id": "2", "conversion_status": "pending"},
           {"conversion_id": 3, "conversion_status": "approved"},
           {"conversion_id": big, "conversion_status": "pending"}]
    snapshot = _snapshot(sink, _meta(), old)
    new = {1: "approved", 2: "pending", big: "rejected", 4: "pending", 5: "approved"}
    change = compare("a", "2025-01-01", sink, snapshot.info.name, new)
    assert (change.added, change.removed) == (2, 1)
    assert dict(change.transitions) == {"pending->approved": 1, "pending->rejected": 1}
    first = compare("a", "2025-01-01", None, None, new)
    assert (first.added, first.removed, dict(first.transitions)) == (5, 0, {})
