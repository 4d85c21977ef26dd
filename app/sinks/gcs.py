"""The GCS sink: objects under gs://bucket/prefix, through google-cloud-storage.

- Uploads and composes are atomic by nature. `if_generation_match=0` is create-only, an int g
  replaces only generation g, None is unconditional; a failed precondition (412) raises
  `AlreadyExists` unless the object there is the one we meant to write (below).
- Every request has a hard wall-clock deadline, `request_timeout` (STORAGE_TIMEOUT): the
  client sends through `transport.DeadlineSession`, which bounds the whole request (connect,
  token, send, answer), not each socket read. A request cut at its deadline is retried like
  any transient fault.
- Transient faults (429, 408, 5xx, resets, timeouts) are retried with the library's retry
  objects for `retry_deadline` seconds (`retry_budget`: twice STORAGE_TIMEOUT, at most 120 s);
  writes only when a generation precondition makes them idempotent. Each retry is reported to
  `health` (the job counts it and logs it). What still fails raises `StorageError` with a
  short message that holds no credentials or upload session ids, and the HTTP status if any.
- Fail fast: once an operation has used up its retries, found nobody answering, or was
  refused (401/403), storage has failed for the run (`health.fail`): requests in flight are cut,
  retries stop, and every later operation raises at once without a request. `last_try()` is a
  fresh sink for the summary: each operation tried once, within LAST_TRY_TIMEOUT. Deletes
  (cleanup) get DELETE_BUDGET and never make storage fail.
- A retried create-only write whose first try landed but whose answer got lost meets 412 on
  its retry, and counts as done when the object there is ours: for an upload, it holds our
  exact bytes (crc32c and size); for a compose, it carries our marker, metadata COMPOSED_FROM:
  a digest of the (name, crc32c, size) of every original source, in order. The sources are
  read before composing (one listing of their common folder, or a stat for a lone source), so
  composes of the same names holding the same bytes share a marker, and no other compose at
  that name has it. The marker joins the caller's metadata; `ObjectInfo.metadata` leaves it out.

google-cloud-storage is imported only when a GCS sink is built: the import costs about two
seconds, and a local run should not pay for it.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import io
import json
import os
import posixpath
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from app.deadline import Deadlines
from app.errors import AlreadyExists, StorageCredentialsError, StorageError
from app.sinks.base import (
    COMPOSE_MAX_SOURCES,
    COMPOSE_SCRATCH,
    COMPOSED_FROM,
    READ_CHUNK_SIZE,
    UPLOAD_CHUNK_SIZE,
    ObjectInfo,
    StorageHealth,
    StorageRetry,
    check_metadata,
    check_name,
    check_prefix,
    crc32c_bytes,
    crc32c_file,
    describe,
)

BUCKET_METADATA_SWITCH = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"
"""google-cloud-storage's switch for its background bucket-metadata fetch (see new_storage_client)."""


def composition_marker(pieces: Sequence[ObjectInfo]) -> str:
    """The COMPOSED_FROM value of an object concatenating `pieces`, in order."""
    identity = json.dumps([[p.name, p.crc32c, p.size] for p in pieces], separators=(",", ":"))
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


MAX_RETRY_BUDGET = 120.0
"""Seconds one storage operation is retried at most (google-cloud-storage's default)."""
LAST_TRY_TIMEOUT = 30.0
"""Once storage has failed, the summary's requests are tried once, each within this (or
STORAGE_TIMEOUT if smaller)."""
DELETE_BUDGET = 10.0
"""Seconds a delete (cleanup, best effort) is tried and retried, at most."""
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
ENDS_STORAGE = TRANSIENT_STATUSES | {401, 403}
"""An operation that failed with one of these (after its retries), or with no answer at all,
means storage has failed for the run; any other answer (404, 412, 400, ...) is about the
object or the request, and the caller decides."""


