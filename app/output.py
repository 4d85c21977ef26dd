"""The run's objects: where each lives (`Layout`) and how a unit's chunks become its part
(`UnitOutput`), on top of any `Sink`.

    RANGE/parts/{account}/{day}.ndjson.gz     a complete unit (create-only)
    RANGE/units/{account}/{day}.json          its manifest: records, pages, size, crc32c
    RANGE/partial/{account}/{day}/{run}.ndjson.gz   a unit that kept skipped pages
    RANGE/chunks/{account}/{day}/{run}-{i}.ndjson.gz  chunks of a big unit, composed, then deleted
    RANGE/tasks/task-{index}.json             one task's summary (rewritten by each attempt)
    RANGE/conversions.ndjson.gz               the result
    RANGE/summary.json                        the run summary, written last

An object is either wholly there or absent (the sink guarantees it), so "the part exists" means
"the unit is complete" and a killed task resumes by listing `parts/`.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

from app.errors import AlreadyExists
from app.sinks import ObjectInfo, Sink
from app.writer import Chunk


@dataclass(frozen=True)
class Layout:
    range_name: str

    @property
    def parts_prefix(self) -> str:
        return f"{self.range_name}/parts/"

    def part(self, account: str, day: str) -> str:
        return f"{self.range_name}/parts/{account}/{day}.ndjson.gz"

    def manifest(self, account: str, day: str) -> str:
        return f"{self.range_name}/units/{account}/{day}.json"

    def partial(self, account: str, day: str, run_id: str) -> str:
        return f"{self.range_name}/partial/{account}/{day}/{run_id}.ndjson.gz"

    def chunk(self, account: str, day: str, run_id: str, index: int) -> str:
        return f"{self.range_name}/chunks/{account}/{day}/{run_id}-{index:05d}.ndjson.gz"

    @property
    def chunks_prefix(self) -> str:
        return f"{self.range_name}/chunks/"

    def task_summary(self, index: int) -> str:
        return f"{self.range_name}/tasks/task-{index:05d}.json"

    @property
    def result(self) -> str:
        return f"{self.range_name}/conversions.ndjson.gz"

    @property
    def summary(self) -> str:
        return f"{self.range_name}/summary.json"


class UnitOutput:
    """Receives a unit's chunks from its writer and turns them into one stored object.

    At most two chunk files exist locally: the newest one is held back, so a unit that fits in
    one chunk is stored as its part directly; a bigger one goes up chunk by chunk and is composed.
    """

    def __init__(self, *, sink: Sink, layout: Layout, account: str, day: str, run_id: str) -> None:
        self.sink = sink
        self.layout = layout
        self.account = account
        self.day = day
        self.run_id = run_id
        self._pending: Chunk | None = None
        self._uploaded: list[str] = []
        self.records = 0

    def on_chunk(self, chunk: Chunk) -> None:
        self.records += chunk.records
        if self._pending is not None:
            self._upload_pending()
        self._pending = chunk

    def _upload_pending(self) -> None:
        assert self._pending is not None
        name = self.layout.chunk(self.account, self.day, self.run_id, self._pending.index)
        # Create-only: chunk names are unique per run, so the client may retry the upload safely.
        self.sink.put_file(name, self._pending.path)
        self._pending.path.unlink(missing_ok=True)
        self._uploaded.append(name)
        self._pending = None

    def finish(self, name: str) -> ObjectInfo:
        """Store everything received as the object `name` (create-only)."""
        try:
            if not self._uploaded and self._pending is not None:
                return self.sink.put_file(name, self._pending.path)
            if self._pending is not None:
                self._upload_pending()
            return self.sink.compose(name, self._uploaded)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove local and uploaded chunks (best effort: leftovers are swept after the result)."""
        if self._pending is not None:
            self._pending.path.unlink(missing_ok=True)
            self._pending = None
        for name in self._uploaded:
            try:
                self.sink.delete(name)
            except Exception:  # noqa: S112 - cleanup must not mask the real outcome
                continue
        self._uploaded = []


def put_json(sink: Sink, name: str, payload: dict[str, Any], *,
             replace_if: Any = None) -> ObjectInfo:
    """Write JSON create-only; when it exists and `replace_if(existing)` is true, replace it by
    generation (so two writers cannot both replace the same version)."""
    data = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True).encode()
    try:
        return sink.put_bytes(name, data, content_type="application/json")
    except AlreadyExists:
        if replace_if is None:
            raise
        info = sink.stat(name)
        existing = read_json(sink, name)
        if info is None or existing is None or not replace_if(existing):
            raise
        return sink.put_bytes(name, data, content_type="application/json",
                              if_generation_match=info.generation)


def read_json(sink: Sink, name: str) -> dict[str, Any] | None:
    raw = sink.get_bytes(name)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def count_lines(sink: Sink, name: str) -> int:
    """Records in a stored gzip NDJSON object (used when a part's manifest was lost to a kill)."""
    with sink.open_read(name) as raw, gzip.GzipFile(fileobj=raw) as gz:
        return sum(1 for _ in gz)

