"""What both sinks share: the `Sink` protocol, `ObjectInfo`, checksums, names and limits.

Kept apart from `app/sinks/__init__.py` so `local.py` and `gcs.py` import it without importing
the package that imports them (no import cycle).
"""

from __future__ import annotations

import base64
import builtins
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import google_crc32c

from app.errors import StorageError, truncate
from app.redaction import redact_text

COMPOSE_MAX_SOURCES = 32
"""GCS compose accepts at most this many sources per call; more are composed in rounds."""

COMPOSE_SCRATCH = "_compose"
"""Composing more than COMPOSE_MAX_SOURCES sources writes intermediate objects under
`{directory of the target}/_compose/{random}/`, deleted when the compose ends. A process
killed during a compose leaves them: `is_compose_scratch` names them for a later sweep."""

UPLOAD_CHUNK_SIZE = 1024 * 1024
"""Files above this size go up as resumable uploads in chunks of this size (a multiple of
256 KiB, as GCS requires). Smaller files go in one multipart request, which the client builds
in memory: twice the file's size. Left to itself the client would do that up to 8 MiB, and
the peak memory of a run would grow with its largest day; with 1 MiB the extra requests
cost a few milliseconds per part and memory stays flat."""

READ_CHUNK_SIZE = 1024 * 1024
"""Local streaming copies and checksums read this much at a time."""

TEMP_SUFFIX = ".tmp"
"""Local temp files are named ".<name>.<random>.tmp"; such names are never objects."""

SIDECAR_SUFFIX = ".meta.json"
"""The local sink keeps an object's metadata in `{object}.meta.json` beside it (GCS keeps it as
object metadata). Such names are reserved: never an object, never listed."""

COMPOSED_FROM = "composed_from"
"""Reserved metadata key: the GCS sink marks each object it composes with a digest of the
pieces it concatenates (see `app/sinks/gcs.py`). Callers may not use it, and `ObjectInfo.metadata`
never shows it."""


def is_compose_scratch(name: str) -> bool:
    """Whether `name` is an intermediate object of some compose (see COMPOSE_SCRATCH)."""
    return f"/{COMPOSE_SCRATCH}/" in f"/{name}"


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object, as the sink sees it."""

    name: str
    """Relative name under the sink root."""
    uri: str
    """"gs://bucket/prefix/<name>" or the local file path."""
    size: int
    """Bytes."""
    crc32c: str
    """Base64 of the big-endian CRC32C, exactly as GCS reports it."""
    generation: int
    """GCS generation; local sink: the file's st_mtime_ns (strictly increasing per name)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Custom metadata written with the object (GCS object metadata; locally a sidecar file),
    exactly the caller's keys (the sink's own COMPOSED_FROM marker is left out)."""


@dataclass(frozen=True)
class StorageRetry:
    """One storage request that failed and is tried again by the client's retry policy."""

    operation: str
    """"upload", "compose", "stat", "download", "list", "delete" or "read"."""
    object: str
    """The URI of the object (or listing prefix) concerned."""
    error: str
    """What failed, short and secret-free."""


