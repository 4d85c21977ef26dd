"""Fixtures around the GCS emulator: a real HTTP server the real google-cloud-storage client uses.

    gcs_emulator   a fresh in-memory gcp-storage-emulator on 127.0.0.1:<free port>, one bucket
                   (unique name) already created; `.host`, `.bucket`, `.env()`, `.create_bucket()`
    gcs_sink       a GCSSink on that bucket (prefix "conversions"), with short retry back-offs
    local_sink     a LocalSink under tmp_path

The emulator runs in this process, in a thread, and is stopped when the test ends; a job started
as a subprocess reaches it through `gcs_emulator.env()`.

What the emulator lacks, and what is added here: gcp-storage-emulator ignores `ifGenerationMatch`
on uploads and compose (it always overwrites). Real GCS answers 412 Precondition Failed, and the
sinks' create-only rule rests on that, so `PreconditionEmulator` enforces the precondition in the
same single-threaded request loop that writes the object: the check and the write are atomic,
as they are on GCS. Nothing else about the emulator is changed.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http import server
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from gcp_storage_emulator.server import RequestHandler, Router
from gcp_storage_emulator.storage import Storage

from app.sinks import GCSSink, LocalSink

EMULATOR_PROJECT = "local-emulator"


class _PreconditionFailed(Exception):
    """Raised inside the emulator's request loop when ifGenerationMatch does not hold."""


class _PreconditionStorage(Storage):  # type: ignore[misc]
    """The emulator's in-memory storage, refusing a write whose generation precondition fails."""

    def __init__(self) -> None:
        super().__init__(use_memory_fs=True)
        self.required_generation: int | None = None

    def create_file(
        self,
        bucket_name: str,
        file_name: str,
        content: bytes,
        file_obj: dict[str, Any],
        file_id: str | None = None,
    ) -> None:
        if self.required_generation is not None:
            current = self.objects.get(bucket_name, {}).get(file_name)
            generation = int(current["generation"]) if current else 0
            if generation != self.required_generation:
                raise _PreconditionFailed
        super().create_file(bucket_name, file_name, content, file_obj, file_id)


class _PreconditionHandler(RequestHandler):  # type: ignore[misc]
    """The emulator's handler, answering 412 like GCS when ifGenerationMatch fails."""

    disable_nagle_algorithm = True
    timeout = 10  # a client that connects and goes silent cannot block the loop for long

    def _route(self, method: str) -> None:
        storage: _PreconditionStorage = self.storage
        query = parse_qs(urlsplit(self.path).query)
        wanted = query.get("ifGenerationMatch")
        storage.required_generation = int(wanted[0]) if wanted else None
        try:
            Router(self).handle(method)
        except _PreconditionFailed:
            body = json.dumps(
                {
                    "error": {
                        "code": 412,
                        "message": "At least one of the pre-conditions you specified did not hold.",
                        "errors": [{"reason": "conditionNotMet", "domain": "global"}],
                    }
                }
            ).encode()
            self.send_response(412, "Precondition Failed")
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            storage.required_generation = None

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")


class _QueueingHTTPServer(server.HTTPServer):
    """One request at a time (the emulator's storage is not thread-safe), many waiting to connect."""

    request_queue_size = 128  # the default 5 drops concurrent SYNs: a 1 s retransmit stall each


class PreconditionEmulator:
    """An in-memory gcp-storage-emulator on 127.0.0.1 with an OS-chosen port, plus preconditions."""

    def __init__(self) -> None:
        self.storage = _PreconditionStorage()
        self._httpd = _QueueingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_PreconditionHandler, self.storage)
        )
        port = self._httpd.server_address[1]
        self.host = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> PreconditionEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the JSON API, as any client would."""
        request = urllib.request.Request(  # noqa: S310 - an http:// URL we built, to our own emulator
            f"{self.host}/storage/v1/b?project={EMULATOR_PROJECT}",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - same
            if response.status != 200:
                raise RuntimeError(f"bucket {name} not created: HTTP {response.status}")


@dataclass
class GcsEmulator:
    """What a test needs of the running emulator."""

    server: PreconditionEmulator
    bucket: str

    @property
    def host(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:PORT" (the value of STORAGE_EMULATOR_HOST)."""
        return self.server.host

    def env(self) -> dict[str, str]:
        """Environment variables that point a job subprocess at this emulator and bucket."""
        return {"STORAGE_EMULATOR_HOST": self.host, "GCS_BUCKET": self.bucket}

    def create_bucket(self, name: str | None = None) -> str:
        """Create another bucket (unique name unless given) and return its name."""
        bucket = name or unique_bucket_name()
        self.server.create_bucket(bucket)
        return bucket


def unique_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def make_test_gcs_sink(
    endpoint: str,
    bucket: str,
    prefix: str = "conversions",
    *,
    request_timeout: float = 5.0,
    retry_deadline: float = 10.0,
) -> GCSSink:
    """A GCSSink for tests: real client, short timeouts and back-offs (10 ms first wait)."""
    return GCSSink(
        bucket,
        prefix,
        endpoint=endpoint,
        request_timeout=request_timeout,
        retry_deadline=retry_deadline,
        retry_initial_delay=0.01,
        retry_max_delay=0.1,
    )


@pytest.fixture
def gcs_emulator() -> Iterator[GcsEmulator]:
    """A fresh emulator with one new bucket; stopped when the test ends."""
    emulator = PreconditionEmulator().start()
    try:
        bucket = unique_bucket_name()
        emulator.create_bucket(bucket)
        yield GcsEmulator(server=emulator, bucket=bucket)
    finally:
        emulator.stop()


@pytest.fixture
def gcs_sink(gcs_emulator: GcsEmulator) -> Iterator[GCSSink]:
    """A GCS sink on the test's fresh bucket, under prefix "conversions"."""
    sink = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket)
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture
def local_sink(tmp_path: Path) -> LocalSink:
    """A local sink rooted in the test's temporary directory."""
    return LocalSink(tmp_path / "output")
