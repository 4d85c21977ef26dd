"""`python -m bench.gcs_emulator BUCKET`: an in-memory GCS emulator in its own process.

Binds 127.0.0.1 on an OS-chosen port, creates BUCKET, prints `PORT <n>` on stdout, and serves
until its stdin is closed (the bench closes it to stop the emulator). Running in its own process
keeps the emulator's CPU and memory out of both the bench's and the job's figures.

It counts the requests it serves by kind (`list`, `get`, `upload`, `other`); `GET /_bench/requests`
answers the counts so far as JSON and is not counted itself.
"""

from __future__ import annotations

import collections
import functools
import json
import sys
import threading
import urllib.parse
from http import server
from typing import Any

from gcp_storage_emulator.handlers import buckets
from gcp_storage_emulator.server import RequestHandler
from gcp_storage_emulator.storage import Storage

COUNTS_PATH = "/_bench/requests"
_counts: collections.Counter[str] = collections.Counter()
_counts_lock = threading.Lock()


def _kind(method: str, path: str) -> str:
    parts = urllib.parse.urlsplit(path)
    if parts.path.startswith("/upload/"):
        return "upload"
    if method == "GET":
        return "list" if parts.path.endswith("/o") else "get"
    return "other"


class _Handler(RequestHandler):  # type: ignore[misc]
    """The emulator's handler with Nagle off (headers and body go out in separate writes),
    counting the requests it serves."""

    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request lines."""

    def _count(self, method: str) -> None:
        with _counts_lock:
            _counts[_kind(method, self.path)] += 1

    def do_GET(self) -> None:
        if self.path == COUNTS_PATH:
            with _counts_lock:
                body = json.dumps(dict(_counts)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._count("GET")
        super().do_GET()

    def do_POST(self) -> None:
        self._count("POST")
        super().do_POST()

    def do_PUT(self) -> None:
        self._count("PUT")
        super().do_PUT()

    def do_DELETE(self) -> None:
        self._count("DELETE")
        super().do_DELETE()

    def do_PATCH(self) -> None:
        self._count("PATCH")
        super().do_PATCH()


def main(argv: list[str]) -> int:
    bucket = argv[0] if argv else "bench"
    storage = Storage(use_memory_fs=True)
    buckets.create_bucket(bucket, storage)
    httpd = server.HTTPServer(("127.0.0.1", 0), functools.partial(_Handler, storage))
    httpd.request_queue_size = 64
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    print(f"PORT {httpd.server_address[1]}", flush=True)
    try:
        sys.stdin.buffer.read()  # returns at EOF: the bench closed our stdin
    finally:
        httpd.shutdown()
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