def retry_budget(timeout: float) -> float:
    """How long one storage operation is retried: twice STORAGE_TIMEOUT (a request cut at its
    deadline gets another try), at most MAX_RETRY_BUDGET."""
    return min(MAX_RETRY_BUDGET, 2 * timeout)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed storage request may succeed if sent again: google-cloud-storage's own
    rule (429, 408 and 5xx answers; connection errors, timeouts, broken answers, including a
    request cut at its deadline), except a request cut because the run stopped storing."""
    import http.client

    import requests
    import urllib3
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage.exceptions import InvalidResponse

    from app.sinks.transport import StorageRequestAborted

    if isinstance(exc, StorageRequestAborted):
        return False
    if isinstance(exc, auth_exceptions.TransportError):
        cause = exc.args[0] if exc.args else None
        return isinstance(cause, BaseException) and is_transient(cause)
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return exc.code in TRANSIENT_STATUSES
    if isinstance(exc, InvalidResponse):
        return getattr(exc.response, "status_code", None) in TRANSIENT_STATUSES
    return isinstance(exc, ConnectionError | requests.ConnectionError
                      | requests.exceptions.ChunkedEncodingError | requests.Timeout
                      | http.client.BadStatusLine | http.client.IncompleteRead
                      | http.client.ResponseNotReady | urllib3.exceptions.PoolError
                      | urllib3.exceptions.ProtocolError | urllib3.exceptions.SSLError
                      | urllib3.exceptions.TimeoutError)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of storage's answer behind `exc` (the last one, after retries)."""
    from google.api_core import exceptions as api_exceptions
    from google.cloud.storage.exceptions import InvalidResponse

    if isinstance(exc, api_exceptions.RetryError):
        return status_of(exc.cause) if exc.cause is not None else None
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return int(exc.code) if exc.code is not None else None
    if isinstance(exc, InvalidResponse):
        status = getattr(exc.response, "status_code", None)
        return status if isinstance(status, int) else None
    return None


def new_storage_client(endpoint: str | None, *, timeout: float = 60.0,
                       deadlines: Deadlines | None = None) -> Any:
    """A google-cloud-storage client sending through a `transport.DeadlineSession` (each
    request bounded by `timeout` seconds; `deadlines` lets the caller abort them).

    The session goes in through the client's constructor (`_http`: documented as any object
    with `requests.Session.request`'s interface, though named as private), the one way in;
    nothing private of the client is read or changed afterwards. Since 3.11 the client also
    fetches bucket metadata in a background thread on first use of a bucket, only to label
    OpenTelemetry spans we do not record: a request, a thread that outlives close(), and a
    denied storage.buckets.get (an ERROR audit-log entry) for an object-only service account.
    The library's only switch is the environment variable BUCKET_METADATA_SWITCH, read on every
    call; it is set here, before the client exists, so every GCSSink has it whoever builds it
    (job, tests, bench); written, never read: settings still come from config.

    `endpoint` (an emulator, a test proxy) gets anonymous credentials and a made-up project;
    without it the client uses the default credentials (the Cloud Run service account).
    """
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from app.sinks.transport import DeadlineSession

    os.environ[BUCKET_METADATA_SWITCH] = "true"
    if endpoint:
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return storage.Client(
            project="local-emulator",
            credentials=anonymous,
            client_options={"api_endpoint": endpoint},
            _http=DeadlineSession(anonymous, timeout=timeout, deadlines=deadlines),
        )
    credentials, project = google.auth.default(scopes=storage.Client.SCOPE)
    # Without a project the client looks for one itself (and fails as it always did).
    found = {"project": project} if project else {}
    return storage.Client(credentials=credentials, **found,
                          _http=DeadlineSession(credentials, timeout=timeout, deadlines=deadlines))


class _MappedReader(io.RawIOBase):
    """Wraps the client's blob reader so its failures surface as StorageError."""

    def __init__(self, inner: Any, errors: tuple[type[BaseException], ...],
                 fail: Callable[[BaseException], StorageError]) -> None:
        super().__init__()
        self._inner = inner
        self._errors = errors
        self._fail = fail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._inner.read(len(view))
        except self._errors as exc:
            raise self._fail(exc) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(*self._errors):
                self._inner.close()
        super().close()


