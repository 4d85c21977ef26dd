"""Where the job's bytes end up: one `Sink` interface, two implementations.

    make_sink(bucket=..., ...)  ->  GCSSink    gs://$GCS_BUCKET/$GCS_PREFIX/<name>
    make_sink(bucket=None, ...) ->  LocalSink  $OUTPUT_DIR/<name>

Every name is relative to the sink root ("2025-01-01_2025-01-01/parts/acme/2025-01-01.ndjson.gz").
Nothing outside this module knows which implementation it holds.

Write rules, shared by both sinks:
- Atomic: an object is either wholly there or absent. GCS uploads and composes are atomic by
  nature; locally we write a temp file in the target directory, fsync it, then link/rename it
  into place. Temp files never outlive an exception (only a SIGKILL can leave one; they are
  named ".<name>.<random>.tmp" and never listed).
- `if_generation_match=0` is create-only, an int g replaces only generation g, None is
  unconditional. A failed precondition raises `AlreadyExists`, unless the object already holds
  exactly the bytes we meant to write (same crc32c and size): then the write counts as done and
  its `ObjectInfo` is returned. This is what makes a retried create-only upload safe when its
  first try reached the server but the answer got lost (GCS answers the retry with 412).
- Transient GCS faults (429, 5xx, resets, timeouts) are retried by the client library's policy
  with a deadline; every request carries a timeout. What still fails raises `StorageError` with a
  short message that holds no credentials or upload session ids.

google-cloud-storage is imported only when a GCS sink is built: the import costs about two
seconds, and a local run should not pay for it.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import fcntl
import io
import json
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

import google_crc32c

from app.errors import AlreadyExists, StorageCredentialsError, StorageError, truncate
from app.redaction import redact_text

COMPOSE_MAX_SOURCES = 32
"""GCS compose accepts at most this many sources per call; more are composed in rounds."""

COMPOSE_SCRATCH = "_compose"
"""Composing more than COMPOSE_MAX_SOURCES sources writes intermediate objects under
`{directory of the target}/_compose/{random}/`, deleted when the compose ends. A process
killed during a compose leaves them: `is_compose_scratch` names them for a later sweep."""


def is_compose_scratch(name: str) -> bool:
    """Whether `name` is an intermediate object of some compose (see COMPOSE_SCRATCH)."""
    return f"/{COMPOSE_SCRATCH}/" in f"/{name}"

UPLOAD_CHUNK_SIZE = 1024 * 1024
"""Files above this size go up as resumable uploads in chunks of this size (a multiple of
256 KiB, as GCS requires). Smaller files go in one multipart request, which the client builds
in memory: twice the file's size. Left to itself the client would do that up to 8 MiB, and
the peak memory of a run would grow with its largest day; with 1 MiB the extra requests
cost a few milliseconds per part and memory stays flat."""

READ_CHUNK_SIZE = 1024 * 1024
"""Local streaming copies and checksums read this much at a time."""

_CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected
_TEMP_SUFFIX = ".tmp"
SIDECAR_SUFFIX = ".meta.json"
"""The local sink keeps an object's metadata in `{object}.meta.json` beside it (GCS keeps it as
object metadata). Such names are reserved: never an object, never listed."""


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
    """Custom metadata written with the object (GCS object metadata; locally a sidecar file)."""


class Sink(Protocol):
    """Where parts, the result, the summary and task-status objects are stored."""

    root: str
    """"gs://bucket/prefix" or the local root path."""

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


def _crc_to_b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def _crc_from_b64(text: str) -> int:
    return int.from_bytes(base64.b64decode(text), "big")


def crc32c_bytes(data: bytes) -> str:
    """Base64 big-endian CRC32C of `data`, in GCS's notation."""
    return _crc_to_b64(google_crc32c.value(data))


def crc32c_file(path: Path) -> str:
    """Base64 big-endian CRC32C of a file, read in chunks so any size fits in memory."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK_SIZE):
            crc = google_crc32c.extend(crc, chunk)
    return _crc_to_b64(crc)


def _gf2_times(matrix: builtins.list[int], vector: int) -> int:
    total = 0
    row = 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: builtins.list[int]) -> builtins.list[int]:
    return [_gf2_times(matrix, column) for column in matrix]


def _crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of A+B from crc(A), crc(B) and len(B): apply len(B) zero bytes to crc(A) in GF(2)."""
    if len2 == 0:
        return crc1
    odd = [_CRC32C_POLY] + [1 << bit for bit in range(31)]  # operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # first pass: one zero byte
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def crc32c_concat(pieces: Sequence[tuple[str, int]]) -> str:
    """CRC32C (base64) of the concatenation of pieces given as (crc32c base64, size)."""
    crc = 0
    for piece_crc, size in pieces:
        crc = _crc32c_combine(crc, _crc_from_b64(piece_crc), size)
    return _crc_to_b64(crc)


