"""The GCS sink: objects under gs://bucket/prefix, through google-cloud-storage.

- Uploads and composes are atomic by nature. `if_generation_match=0` is create-only, an int g
  replaces only generation g, None is unconditional; a failed precondition (412) raises
  `AlreadyExists` unless the object there is the one we meant to write (below).
- Transient faults (429, 5xx, resets, timeouts) are retried by the client library's policy
  with a deadline; writes only when a generation precondition makes them idempotent. Every
  request carries a timeout. What still fails raises `StorageError` with a short message that
  holds no credentials or upload session ids.
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
import hashlib
import io
import json
import os
import posixpath
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from app.errors import AlreadyExists, StorageCredentialsError, StorageError
from app.sinks.base import (
    COMPOSE_MAX_SOURCES,
    COMPOSE_SCRATCH,
    COMPOSED_FROM,
    READ_CHUNK_SIZE,
    UPLOAD_CHUNK_SIZE,
    ObjectInfo,
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


def _release_error_body(response: Any, *args: Any, **kwargs: Any) -> None:
    """requests response hook: consume an error answer so its connection is released."""
    if response.status_code >= 400:
        with contextlib.suppress(Exception):
            response.content  # noqa: B018 - reading it is the point


def new_storage_client(endpoint: str | None) -> Any:
    """A google-cloud-storage client, adjusted where the library offers no other way.

    The one place the package reaches past the library's public API, for two things:

    1. Since 3.11 the client fetches bucket metadata in a background thread on first use of a
       bucket, only to label OpenTelemetry spans we do not record: a request, a thread that
       outlives close(), and a denied storage.buckets.get (an ERROR audit-log entry) for an
       object-only service account. The library's only switch is the environment variable
       BUCKET_METADATA_SWITCH, read on every call (a per-client flag is proposed upstream, not
       released). It is set here, before the client exists, so every GCSSink has it whoever
       builds it (job, tests, bench); written, never read: settings still come from config.
    2. Downloads stream, and an error status is raised (and retried) with its body unread,
       which pins the pooled connection and its socket until garbage collection. Nothing
       public reaches the client's requests session (`_http=` is documented as private too, a
       Retry `on_error` callback would need the library's private default predicate), so a
       hook reading error bodies goes on the private `client._http.hooks`. If an upgrade moves
       it the sink still works (those sockets wait for GC) and
       tests/test_sinks.py::test_storage_client_still_takes_our_error_body_hook fails.

    `endpoint` (an emulator, a test proxy) gets anonymous credentials and a made-up project;
    without it the client uses the default credentials (the Cloud Run service account).
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    os.environ[BUCKET_METADATA_SWITCH] = "true"
    if endpoint:
        client = storage.Client(
            project="local-emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": endpoint},
        )
    else:
        client = storage.Client()
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        client._http.hooks["response"].append(_release_error_body)
    return client


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
            raise StorageError(f"GCS read failed for {self._uri}: {describe(exc)}") from exc
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
    at an emulator; without it the client uses the default credentials.
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
        from google.cloud.storage import exceptions as storage_exceptions
        from google.cloud.storage import retry as storage_retry

        if not bucket:
            raise ValueError("bucket must not be empty")
        self._bucket_name = bucket
        self._prefix = check_prefix(prefix.strip("/"))
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
            self._client = new_storage_client(endpoint)
        except self._errors as exc:  # OSError covers "project could not be determined"
            raise StorageCredentialsError(f"cannot create the GCS client: {describe(exc)}") from exc
        self._bucket = self._client.bucket(bucket)

    def __repr__(self) -> str:
        return f"GCSSink({self.root!r})"

    def close(self) -> None:
        """Release the client's pooled connections."""
        self._client.close()

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

    def _fail(self, action: str, name: str, exc: BaseException) -> StorageError:
        return StorageError(f"GCS {action} failed for {self._uri(name)}: {describe(exc)}")

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
            raise StorageError(f"cannot read {path}: {describe(exc)}") from exc
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
        own = check_metadata(metadata)
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
                retry=self._write_retry,
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
        try:
            return self._bucket.get_blob(self._key(name), timeout=self._timeout, retry=self._retry)
        except self._errors as exc:
            raise self._fail("stat", name, exc) from exc

    def stat(self, name: str) -> ObjectInfo | None:
        blob = self._get_blob(name)
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
        check_prefix(prefix)
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
        blob = self._get_blob(name)
        if blob is None:
            raise StorageError(f"{self._uri(name)} does not exist")
        # The reader is pinned to the generation just seen, so it never mixes two versions.
        inner = blob.open("rb", chunk_size=UPLOAD_CHUNK_SIZE, timeout=self._timeout, retry=self._retry)
        raw = _MappedReader(inner, self._uri(name), self._errors)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=READ_CHUNK_SIZE))
