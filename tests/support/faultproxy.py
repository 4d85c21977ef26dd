"""A small threaded HTTP proxy that injects storage faults on a deterministic schedule.

It listens on 127.0.0.1 (OS-chosen port), forwards every request to `upstream` (the GCS
emulator) unchanged, Host header included, so URLs the emulator hands out (resumable session
URLs, media links) point back at the proxy, and replaces chosen requests by a fault:

    "503", "429", "500", "403", ...   answer with that status and a GCS-style JSON error body,
                                      without forwarding
    "reset"                           read the request, then drop the connection with a TCP RST,
                                      without forwarding (the server never sees it)
    "reset_after"                     forward the request (the server does the work), then RST the
                                      client instead of relaying the answer: the write happened
                                      but the client cannot know
    "corrupt"                         flip one bit of the middle byte of the request body, then
                                      forward (for uploads of a few KiB the byte is in the data)
    "bad_checksum_reply"              forward, then relay the answer with its "crc32c" field
                                      replaced by "AAAAAA==" (a server that stored other bytes)
    "drip"                            forward, then relay the whole answer (status line and
                                      headers included) one byte per `interval` seconds, until
                                      it is sent or the client hangs up (`proxy.drips` says how
                                      it went)
    "pass"                            forward and relay unchanged (with `then_down`)

`then_down=True` on a rule takes storage down once its fault has acted (the answer relayed,
or the connection reset): `go_down()`, as if GCS became unreachable. While down the proxy
refuses connections (its listening socket is closed), has closed every open connection, and
never forwards a request that still reaches it. `go_down(silent=True)` is a black hole
instead: connections are accepted and requests read, and nothing ever answers. `come_up()`
listens again on the same port.

Which requests: each `Rule` names a request category and a schedule. Categories:
"upload" (POST/PUT under /upload/), "compose", "download" (media reads), "list", "metadata"
(other object/bucket GETs), "delete", "other", or "any". Schedules, counted per rule over the
requests of its category (1-based):

    Rule("503", on="upload", nth={2, 5})        the 2nd and 5th upload
    Rule("reset", on="compose", nth={1})        the first compose
    Rule("429", on="any", probability=0.3)      30 % of requests, from the proxy's seeded RNG
    Rule("403", on="any")                       every request (a permanent failure)
    Rule("503", on="upload", first=3)           the first three uploads
    Rule("drip", on="metadata", where="/days/", nth={3}, interval=0.5)
                                                the third metadata request for a day snapshot

`where` limits a rule to requests whose (URL-decoded) path contains it; only those count.

Every rule counts every request of its category (so `nth` means the nth such request through
the proxy); when several fire for one request, the first rule in the list decides. Rules can be
replaced while the proxy runs (`set_rules`).

    with FaultProxy(emulator.host, [Rule("503", on="upload", nth={1, 2})], seed=7) as proxy:
        sink = make_test_gcs_sink(proxy.url, bucket)
        ...
        assert proxy.injected("upload") == ["503", "503"]

`proxy.events` records every request in arrival order: `Event(index, method, path, category,
action, status, at)`, where action is "forwarded" or the fault injected ("down" for a request
that reached the proxy while down), status is the HTTP status the client got (None after a
reset), and `at` the time it arrived (time.monotonic()).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import server
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_NAMED_FAULTS = ("reset", "reset_after", "corrupt", "bad_checksum_reply", "drip", "pass")
_FORWARDING = ("forwarded", "reset_after", "corrupt", "bad_checksum_reply", "drip", "pass")
CATEGORIES = ("upload", "compose", "download", "list", "metadata", "delete", "other")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


@dataclass
class Rule:
    """Inject `fault` into requests of category `on` when the schedule fires.

    Schedule: `nth` (1-based positions among this rule's requests), or `first` (the first n),
    or `probability` (seeded RNG); none of them means every request. `where`: only requests
    whose URL-decoded path contains it are this rule's. `interval`: seconds per byte of a
    drip. `then_down`: take the proxy down once the fault has acted (`silent`: as a black hole).
    """

    fault: str
    on: str = "any"
    nth: Iterable[int] | None = None
    first: int | None = None
    probability: float | None = None
    where: str | None = None
    interval: float = 0.5
    then_down: bool = False
    silent: bool = False
    seen: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.on != "any" and self.on not in CATEGORIES:
            raise ValueError(f"unknown category {self.on!r}; expected 'any' or one of {CATEGORIES}")
        if self.fault not in _NAMED_FAULTS and not self.fault.isdigit():
            raise ValueError(f"unknown fault {self.fault!r}; expected a status or {_NAMED_FAULTS}")
        self.nth = frozenset(self.nth) if self.nth is not None else None

    def fires(self, category: str, rng: random.Random, path: str = "") -> bool:
        if self.on not in ("any", category):
            return False
        if self.where is not None and self.where not in unquote(path):
            return False
        self.seen += 1
        if self.nth is not None:
            return self.seen in self.nth
        if self.first is not None:
            return self.seen <= self.first
        if self.probability is not None:
            return rng.random() < self.probability
        return True


@dataclass(frozen=True)
class Event:
    """What the proxy did with one request."""

    index: int
    method: str
    path: str
    category: str
    action: str
    status: int | None
    at: float = 0.0


@dataclass(frozen=True)
class Drip:
    """How one dripped answer went: `sent` of `size` bytes in `seconds`; `completed` is False
    when the client hung up first."""

    index: int
    sent: int
    size: int
    seconds: float
    completed: bool


def categorize(method: str, path: str) -> str:
    """The category of a GCS JSON API request, as rules name it."""
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    category = "other"
    if parts.path.startswith("/upload/"):
        category = "upload"
    elif parts.path.endswith("/compose"):
        category = "compose"
    elif method == "DELETE":
        category = "delete"
    elif method == "GET" and (parts.path.startswith("/download/") or query.get("alt") == ["media"]):
        category = "download"
    elif method == "GET":
        category = "list" if parts.path.endswith("/o") else "metadata"
    return category


class _ProxyServer(server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent SYNs: a 1 s retransmit stall each


class FaultProxy:
    """Forwarding proxy with scheduled faults; see the module docstring."""

    def __init__(
        self, upstream: str, rules: Sequence[Rule] = (), *, seed: int = 0, timeout: float = 10.0
    ) -> None:
        target = urlsplit(upstream)
        if target.scheme != "http" or not target.hostname or not target.port:
            raise ValueError(f"upstream must look like http://127.0.0.1:PORT, got {upstream!r}")
        self._upstream = (target.hostname, target.port)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._rules = list(rules)
        self._rng = random.Random(seed)
        self.events: list[Event] = []
        self.drips: list[Drip] = []
        self.down_since: float | None = None
        """When the proxy last went down (time.monotonic()); None while it is up."""
        self._down = False
        self._silent = False
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._handler = self._handler_class()
        self._httpd = _ProxyServer(("127.0.0.1", 0), self._handler)
        self._port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self._port}"
        self._thread = self._serve_thread()

    def _serve_thread(self) -> threading.Thread:
        return threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # lifecycle

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._close_server()

    def _close_server(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def go_down(self, *, silent: bool = False) -> None:
        """Storage unreachable: refuse connections, close the open ones, forward nothing
        (`silent`: accept connections and never answer)."""
        with self._lock:
            if self._down:
                return
            self._down = True
            self._silent = silent
            self.down_since = time.monotonic()
            connections = list(self._connections)
        if silent:
            return
        self._close_server()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def come_up(self) -> None:
        """Listen again on the same port (the URL stays valid)."""
        with self._lock:
            if not self._down:
                return
            if self._silent:
                self._down = self._silent = False
                self.down_since = None
                return
            self._httpd = _ProxyServer(("127.0.0.1", self._port), self._handler)
            self._thread = self._serve_thread()
            self._down = False
            self.down_since = None
        self._thread.start()

    @property
    def down(self) -> bool:
        return self._down

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # schedule and record

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Replace the rules (their counters start again from zero)."""
        with self._lock:
            self._rules = list(rules)

    def injected(self, category: str = "any") -> list[str]:
        """Faults injected so far, in order, for one category (or all)."""
        with self._lock:
            return [
                e.action for e in self.events if e.action != "forwarded" and category in ("any", e.category)
            ]

    def forwarded(self, category: str = "any") -> int:
        """How many requests of a category reached the upstream server."""
        with self._lock:
            return sum(1 for e in self.events if e.action in _FORWARDING and category in ("any", e.category))

    def _decide(self, method: str, path: str) -> tuple[int, Rule | None, str]:
        category = categorize(method, path)
        with self._lock:
            index = len(self.events)
            if self._down:
                rule, action = None, "down"
            else:
                # Every rule counts every request of its category; the first one that fires decides.
                fired = [rule for rule in self._rules if rule.fires(category, self._rng, path)]
                rule = fired[0] if fired else None
                action = rule.fault if rule is not None else "forwarded"
            # Reserve the slot now so the log keeps arrival order; the status is filled in later.
            self.events.append(Event(index, method, path, category, action, None, time.monotonic()))
        return index, rule, action

    def _record(self, index: int, status: int | None) -> None:
        with self._lock:
            event = self.events[index]
            self.events[index] = Event(
                event.index, event.method, event.path, event.category, event.action, status,
                event.at
            )

    def _drip(self, index: int, wfile: Any, data: bytes, interval: float) -> None:
        """Send `data` one byte per `interval` seconds until done, or the client hangs up."""
        started = time.monotonic()
        sent = 0
        try:
            for position in range(len(data)):
                if position and self._closing.wait(interval):
                    break
                wfile.write(data[position : position + 1])
                sent += 1
        except OSError:
            pass
        with self._lock:
            self.drips.append(Drip(index, sent, len(data), time.monotonic() - started,
                                   sent == len(data)))

    # forwarding

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=self._timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body)
            response = conn.getresponse()
            payload = response.read()
            return response.status, response.reason, response.getheaders(), payload
        finally:
            conn.close()

    def _handler_class(self) -> type[server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            timeout = 30

            def log_message(self, format: str, *args: object) -> None:
                return  # keep test output quiet; the proxy records events instead

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _read_body(self) -> bytes:
                length = self.headers.get("Content-Length")
                if length is not None:
                    return self.rfile.read(int(length))
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return b""

            def _reset(self) -> None:
                """Drop the client connection with an RST (SO_LINGER 0, then close)."""
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.rfile.close()
                    self.connection.close()

            def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self._read_body()
                index, rule, action = proxy._decide(self.command, self.path)
                try:
                    self._act(index, action, body, rule)
                finally:
                    if rule is not None and rule.then_down:
                        proxy.go_down(silent=rule.silent)

            def _act(self, index: int, action: str, body: bytes, rule: Rule | None) -> None:
                if action == "down" and proxy._silent:
                    proxy._closing.wait()  # a black hole: never answer
                    self.close_connection = True
                    return
                if action in ("reset", "down"):
                    proxy._record(index, None)
                    self._reset()
                    return
                if action.isdigit():
                    status = int(action)
                    error = {
                        "error": {
                            "code": status,
                            "message": f"injected fault {status}",
                            "errors": [{"reason": "injected", "message": "fault proxy"}],
                        }
                    }
                    proxy._record(index, status)
                    self._reply(
                        status,
                        http.HTTPStatus(status).phrase,
                        [("Content-Type", "application/json; charset=UTF-8")],
                        json.dumps(error).encode(),
                    )
                    return
                if action == "corrupt" and body:
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]
                try:
                    status, reason, headers, payload = proxy._forward(
                        self.command, self.path, self.headers.items(), body
                    )
                except OSError:
                    proxy._record(index, 502)
                    self._reply(502, "Bad Gateway", [], b"upstream unreachable")
                    return
                if action == "reset_after":
                    proxy._record(index, None)
                    self._reset()
                    return
                if action == "bad_checksum_reply":
                    payload = re.sub(rb'"crc32c": ?"[^"]*"', b'"crc32c": "AAAAAA=="', payload)
                proxy._record(index, status)
                if action == "drip" and rule is not None:
                    self.close_connection = True
                    head = [f"HTTP/1.1 {status} {reason}"]
                    head += [f"{name}: {value}" for name, value in headers
                             if name.lower() not in _HOP_BY_HOP]
                    head += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
                    data = "\r\n".join(head).encode("latin-1") + payload
                    proxy._drip(index, self.wfile, data, rule.interval)
                    return
                self._reply(status, reason, headers, payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        return Handler
