"""Where the job's bytes end up: one `Sink` interface, two implementations.

    make_sink(bucket=..., ...)  ->  GCSSink    gs://$GCS_BUCKET/$GCS_PREFIX/<name>   (gcs.py)
    make_sink(bucket=None, ...) ->  LocalSink  $OUTPUT_DIR/<name>                    (local.py)

The protocol, `ObjectInfo`, checksums and name rules both share are in base.py; everything is
importable from here. Every name is relative to the sink root
("runs/2025-01-01_2025-01-01/EXEC/parts/acme/2025-01-01/RUN.ndjson.gz"). Nothing outside this
package knows which implementation it holds.

Write rules, shared by both sinks:
- Atomic: an object is either wholly there or absent.
- `if_generation_match=0` is create-only, an int g replaces only generation g, None is
  unconditional. A failed precondition raises `AlreadyExists`, unless the object already is
  the one we meant to write: then the write counts as done and its `ObjectInfo` is returned.
  This is what makes a retried create-only write safe when its first try reached the server
  but the answer got lost (GCS answers the retry with 412). "The one we meant": the same
  bytes (crc32c and size) for an upload and for a local compose; for a GCS compose, the
  composition marker (see gcs.py).
- Failures raise `StorageError` with a short message holding no credentials or session ids.
"""

from __future__ import annotations

from pathlib import Path

from app.sinks.base import (
    COMPOSE_MAX_SOURCES,
    COMPOSE_SCRATCH,
    COMPOSED_FROM,
    READ_CHUNK_SIZE,
    SIDECAR_SUFFIX,
    UPLOAD_CHUNK_SIZE,
    ObjectInfo,
    Sink,
    StorageHealth,
    StorageRetry,
    crc32c_bytes,
    crc32c_file,
    is_compose_scratch,
)
from app.sinks.gcs import GCSSink, retry_budget
from app.sinks.local import LocalSink

__all__ = [
    "COMPOSED_FROM",
    "COMPOSE_MAX_SOURCES",
    "COMPOSE_SCRATCH",
    "READ_CHUNK_SIZE",
    "SIDECAR_SUFFIX",
    "UPLOAD_CHUNK_SIZE",
    "GCSSink",
    "LocalSink",
    "ObjectInfo",
    "Sink",
    "StorageHealth",
    "StorageRetry",
    "crc32c_bytes",
    "crc32c_file",
    "is_compose_scratch",
    "make_sink",
]


def make_sink(
    *,
    bucket: str | None,
    prefix: str,
    output_dir: Path,
    endpoint: str | None = None,
    request_timeout: float = 60.0,
    retry_deadline: float | None = None,
) -> Sink:
    """The job's sink: GCS when `bucket` is set, else the folder `output_dir`.

    `endpoint` is `Settings.storage_emulator_host` (STORAGE_EMULATOR_HOST, read by config): a
    GCS emulator reached with anonymous credentials. None: real GCS, default credentials.
    `request_timeout` is STORAGE_TIMEOUT; an operation is retried for `retry_deadline` seconds
    (default: `retry_budget(request_timeout)`).
    """
    if bucket:
        return GCSSink(
            bucket,
            prefix,
            endpoint=endpoint,
            request_timeout=request_timeout,
            retry_deadline=retry_budget(request_timeout) if retry_deadline is None else retry_deadline,
        )
    return LocalSink(output_dir)