class StorageHealth:
    """How storage is doing in this process, shared by a sink and whoever uses it (thread-safe).

    `retries` counts the storage requests retried so far; `failure` is the error that ended
    storage for the run: an operation that used up its retries, or that storage refused. A
    sink refuses every operation once it has failed (see the contract, "Storage that fails
    mid-run"). Listeners hear of each retry, and of the failure once, in the thread where it
    happened.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.failure: StorageError | None = None
        self._on_retry: list[Callable[[StorageRetry], object]] = []
        self._on_failure: list[Callable[[StorageError], object]] = []

    def watch(self, *, on_retry: Callable[[StorageRetry], object] | None = None,
              on_failure: Callable[[StorageError], object] | None = None) -> None:
        with self._lock:
            if on_retry is not None:
                self._on_retry.append(on_retry)
            if on_failure is not None:
                self._on_failure.append(on_failure)

    def retried(self, retry: StorageRetry) -> None:
        with self._lock:
            self.retries += 1
            listeners = list(self._on_retry)
        for listener in listeners:
            listener(retry)

    def fail(self, error: StorageError) -> bool:
        """Storage failed for good; True the first time (listeners are told then)."""
        with self._lock:
            if self.failure is not None:
                return False
            self.failure = error
            listeners = list(self._on_failure)
        for listener in listeners:
            listener(error)
        return True


class Sink(Protocol):
    """Where parts, the result, the summary and task-status objects are stored."""

    root: str
    """"gs://bucket/prefix" or the local root path."""

    health: StorageHealth
    """Retries so far, and whether storage has failed for the run (see StorageHealth)."""

    def last_try(self) -> Sink:
        """A sink on the same storage for the one write left once storage has failed (the
        summary): each operation tried once, with a short deadline, and none after one fails."""
        ...

    def close(self) -> None:
        """Release connections (a local sink holds none)."""
        ...

    def put_file(
        self,
        name: str,
        path: Path,
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store the file at `path` as `name`, verified by crc32c; create-only by default."""
        ...

    def put_bytes(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/json",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store `data` as `name`; create-only by default."""
        ...

    def stat(self, name: str) -> ObjectInfo | None:
        """The object's info, or None when it is absent."""
        ...

    def get_bytes(self, name: str) -> bytes | None:
        """The object's content, or None when it is absent."""
        ...

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Every object whose name starts with `prefix`, sorted by name."""
        ...

    def compose(
        self,
        name: str,
        sources: Sequence[str],
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store the concatenation of `sources` (in order) as `name`; create-only by default.
        `metadata` is the new object's own (a compose never copies its sources')."""
        ...

    def delete(self, name: str) -> None:
        """Remove the object; an absent object is fine."""
        ...

    def open_read(self, name: str) -> BinaryIO:
        """A streaming reader of the object; StorageError when it is absent."""
        ...


# --- checksums -------------------------------------------------------------------------------


def crc_to_b64(value: int) -> str:
    """GCS's notation of a CRC32C value: base64 of its four big-endian bytes."""
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def crc32c_bytes(data: bytes) -> str:
    """Base64 big-endian CRC32C of `data`, in GCS's notation."""
    return crc_to_b64(google_crc32c.value(data))


def crc32c_file(path: Path) -> str:
    """Base64 big-endian CRC32C of a file, read in chunks so any size fits in memory."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK_SIZE):
            crc = google_crc32c.extend(crc, chunk)
    return crc_to_b64(crc)


# --- names, metadata, messages ---------------------------------------------------------------


def check_name(name: str) -> str:
    """A relative, normalised object name; anything else is a bug in the caller."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or "\\" in name
        or "\x00" in name
    ):
        raise ValueError(f"invalid object name {name!r}: expected a relative path like 'a/b.gz'")
    if parts[-1].startswith(".") and parts[-1].endswith(TEMP_SUFFIX):
        raise ValueError(f"invalid object name {name!r}: reserved for temporary files")
    if name.endswith(SIDECAR_SUFFIX):
        raise ValueError(f"invalid object name {name!r}: reserved for metadata sidecars")
    return name


def check_prefix(prefix: str) -> str:
    """A relative listing prefix; anything else is a bug in the caller."""
    if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"invalid prefix {prefix!r}: expected a relative path prefix")
    return prefix


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's metadata as a plain dict; the sink's own key is a caller bug."""
    if metadata and COMPOSED_FROM in metadata:
        raise ValueError(f"metadata key {COMPOSED_FROM!r} is reserved for the sink")
    return dict(metadata or {})


def describe(exc: BaseException) -> str:
    """Short, secret-free text for an exception (type and first few hundred characters)."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {truncate(redact_text(text))}"