# --- names -----------------------------------------------------------------------------------


def _check_name(name: str) -> str:
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
    if parts[-1].startswith(".") and parts[-1].endswith(_TEMP_SUFFIX):
        raise ValueError(f"invalid object name {name!r}: reserved for temporary files")
    if name.endswith(SIDECAR_SUFFIX):
        raise ValueError(f"invalid object name {name!r}: reserved for metadata sidecars")
    return name


def _sidecar(path: Path) -> Path:
    """Where the local sink keeps the metadata of the object at `path`."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _check_prefix(prefix: str) -> str:
    if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"invalid prefix {prefix!r}: expected a relative path prefix")
    return prefix


def _redact(text: str) -> str:
    return truncate(redact_text(text))


def _describe(exc: BaseException) -> str:
    """Short, secret-free text for an exception (type and first few hundred characters)."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {_redact(text)}"


# --- local folder ----------------------------------------------------------------------------


class LocalSink:
    """Objects are files under a local folder; same layout and rules as the bucket."""

    def __init__(self, root: Path) -> None:
        self._root = Path(os.path.abspath(root))
        self.root = str(self._root)

    def __repr__(self) -> str:
        return f"LocalSink({self.root!r})"

    def _path(self, name: str) -> Path:
        return self._root.joinpath(*_check_name(name).split("/"))

    def _info(self, name: str, path: Path, crc: str | None = None) -> ObjectInfo:
        st = path.stat()
        crc = crc if crc is not None else crc32c_file(path)
        return ObjectInfo(
            name=name,
            uri=str(path),
            size=st.st_size,
            crc32c=crc,
            generation=st.st_mtime_ns,
            metadata=self._read_sidecar(path, crc, st.st_size),
        )

    def put_file(
        self,
        name: str,
        path: Path,
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        def fill(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(READ_CHUNK_SIZE):
                    out.write(chunk)

        try:
            expected = crc32c_file(path)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {_describe(exc)}") from exc
        return self._write(name, fill, if_generation_match, expected=expected, metadata=metadata)

    def put_bytes(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/json",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        return self._write(name, lambda out: out.write(data), if_generation_match,
                           expected=crc32c_bytes(data), metadata=metadata)

    def compose(
        self,
        name: str,
        sources: Sequence[str],
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if not sources:
            raise ValueError("compose needs at least one source")
        paths = [self._path(source) for source in sources]

        def fill(out: BinaryIO) -> None:
            for source, src_path in zip(sources, paths, strict=True):
                try:
                    src = open(src_path, "rb")  # noqa: SIM115 - closed right below, per source
                except FileNotFoundError as exc:
                    raise StorageError(f"compose source {source!r} is missing") from exc
                with src:
                    while chunk := src.read(READ_CHUNK_SIZE):
                        out.write(chunk)

        return self._write(name, fill, if_generation_match, expected=None, metadata=metadata)

    def _write(
        self,
        name: str,
        fill: Callable[[BinaryIO], object],
        if_generation_match: int | None,
        *,
        expected: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Fill a temp file next to the target, verify it, then put it in place atomically.

        With `metadata`, its sidecar is written right after the data, in the same lock; a
        sidecar names the crc32c and size of the data it describes, so a process killed
        between the two leaves data whose (older) sidecar no longer applies: read as none."""
        target = self._path(name)
        tmp: Path | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_TEMP_SUFFIX)
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            written = crc32c_file(tmp)
            if expected is not None and written != expected:
                raise StorageError(f"crc32c mismatch writing {target}: wrote {written}, expected {expected}")
            size = tmp.stat().st_size
            with self._dir_lock(target.parent):
                if if_generation_match == 0:
                    self._stamp(tmp, None)
                    try:
                        os.link(tmp, target)
                    except FileExistsError:
                        return self._existing_or_raise(name, target, written, size)
                else:
                    current = self._current_generation(target)
                    if if_generation_match is not None and current != if_generation_match:
                        return self._existing_or_raise(name, target, written, size)
                    self._stamp(tmp, current)
                    os.replace(tmp, target)
                sidecar = _sidecar(target)
                if metadata:
                    self._write_sidecar(sidecar, {"crc32c": written, "size": size,
                                                  "metadata": dict(metadata)})
                else:
                    sidecar.unlink(missing_ok=True)
            self._fsync_dir(target.parent)
            return self._info(name, target, written)
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {_describe(exc)}") from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    @staticmethod
    def _write_sidecar(sidecar: Path, content: dict[str, Any]) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=sidecar.parent, prefix=f".{sidecar.name}.",
                                        suffix=_TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(content, out, ensure_ascii=False, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, sidecar)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    @staticmethod
    def _read_sidecar(path: Path, crc: str, size: int) -> dict[str, str]:
        """The metadata of the data file at `path`, if its sidecar describes these bytes."""
        try:
            content = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if (not isinstance(content, dict) or content.get("crc32c") != crc
                or content.get("size") != size or not isinstance(content.get("metadata"), dict)):
            return {}
        return {str(k): str(v) for k, v in content["metadata"].items()}

    @staticmethod
    def _stamp(tmp: Path, current_generation: int | None) -> None:
        """Give the file a fresh generation (mtime), strictly above the one it replaces."""
        generation = time.time_ns()
        if current_generation is not None and generation <= current_generation:
            generation = current_generation + 1
        os.utime(tmp, ns=(generation, generation))

    @staticmethod
    def _current_generation(target: Path) -> int | None:
        try:
            return target.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _existing_or_raise(self, name: str, target: Path, crc: str, size: int) -> ObjectInfo:
        existing = self.stat(name)
        if existing is not None and existing.crc32c == crc and existing.size == size:
            return existing
        if existing is None:
            raise AlreadyExists(f"{target} is absent but a generation was required")
        raise AlreadyExists(f"{target} already exists (generation {existing.generation}) with other content")

    @staticmethod
    @contextlib.contextmanager
    def _dir_lock(directory: Path) -> Iterator[None]:
        """Serialise check-and-replace in one directory across processes (flock on the dir)."""
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def stat(self, name: str) -> ObjectInfo | None:
        path = self._path(name)
        try:
            return self._info(name, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {path}: {_describe(exc)}") from exc

    def get_bytes(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {_describe(exc)}") from exc

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        _check_prefix(prefix)
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._root.joinpath(*base_dir.split("/")) if base_dir else self._root
        found: builtins.list[ObjectInfo] = []
        if not start.is_dir():
            return found
        try:
            for dirpath, _dirnames, filenames in os.walk(start):
                for filename in filenames:
                    if filename.startswith(".") and filename.endswith(_TEMP_SUFFIX):
                        continue  # a write in progress (or one killed mid-way), not an object
                    if filename.endswith(SIDECAR_SUFFIX):
                        continue  # metadata of the object beside it
                    path = Path(dirpath, filename)
                    name = path.relative_to(self._root).as_posix()
                    if name.startswith(prefix):
                        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                            found.append(self._info(name, path))
        except OSError as exc:
            raise StorageError(f"cannot list {start}: {_describe(exc)}") from exc
        return sorted(found, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            with self._dir_lock(path.parent):
                path.unlink(missing_ok=True)
                _sidecar(path).unlink(missing_ok=True)
        except FileNotFoundError:
            return  # the directory is not there either
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {_describe(exc)}") from exc

    def open_read(self, name: str) -> BinaryIO:
        path = self._path(name)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"{path} does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {_describe(exc)}") from exc


# --- Google Cloud Storage --------------------------------------------------------------------


class _MappedReader(io.RawIOBase):
    """Wraps the client's blob reader so its failures surface as StorageError."""

    def __init__(self, inner: Any, uri: str, errors: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self._inner = inner
        self._uri = uri
        self._errors = errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._inner.read(len(view))
        except self._errors as exc:
            raise StorageError(f"GCS read failed for {self._uri}: {_describe(exc)}") from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(*self._errors):
                self._inner.close()
        super().close()


def _release_error_body(response: Any, *args: Any, **kwargs: Any) -> None:
    """requests response hook: consume an error answer so its connection is released."""
    if response.status_code >= 400:
        with contextlib.suppress(Exception):
            response.content  # noqa: B018 - reading it is the point


class GCSSink:
    """Objects under gs://bucket/prefix, through google-cloud-storage.

    `endpoint` (e.g. the value of STORAGE_EMULATOR_HOST, or a test proxy) points the client at
    an emulator with anonymous credentials and a made-up project; without it the client uses
    the default credentials (the Cloud Run service account).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        request_timeout: float = 60.0,
        retry_deadline: float = 120.0,
        retry_initial_delay: float = 1.0,
        retry_max_delay: float = 30.0,
    ) -> None:
        # Imported here on purpose: two seconds of imports a local run should not pay for.
        import http.client

        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from google.cloud.storage import exceptions as storage_exceptions
        from google.cloud.storage import retry as storage_retry

        if not bucket:
            raise ValueError("bucket must not be empty")
        self._bucket_name = bucket
        self._prefix = _check_prefix(prefix.strip("/"))
        self.root = f"gs://{bucket}/{self._prefix}" if self._prefix else f"gs://{bucket}"
        self._timeout = request_timeout
        self._not_found: type[BaseException] = api_exceptions.NotFound
        self._precondition_failed: type[BaseException] = api_exceptions.PreconditionFailed
        self._data_corruption: type[BaseException] = storage_exceptions.DataCorruption
        self._errors: tuple[type[BaseException], ...] = (
            api_exceptions.GoogleAPIError,
            storage_exceptions.InvalidResponse,
            storage_exceptions.DataCorruption,
            auth_exceptions.GoogleAuthError,
            http.client.HTTPException,
            OSError,  # requests' and urllib3's connection errors derive from it
        )
        policy = storage_retry.DEFAULT_RETRY.with_deadline(retry_deadline).with_delay(
            initial=retry_initial_delay, maximum=max(retry_max_delay, retry_initial_delay)
        )
        self._retry = policy
        """For reads and deletes: always safe to repeat."""
        self._write_retry = storage_retry.ConditionalRetryPolicy(
            policy, storage_retry.is_generation_specified, ["query_params"]
        )
        """For writes: repeated only when a generation precondition makes them idempotent."""
        try:
            if endpoint:
                self._client = storage.Client(
                    project="local-emulator",
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options={"api_endpoint": endpoint},
                )
            else:
                self._client = storage.Client()
        except self._errors as exc:  # OSError covers "project could not be determined"
            raise StorageCredentialsError(f"cannot create the GCS client: {_describe(exc)}") from exc
        self._bucket = self._client.bucket(bucket)
        # The client leaves the body of a failed streamed download unread, which pins its
        # connection (and socket) until garbage collection; reading error bodies (small) releases
        # them at once.
        with contextlib.suppress(AttributeError, KeyError):  # private API: harmless if it moves
            self._client._http.hooks["response"].append(_release_error_body)
        # The client fetches bucket metadata in a background thread on first use, only to label
        # OpenTelemetry spans we do not record; that costs a request, a thread that outlives
        # close(), and a 403 for a service account without storage.buckets.get. Switch it off
        # (the public switch is an environment variable, which only config may touch).
        self._client._bucket_metadata_cache = None

    def __repr__(self) -> str:
        return f"GCSSink({self.root!r})"

    def close(self) -> None:
        """Release the client's pooled connections."""
        self._client.close()

    # names

    def _key(self, name: str) -> str:
        _check_name(name)
        return f"{self._prefix}/{name}" if self._prefix else name

    def _uri(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _info(self, blob: Any) -> ObjectInfo:
        key = cast(str, blob.name)
        name = key[len(self._prefix) + 1 :] if self._prefix else key
        return ObjectInfo(
            name=name,
            uri=f"gs://{self._bucket_name}/{key}",
            size=int(blob.size),
            crc32c=str(blob.crc32c),
            generation=int(blob.generation),
            metadata=dict(blob.metadata or {}),
        )

    def _fail(self, action: str, name: str, exc: BaseException) -> StorageError:
        return StorageError(f"GCS {action} failed for {self._uri(name)}: {_describe(exc)}")

    # writes

    def put_file(
        self,
        name: str,
        path: Path,
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        key = self._key(name)
        try:
            crc = crc32c_file(path)
            size = path.stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {_describe(exc)}") from exc
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise self._fail("upload", name, exc) from exc
        with stream:
            # No size above one chunk: the client then uploads in chunks. Given a size it sends
            # anything up to 8 MiB in one request built in memory.
            return self._upload(name, key, stream, crc, size,
                                declared_size=size if size <= UPLOAD_CHUNK_SIZE else None,
                                content_type=content_type, if_generation_match=if_generation_match,
                                metadata=metadata)

    def put_bytes(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/json",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        key = self._key(name)
        return self._upload(name, key, io.BytesIO(data), crc32c_bytes(data), len(data),
                            declared_size=len(data), content_type=content_type,
                            if_generation_match=if_generation_match, metadata=metadata)

    def _upload(self, name: str, key: str, stream: BinaryIO, crc: str, size: int, *,
                declared_size: int | None, content_type: str,
                if_generation_match: int | None,
                metadata: Mapping[str, str] | None) -> ObjectInfo:
        """Upload `stream` (`size` bytes, crc32c `crc`) as `name`, checked end to end."""
        blob = self._bucket.blob(key, chunk_size=UPLOAD_CHUNK_SIZE)
        if metadata:
            blob.metadata = dict(metadata)
        try:
            blob.upload_from_file(
                stream,
                size=declared_size,
                content_type=content_type,
                if_generation_match=if_generation_match,
                timeout=self._timeout,
                retry=self._write_retry,
                checksum="crc32c",
                crc32c_checksum_value=crc,
            )
        except self._precondition_failed:
            return self._existing_or_raise(name, crc, size)
        except self._data_corruption as exc:
            self._delete_if_not(name, crc)
            raise self._fail("upload (checksum mismatch)", name, exc) from exc
        except self._errors as exc:
            raise self._fail("upload", name, exc) from exc
        return self._verified(name, blob, crc, size)

    def _verified(self, name: str, blob: Any, crc: str, size: int) -> ObjectInfo:
        """The uploaded object's info, after checking it holds what we sent."""
        info = self._info(blob)
        if info.crc32c != crc or info.size != size:
            self._delete_generation(name, info.generation)
            raise StorageError(
                f"GCS upload of {self._uri(name)} stored crc32c {info.crc32c} / {info.size} bytes,"
                f" expected {crc} / {size} bytes; the object was deleted"
            )
        return info

    def _existing_or_raise(self, name: str, crc: str, size: int) -> ObjectInfo:
        """After a 412: the object already there counts as ours if it holds our exact bytes."""
        existing = self.stat(name)
        if existing is not None and existing.crc32c == crc and existing.size == size:
            return existing
        if existing is None:
            raise AlreadyExists(f"{self._uri(name)} is absent but a generation was required")
        raise AlreadyExists(
            f"{self._uri(name)} already exists (generation {existing.generation}) with other content"
        )

    def _delete_generation(self, name: str, generation: int) -> None:
        """Best effort: remove one generation we wrote, never a newer object."""
        blob = self._bucket.blob(self._key(name))
        with contextlib.suppress(*self._errors):
            blob.delete(if_generation_match=generation, timeout=self._timeout, retry=self._retry)

    def _delete_if_not(self, name: str, crc: str) -> None:
        with contextlib.suppress(StorageError):
            current = self.stat(name)
            if current is not None and current.crc32c != crc:
                self._delete_generation(name, current.generation)

    # compose

    def compose(
        self,
        name: str,
        sources: Sequence[str],
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if not sources:
            raise ValueError("compose needs at least one source")
        self._key(name)
        for source in sources:
            self._key(source)
        directory = posixpath.dirname(name)
        scratch = posixpath.join(directory, COMPOSE_SCRATCH, uuid.uuid4().hex)
        known: dict[str, ObjectInfo] = {}
        temps: builtins.list[str] = []
        try:
            level = builtins.list(sources)
            round_no = 0
            while len(level) > COMPOSE_MAX_SOURCES:
                next_level: builtins.list[str] = []
                for index in range(0, len(level), COMPOSE_MAX_SOURCES):
                    batch = level[index : index + COMPOSE_MAX_SOURCES]
                    if len(batch) == 1:
                        next_level.append(batch[0])  # nothing to concatenate: pass it through
                        continue
                    temp = f"{scratch}/{round_no}-{index // COMPOSE_MAX_SOURCES:05d}"
                    temps.append(temp)
                    known[temp] = self._compose_once(temp, batch, content_type, 0, known,
                                                     metadata=None)
                    next_level.append(temp)
                level = next_level
                round_no += 1
            return self._compose_once(name, level, content_type, if_generation_match, known,
                                      metadata=metadata)
        finally:
            for temp in temps:
                with contextlib.suppress(StorageError):
                    self.delete(temp)

    def _compose_once(
        self,
        name: str,
        sources: Sequence[str],
        content_type: str,
        if_generation_match: int | None,
        known: dict[str, ObjectInfo],
        *,
        metadata: Mapping[str, str] | None,
    ) -> ObjectInfo:
        destination = self._bucket.blob(self._key(name))
        destination.content_type = content_type
        if metadata:
            destination.metadata = dict(metadata)
        blobs = [self._bucket.blob(self._key(source)) for source in sources]
        try:
            destination.compose(
                blobs,
                if_generation_match=if_generation_match,
                timeout=self._timeout,
                retry=self._write_retry,
            )
        except self._precondition_failed:
            expected = self._expected_concat(name, sources, known)
            return self._existing_or_raise(name, *expected)
        except self._errors as exc:
            raise self._fail("compose", name, exc) from exc
        return self._info(destination)

    def _expected_concat(
        self, name: str, sources: Sequence[str], known: dict[str, ObjectInfo]
    ) -> tuple[str, int]:
        """crc32c and size the composed object must have, from its sources' metadata."""
        pieces: builtins.list[tuple[str, int]] = []
        for source in sources:
            info = known.get(source) or self.stat(source)
            if info is None:
                raise AlreadyExists(f"{self._uri(name)} already exists and compose source {source!r} is gone")
            pieces.append((info.crc32c, info.size))
        return crc32c_concat(pieces), sum(size for _crc, size in pieces)

    # reads

    def stat(self, name: str) -> ObjectInfo | None:
        try:
            blob = self._bucket.get_blob(self._key(name), timeout=self._timeout, retry=self._retry)
        except self._errors as exc:
            raise self._fail("stat", name, exc) from exc
        return None if blob is None else self._info(blob)

    def get_bytes(self, name: str) -> bytes | None:
        blob = self._bucket.blob(self._key(name))
        try:
            return cast(
                bytes,
                blob.download_as_bytes(timeout=self._timeout, retry=self._retry, checksum="crc32c"),
            )
        except self._not_found:
            return None
        except self._errors as exc:
            raise self._fail("download", name, exc) from exc

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        _check_prefix(prefix)
        full = f"{self._prefix}/{prefix}" if self._prefix else prefix
        try:
            blobs = builtins.list(
                self._client.list_blobs(self._bucket, prefix=full, timeout=self._timeout, retry=self._retry)
            )
        except self._errors as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted((self._info(blob) for blob in blobs), key=lambda info: info.name)

    def delete(self, name: str) -> None:
        blob = self._bucket.blob(self._key(name))
        try:
            blob.delete(timeout=self._timeout, retry=self._retry)
        except self._not_found:
            return
        except self._errors as exc:
            raise self._fail("delete", name, exc) from exc

    def open_read(self, name: str) -> BinaryIO:
        try:
            blob = self._bucket.get_blob(self._key(name), timeout=self._timeout, retry=self._retry)
        except self._errors as exc:
            raise self._fail("stat", name, exc) from exc
        if blob is None:
            raise StorageError(f"{self._uri(name)} does not exist")
        # The reader is pinned to the generation just seen, so it never mixes two versions.
        inner = blob.open("rb", chunk_size=UPLOAD_CHUNK_SIZE, timeout=self._timeout, retry=self._retry)
        raw = _MappedReader(inner, self._uri(name), self._errors)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=READ_CHUNK_SIZE))


def make_sink(
    *,
    bucket: str | None,
    prefix: str,
    output_dir: Path,
    request_timeout: float = 60.0,
    retry_deadline: float = 120.0,
) -> Sink:
    """The job's sink: GCS when `bucket` is set (honouring STORAGE_EMULATOR_HOST), else a folder.

    STORAGE_EMULATOR_HOST belongs to the google-cloud-storage client (the client reads it
    itself); it is read here only to choose anonymous credentials for the emulator.
    """
    if bucket:
        return GCSSink(
            bucket,
            prefix,
            endpoint=os.environ.get("STORAGE_EMULATOR_HOST") or None,
            request_timeout=request_timeout,
            retry_deadline=retry_deadline,
        )
    return LocalSink(output_dir)
