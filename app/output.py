"""How a unit's chunks become one stored object (`UnitOutput`), and JSON objects on a sink
(`put_json`, `read_json`). Where each object lives is `app.store`'s business.

An object is either wholly there or absent (the sink guarantees it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app.errors import AlreadyExists
from app.sinks import ObjectInfo, Sink
from app.writer import Chunk


class UnitOutput:
    """Receives a unit's chunks from its writer and turns them into one stored object.

    At most two chunk files exist locally: the newest one is held back, so a unit that fits in
    one chunk is stored as its part directly; a bigger one goes up chunk by chunk and is composed.
    """

    def __init__(self, *, sink: Sink, chunk_name: Callable[[int], str]) -> None:
        self.sink = sink
        self.chunk_name = chunk_name
        self._pending: Chunk | None = None
        self._uploaded: list[str] = []

    def on_chunk(self, chunk: Chunk) -> None:
        if self._pending is not None:
            self._upload_pending()
        self._pending = chunk

    def _upload_pending(self) -> None:
        assert self._pending is not None
        name = self.chunk_name(self._pending.index)
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


def write_conditionally(sink: Sink, name: str, write: Callable[[int], ObjectInfo], *,
                        replace_if: Callable[[ObjectInfo], bool] | None = None) -> ObjectInfo:
    """The one conditional write: `write(0)` creates `name` only if it is absent; when it exists and
    `replace_if(existing)` agrees, `write(generation)` replaces exactly the version looked at (so two
    writers cannot both replace it). Otherwise `AlreadyExists` is raised."""
    try:
        return write(0)
    except AlreadyExists:
        if replace_if is None:
            raise
        info = sink.stat(name)
        if info is None or not replace_if(info):
            raise
        return write(info.generation)


def put_json(sink: Sink, name: str, payload: dict[str, Any], *,
             replace_if: Callable[[dict[str, Any]], bool] | None = None) -> ObjectInfo:
    """Write JSON create-only; when it exists and `replace_if(existing JSON)` is true, replace it
    by generation (`write_conditionally`)."""
    data = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True).encode()

    def write(generation: int) -> ObjectInfo:
        return sink.put_bytes(name, data, content_type="application/json",
                              if_generation_match=generation)

    def replace(_info: ObjectInfo) -> bool:
        existing = read_json(sink, name)
        return replace_if is not None and existing is not None and replace_if(existing)

    return write_conditionally(sink, name, write, replace_if=replace if replace_if else None)


def read_json(sink: Sink, name: str) -> dict[str, Any] | None:
    raw = sink.get_bytes(name)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

