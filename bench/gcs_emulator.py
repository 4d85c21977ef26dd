"""`python -m bench.gcs_emulator BUCKET`: an in-memory GCS emulator in its own process.

Binds 127.0.0.1 on an OS-chosen port, creates BUCKET, prints `PORT <n>` on stdout, and serves
until its stdin is closed (the bench closes it to stop the emulator). Running in its own process
keeps the emulator's CPU and memory out of both the bench's and the job's figures.
"""

from __future__ import annotations

import functools
import sys
import threading
from http import server
from typing import Any

from gcp_storage_emulator.handlers import buckets
from gcp_storage_emulator.server import RequestHandler
from gcp_storage_emulator.storage import Storage


class _Handler(RequestHandler):  # type: ignore[misc]
    """The emulator's handler with Nagle off (headers and body go out in separate writes)."""

    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request lines."""


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