class GCSSink:
    """Objects under gs://bucket/prefix, through google-cloud-storage (see the module docstring).

    `endpoint` (e.g. STORAGE_EMULATOR_HOST from the settings, or a test proxy) points the client
    at an emulator; without it the client uses the default credentials. `request_timeout` is the
    hard deadline of one request, `retry_deadline` how long an operation is retried;
    `retries=False` tries each operation once.
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
        retries: bool = True,
    ) -> None:
        # Imported here on purpose: two seconds of imports a local run should not pay for.
        import http.client

        from google.api_core import exceptions as api_exceptions
        from google.api_core.retry import Retry
        from google.auth import exceptions as auth_exceptions
        from google.cloud.storage import exceptions as storage_exceptions
        from google.cloud.storage import retry as storage_retry

        if not bucket:
            raise ValueError("bucket must not be empty")
        self._bucket_name = bucket
        self._prefix = check_prefix(prefix.strip("/"))
        self.root = f"gs://{bucket}/{self._prefix}" if self._prefix else f"gs://{bucket}"
        self._endpoint = endpoint
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
        self._retries = retries
        self._retry_deadline = retry_deadline
        self._retry_delays = (retry_initial_delay, max(retry_max_delay, retry_initial_delay))
        self._retry_class = Retry
        self._conditional = functools.partial(storage_retry.ConditionalRetryPolicy,
                                              conditional_predicate=storage_retry.is_generation_specified,
                                              required_kwargs=["query_params"])
        self.health = StorageHealth()
        deadlines = Deadlines(name="storage-deadline-reaper")
        self._deadlines = deadlines
        # Storage failed for the run: cut what is in flight, refuse what comes (no self here,
        # so the health object does not keep the sink alive).
        self.health.watch(on_failure=lambda _error: deadlines.abort_all())
        try:
            self._client = new_storage_client(endpoint, timeout=request_timeout, deadlines=deadlines)
        except self._errors as exc:  # OSError covers "project could not be determined"
            raise StorageCredentialsError(f"cannot create the GCS client: {describe(exc)}") from exc
        self._bucket = self._client.bucket(bucket)

    def __repr__(self) -> str:
        return f"GCSSink({self.root!r})"

    def close(self) -> None:
        """Release the client's pooled connections."""
        self._client.close()
        self._deadlines.close()

    def last_try(self) -> GCSSink:
        """A fresh sink on the same bucket (its own client: this one's requests are refused once
        storage failed) whose operations are each tried once, within LAST_TRY_TIMEOUT."""
        return GCSSink(self._bucket_name, self._prefix, endpoint=self._endpoint,
                       request_timeout=min(self._timeout, LAST_TRY_TIMEOUT), retries=False)

    # retries and failure

    def _retry(self, operation: str, name: str, *, budget: float | None = None) -> Any:
        """A retry policy for one operation (None: tried once), reporting each retry."""
        if not self._retries:
            return None
        initial, maximum = self._retry_delays
        return self._retry_class(
            predicate=is_transient, initial=initial, maximum=maximum, multiplier=2.0,
            timeout=self._retry_deadline if budget is None else min(budget, self._retry_deadline),
            on_error=functools.partial(self._retrying, operation, name))

    def _write_retry(self, operation: str, name: str) -> Any:
        """For writes: repeated only when a generation precondition makes them idempotent."""
        policy = self._retry(operation, name)
        return None if policy is None else self._conditional(policy)

    def _retrying(self, operation: str, name: str, exc: Exception) -> None:
        """The retry policy's `on_error`: a transient failure is about to be retried."""
        if self.health.failure is not None:
            raise exc  # storage failed for the run meanwhile: no more tries
        self.health.retried(StorageRetry(operation, self._uri(name), describe(exc)))

    def _ensure_up(self, action: str, name: str) -> None:
        failure = self.health.failure
        if failure is not None:
            raise StorageError(f"GCS {action} of {self._uri(name)} not attempted: storage"
                               f" failed earlier in this run ({failure})", status=failure.status)

    # names

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self._prefix}/{name}" if self._prefix else name

    def _uri(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _info(self, blob: Any) -> ObjectInfo:
        key = cast(str, blob.name)
        name = key[len(self._prefix) + 1 :] if self._prefix else key
        metadata = {k: v for k, v in (blob.metadata or {}).items() if k != COMPOSED_FROM}
        return ObjectInfo(
            name=name,
            uri=f"gs://{self._bucket_name}/{key}",
            size=int(blob.size),
            crc32c=str(blob.crc32c),
            generation=int(blob.generation),
            metadata=metadata,
        )

    def _fail(self, action: str, name: str, exc: BaseException, *, ends: bool = True) -> StorageError:
        """The StorageError for a failed operation. Unless `ends` is False, storage has failed
        for the run when nothing answered, or the answer was in ENDS_STORAGE."""
        status = status_of(exc)
        error = StorageError(f"GCS {action} failed for {self._uri(name)}: {describe(exc)}",
                             status=status)
        if ends and (status is None or status in ENDS_STORAGE):
            self.health.fail(error)
        return error

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
        self._ensure_up("upload", name)
        try:
            crc = crc32c_file(path)
            size = path.stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {describe(exc)}") from exc
        try:
            stream = path.open("rb")
        except OSError as exc:  # the local file, not storage
            raise self._fail("upload", name, exc, ends=False) from exc
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
        self._ensure_up("upload", name)
        return self._upload(name, key, io.BytesIO(data), crc32c_bytes(data), len(data),
                            declared_size=len(data), content_type=content_type,
                            if_generation_match=if_generation_match, metadata=metadata)

    def _upload(self, name: str, key: str, stream: BinaryIO, crc: str, size: int, *,
                declared_size: int | None, content_type: str,
                if_generation_match: int | None,
                metadata: Mapping[str, str] | None) -> ObjectInfo:
        """Upload `stream` (`size` bytes, crc32c `crc`) as `name`, checked end to end."""
        own = check_metadata(metadata)
        blob = self._bucket.blob(key, chunk_size=UPLOAD_CHUNK_SIZE)
        if own:
            blob.metadata = own
        try:
            blob.upload_from_file(
                stream,
                size=declared_size,
                content_type=content_type,
                if_generation_match=if_generation_match,
                timeout=self._timeout,
                retry=self._write_retry("upload", name),
                checksum="crc32c",
                crc32c_checksum_value=crc,
            )
        except self._precondition_failed:
            return self._existing_or_raise(name, crc, size)
        except self._data_corruption as exc:
            self._delete_if_not(name, crc)
            raise self._fail("upload (checksum mismatch)", name, exc, ends=False) from exc
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
        """After a 412 on an upload: the object there is ours if it holds our exact bytes."""
        existing = self.stat(name)
        if existing is not None and existing.crc32c == crc and existing.size == size:
            return existing
        raise self._taken(name, existing)

    def _taken(self, name: str, existing: ObjectInfo | None) -> AlreadyExists:
        if existing is None:
            return AlreadyExists(f"{self._uri(name)} is absent but a generation was required")
        return AlreadyExists(
            f"{self._uri(name)} already exists (generation {existing.generation}) with other content"
        )

    def _delete_generation(self, name: str, generation: int) -> None:
        """Best effort: remove one generation we wrote, never a newer object."""
        blob = self._bucket.blob(self._key(name))
        with contextlib.suppress(*self._errors):
            blob.delete(if_generation_match=generation, timeout=min(self._timeout, DELETE_BUDGET),
                        retry=self._retry("delete", name, budget=DELETE_BUDGET))

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
        own = check_metadata(metadata)
        self._ensure_up("compose", name)
        infos = self._source_infos(name, sources)
        scratch = posixpath.join(posixpath.dirname(name), COMPOSE_SCRATCH, uuid.uuid4().hex)
        temps: builtins.list[str] = []
        try:
            # Each entry: an object to concatenate, and the original sources it holds.
            level = [(source, [infos[source]]) for source in sources]
            round_no = 0
            while len(level) > COMPOSE_MAX_SOURCES:
                next_level: builtins.list[tuple[str, builtins.list[ObjectInfo]]] = []
                for index in range(0, len(level), COMPOSE_MAX_SOURCES):
                    batch = level[index : index + COMPOSE_MAX_SOURCES]
                    if len(batch) == 1:
                        next_level.append(batch[0])  # nothing to concatenate: pass it through
                        continue
                    temp = f"{scratch}/{round_no}-{index // COMPOSE_MAX_SOURCES:05d}"
                    temps.append(temp)
                    pieces = [piece for _, held in batch for piece in held]
                    self._compose_once(temp, [part for part, _ in batch], pieces,
                                       content_type=content_type, if_generation_match=0, metadata={})
                    next_level.append((temp, pieces))
                level = next_level
                round_no += 1
            pieces = [piece for _, held in level for piece in held]
            return self._compose_once(name, [part for part, _ in level], pieces,
                                      content_type=content_type,
                                      if_generation_match=if_generation_match, metadata=own)
        finally:
            for temp in temps:
                with contextlib.suppress(StorageError):
                    self.delete(temp)

    def _source_infos(self, name: str, sources: Sequence[str]) -> dict[str, ObjectInfo]:
        """Each source's info, read before composing: a stat for a lone source, else one
        listing of the sources' common folder (stats for any outside it)."""
        wanted = builtins.list(dict.fromkeys(sources))
        found: dict[str, ObjectInfo] = {}
        if len(wanted) > 1:
            folder = posixpath.commonpath([posixpath.dirname(source) for source in wanted])
            if folder:
                wanted_set = set(wanted)
                found = {info.name: info for info in self.list(f"{folder}/") if info.name in wanted_set}
        for source in wanted:
            if source not in found:
                info = self.stat(source)
                if info is None:
                    raise StorageError(f"GCS compose of {self._uri(name)} failed:"
                                       f" source {source!r} is missing")
                found[source] = info
        return found

    def _compose_once(
        self,
        name: str,
        parts: Sequence[str],
        pieces: Sequence[ObjectInfo],
        *,
        content_type: str,
        if_generation_match: int | None,
        metadata: Mapping[str, str],
    ) -> ObjectInfo:
        """Compose `parts` (at most COMPOSE_MAX_SOURCES) as `name`, marked as holding `pieces`."""
        marker = composition_marker(pieces)
        destination = self._bucket.blob(self._key(name))
        destination.content_type = content_type
        destination.metadata = {**metadata, COMPOSED_FROM: marker}
        blobs = [self._bucket.blob(self._key(part)) for part in parts]
        try:
            destination.compose(
                blobs,
                if_generation_match=if_generation_match,
                timeout=self._timeout,
                retry=self._write_retry("compose", name),
            )
        except self._precondition_failed:
            return self._composed_or_raise(name, marker)
        except self._errors as exc:
            raise self._fail("compose", name, exc) from exc
        return self._info(destination)

    def _composed_or_raise(self, name: str, marker: str) -> ObjectInfo:
        """After a 412 on a compose: the object there is ours if it carries our marker."""
        blob = self._get_blob(name)
        if blob is not None and (blob.metadata or {}).get(COMPOSED_FROM) == marker:
            return self._info(blob)
        raise self._taken(name, None if blob is None else self._info(blob))

    # reads

    def _get_blob(self, name: str) -> Any:
        """The object's blob (metadata loaded), or None when it is absent."""
        key = self._key(name)
        self._ensure_up("stat", name)
        try:
            return self._bucket.get_blob(key, timeout=self._timeout, retry=self._retry("stat", name))
        except self._errors as exc:
            raise self._fail("stat", name, exc) from exc

    def stat(self, name: str) -> ObjectInfo | None:
        blob = self._get_blob(name)
        return None if blob is None else self._info(blob)

    def get_bytes(self, name: str) -> bytes | None:
        blob = self._bucket.blob(self._key(name))
        self._ensure_up("download", name)
        try:
            return cast(
                bytes,
                blob.download_as_bytes(timeout=self._timeout, retry=self._retry("download", name),
                                       checksum="crc32c"),
            )
        except self._not_found:
            return None
        except self._errors as exc:
            raise self._fail("download", name, exc) from exc

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        check_prefix(prefix)
        full = f"{self._prefix}/{prefix}" if self._prefix else prefix
        self._ensure_up("list", prefix)
        try:
            blobs = builtins.list(
                self._client.list_blobs(self._bucket, prefix=full, timeout=self._timeout,
                                        retry=self._retry("list", prefix))
            )
        except self._errors as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted((self._info(blob) for blob in blobs), key=lambda info: info.name)

    def delete(self, name: str) -> None:
        """Best effort for the caller's cleanup: retried for DELETE_BUDGET at most, and a
        failure never makes storage fail for the run."""
        blob = self._bucket.blob(self._key(name))
        self._ensure_up("delete", name)
        try:
            blob.delete(timeout=min(self._timeout, DELETE_BUDGET),
                        retry=self._retry("delete", name, budget=DELETE_BUDGET))
        except self._not_found:
            return
        except self._errors as exc:
            raise self._fail("delete", name, exc, ends=False) from exc

    def open_read(self, name: str) -> BinaryIO:
        blob = self._get_blob(name)
        if blob is None:
            raise StorageError(f"{self._uri(name)} does not exist")
        # The reader is pinned to the generation just seen, so it never mixes two versions.
        inner = blob.open("rb", chunk_size=UPLOAD_CHUNK_SIZE, timeout=self._timeout,
                          retry=self._retry("read", name))
        raw = _MappedReader(inner, self._errors, functools.partial(self._fail, "read", name))
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=READ_CHUNK_SIZE))
