"""Gzip NDJSON for one unit: records streamed to disk as they arrive, each `conversion_id` once.

A `UnitWriter` owns one (account, day): it appends each new record (the API's object plus
`"_account"`) as one JSON line to a gzip file in a scratch folder, drops records whose
`conversion_id` it has already written, and hands a finished chunk file to `on_chunk` whenever
the chunk's uncompressed content passes `chunk_bytes`, so a day of 5,000 pages never holds more than one chunk
on the container's disk (which is RAM on Cloud Run). Each chunk is a complete gzip member;
concatenated chunks are one valid gzip stream.

Memory: the ids seen in the unit, each with its `conversion_status`, in a dict: about 100-130
bytes per id (a small int object plus its hash-table slot; statuses are shared strings), e.g.
~12 MB for a 100,000-record day. The map outlives `close()` for the change report against the
day's previous snapshot (`statuses`), and is released by `release()` or `discard()`.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from app.jsoncodec import dumps_refused
from app.models import IdKey, id_key

CHUNK_BYTES = 64 * 1024 * 1024
"""Uncompressed NDJSON bytes per chunk before it is handed off (about 100,000 typical records,
6-10 MB once gzipped). Counted before compression because zlib holds output back internally,
so the file's size lags behind what has been written."""

GZIP_LEVEL = 3
"""zlib's fast strategy. Measured on a day of simulator records: level 3 compresses a page of
100 records in ~200 µs to 9.9 % of its size, level 6 (gzip's default) in ~460 µs to 7.7 %. At
level 6 compression was a fifth of the job's CPU; objects ~28 % bigger cost far less than
that CPU, and bigger chunks do not change memory (chunks are cut by uncompressed size)."""


@dataclass(frozen=True)
class Chunk:
    """A finished gzip file of the unit, ready to store."""

    index: int
    path: Path
    records: int
    size: int


class UnitWriter:
    def __init__(
        self,
        *,
        account: str,
        scratch_dir: Path,
        on_chunk: Callable[[Chunk], None],
        chunk_bytes: int = CHUNK_BYTES,
        take_record: Callable[[], bool] | None = None,
    ) -> None:
        self.account = account
        self.scratch_dir = scratch_dir
        self.chunk_bytes = chunk_bytes
        self._on_chunk = on_chunk
        self._take_record = take_record
        self._seen: dict[IdKey, str] = {}
        self._status_names: dict[object, str] = {}
        self.records = 0
        self.duplicates = 0
        self.chunks = 0
        self._raw: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None
        self._path: Path | None = None
        self._chunk_records = 0
        self._chunk_raw = 0
        self._comma_account_field = (
            f',"_account":{json.dumps(account, ensure_ascii=False)}}}\n'.encode())
        self.capped = False

    def _open(self) -> gzip.GzipFile:
        if self._gz is None:
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="chunk-", suffix=".ndjson.gz",
                                        dir=self.scratch_dir)
            self._path = Path(name)
            self._raw = os.fdopen(fd, "wb")
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=GZIP_LEVEL,
                                     mtime=0)
            self._chunk_records = 0
            self._chunk_raw = 0
        return self._gz

    def write(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append the records not seen before; return how many were new."""
        # The per-record loop is the job's hottest Python code: names are bound locally and
        # the common case (an int id, a record orjson takes) makes no function call of ours.
        lines: list[bytes] = []
        append = lines.append
        dumps = orjson.dumps
        seen = self._seen
        names = self._status_names
        take = self._take_record
        with_account = self._comma_account_field
        duplicates = 0
        for record in records:
            key = record.get("conversion_id")
            if type(key) is not int:
                key = id_key(key)
            if key is not None:
                if key in seen:
                    duplicates += 1
                    continue
                if take is not None and not take():
                    self.capped = True
                    break
                status = record.get("conversion_status")
                name = names.get(status)
                if name is None:
                    name = names[status] = str(status)
                seen[key] = name
            elif take is not None and not take():
                self.capped = True
                break
            clean = record if "_account" not in record else {
                k: v for k, v in record.items() if k != "_account"}
            try:  # app.jsoncodec's rule for writing, inlined
                head = dumps(clean)
            except TypeError:  # orjson.JSONEncodeError
                head = dumps_refused(clean)
            append(head[:-1] + with_account if len(head) > 2 else b"{" + with_account[1:])
        self.duplicates += duplicates
        if not lines:
            return 0
        gz = self._open()
        data = b"".join(lines)
        gz.write(data)
        self.records += len(lines)
        self._chunk_records += len(lines)
        self._chunk_raw += len(data)
        if self._chunk_raw >= self.chunk_bytes:
            self._finish_chunk()
        return len(lines)

    def _finish_chunk(self) -> None:
        if self._gz is None or self._raw is None or self._path is None:
            return
        self._gz.close()
        self._raw.flush()
        size = self._raw.tell()
        self._raw.close()
        chunk = Chunk(self.chunks, self._path, self._chunk_records, size)
        self._gz = self._raw = self._path = None
        self.chunks += 1
        self._on_chunk(chunk)

    @property
    def statuses(self) -> dict[IdKey, str]:
        """Every id written, with its `conversion_status` (kept until `release`)."""
        return self._seen

    def release(self) -> None:
        """Drop the id map (after the change report)."""
        self._seen = {}
        self._status_names = {}

    def close(self) -> None:
        """Hand off the last chunk (an empty unit still produces one, empty, gzip member)."""
        if self._gz is None and self.chunks == 0:
            self._open()
        self._finish_chunk()

    def discard(self) -> None:
        """Drop the open chunk without handing it off (the unit will be fetched again)."""
        if self._gz is not None and self._raw is not None:
            self._gz.close()
            self._raw.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._gz = self._raw = self._path = None
        self.release()
