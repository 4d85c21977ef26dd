"""The simulated Involve Asia API over real HTTP: `Simulator` and its request handler.

One thread per connection (HTTP/1.1 keep-alive, Nagle off). Every connection and handler thread
is tracked, and every wait is on the stop event, so `stop()` ends hung handlers, closes every
socket and joins every thread within about a second.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import select
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from app.simulator import responses
from app.simulator.auth import SimAccount, TokenState, TokenStore
from app.simulator.currency import CURRENCY_FILTER, convert, preferred_error
from app.simulator.dataset import (
    Dataset,
    RecordsPerDay,
    as_date,
    ids_of,
    record_filter,
    unit_draw,
)
from app.simulator.faults import DEFAULT_RANDOM_FAULTS, Fault, FaultBook, RequestIdentity
from app.simulator.ledger import Ledger, LedgerEntry
from app.simulator.throttle import Throttle

_log = logging.getLogger(__name__)

ROUTES: Mapping[str, str] = {
    "/api/authenticate": "authenticate",
    "/api/conversions/range": "range",
    "/api/conversions/data-range": "data-range",
}
MAX_PAGE_LIMIT = 100
MAX_REQUEST_BODY = 1 << 20
STOP_JOIN_SECONDS = 2.0
RETRY_AFTER_CHOICES = ("yes", "no", "random")

# Faults that replace the whole answer; the others change how the normal answer is made or sent.
_PREEMPTING = frozenset({
    "reset", "no_answer", "headers_then_silence", "endless_body", "malformed_json", "http_500",
    "http_502", "http_503", "rate_limit", "rate_limit_no_header", "envelope_error",
    "token_revoked", "huge_error_body",
})


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    outcome: str
    content_type: str = responses.JSON
    headers: tuple[tuple[str, str], ...] = ()
    ids: tuple[int, ...] = ()
    token: str | None = None


@dataclass(frozen=True)
class _Query:
    """A conversions request's form, parsed; `error` says why it is invalid."""

    start_raw: str | None
    end_raw: str | None
    page_key: int | str | None
    limit_key: int | str | None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    page: int = 1
    limit: int = MAX_PAGE_LIMIT
    currency: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Exchange:
    """One request as the handler sees it once identified."""

    identity: RequestIdentity
    attempt: int
    fault: Fault | None
    started: float
    token: str | None
    form: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _parse_bound(raw: str | None, endpoint: str, end_of_day: bool) -> dt.datetime | None:
    if not raw:
        return None
    try:
        if endpoint == "data-range" and len(raw) > 10:
            return dt.datetime.strptime(raw, "%Y-%m-%d %H:%M:%S")
        day = dt.datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        return None
    return dt.datetime.combine(day, dt.time(23, 59, 59) if end_of_day else dt.time())


def _parse_int(raw: str | None, default: int) -> int | str:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return raw


def parse_query(endpoint: str, form: Mapping[str, str]) -> _Query:
    """Validate a conversions form the way the API does (its errors are 401s)."""
    start_raw, end_raw = form.get("start_date"), form.get("end_date")
    page_key = _parse_int(form.get("page"), 1)
    limit_key = _parse_int(form.get("limit"), MAX_PAGE_LIMIT)
    query = _Query(start_raw, end_raw, page_key, limit_key)
    shape = "YYYY-MM-DD HH:MM:SS" if endpoint == "data-range" else "YYYY-MM-DD"
    start = _parse_bound(start_raw, endpoint, end_of_day=False)
    end = _parse_bound(end_raw, endpoint, end_of_day=True)
    error = None
    if start is None:
        error = f"start_date is required as {shape}, got {start_raw!r}"
    elif end is None:
        error = f"end_date is required as {shape}, got {end_raw!r}"
    elif end < start:
        error = "end_date must not be before start_date"
    elif not isinstance(page_key, int) or page_key < 1:
        error = f"page must be an integer >= 1, got {page_key!r}"
    elif not isinstance(limit_key, int) or not 1 <= limit_key <= MAX_PAGE_LIMIT:
        error = f"limit must be an integer in 1..{MAX_PAGE_LIMIT}, got {limit_key!r}"
    else:
        error = preferred_error(form.get(CURRENCY_FILTER))
    if error is not None:
        return replace(query, start=start, end=end, error=error)
    assert isinstance(page_key, int) and isinstance(limit_key, int)
    return replace(query, start=start, end=end, page=page_key, limit=limit_key,
                   currency=form.get(CURRENCY_FILTER) or None)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections and threads so they can be ended."""

    daemon_threads = True
    block_on_close = False  # stop() joins the tracked threads itself, with a deadline
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        self.threads: set[threading.Thread] = set()
        self.tracking = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall on
        # a machine with slow DNS; the simulator does not need it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address),
                                  name=f"simulator-conn-{client_address[1]}", daemon=True)
        with self.tracking:
            self.connections.add(request)
            self.threads.add(thread)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.tracking:
                self.threads.discard(threading.current_thread())

    def shutdown_request(self, request: Any) -> None:
        with self.tracking:
            self.connections.discard(request)
        super().shutdown_request(request)

    def abort_connections(self) -> None:
        """Shut every open connection down, waking handlers blocked in recv or send."""
        with self.tracking:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def close_leftovers(self) -> None:
        """Close connections whose handler did not end in time (should not happen)."""
        with self.tracking:
            leftovers = list(self.connections)
            self.connections.clear()
        for connection in leftovers:
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return  # the client went away, or stop() shut the socket: nothing to report
        _log.exception("simulator handler failed for %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    """Speaks the API over one connection; fault kinds decide what it sends, if anything."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "nginx"
    sys_version = ""

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def sim(self) -> Simulator:
        return cast(_Server, self.server).simulator

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr lines."""

    def do_GET(self) -> None:
        """Every API call is a POST."""
        self._read_body()
        self._send(_Reply(405, responses.METHOD_NOT_ALLOWED, "not_found"))

    def do_POST(self) -> None:
        """Route, pick a fault, answer, record."""
        try:
            self._handle_post()
        except OSError:
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _read_form(self) -> dict[str, str]:
        parsed = parse_qs(self._read_body().decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[-1] for name, values in parsed.items()}

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.sim.stop_event.wait(seconds)

    def _head(self, status: int, content_type: str, length: int | None,
              headers: Iterable[tuple[str, str]] = ()) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Date: {self.date_time_string()}",
            "Server: nginx",
            f"Content-Type: {content_type}",
            "Cache-Control: no-cache, private",
        ]
        lines.append(f"Content-Length: {length}" if length is not None
                     else "Transfer-Encoding: chunked")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, reply: _Reply) -> None:
        # One write for head and body: no Nagle/delayed-ACK stall between the two.
        head = self._head(reply.status, reply.content_type, len(reply.body), reply.headers)
        self.wfile.write(head + reply.body)

    def _record(self, exchange: _Exchange, status: int | None, outcome: str,
                ids: tuple[int, ...] = (), token: str | None = None) -> None:
        identity = exchange.identity
        self.sim.ledger.append(LedgerEntry(
            endpoint=identity.endpoint,
            account=identity.account,
            start_date=identity.start,
            end_date=identity.end,
            page=identity.page if isinstance(identity.page, int) else None,
            limit=identity.limit if isinstance(identity.limit, int) else None,
            attempt=exchange.attempt,
            status=status,
            outcome=outcome,
            ids=ids,
            token=token if token is not None else exchange.token,
            started=exchange.started,
            finished=self.sim.clock(),
            fault=exchange.fault.kind if exchange.fault is not None else None,
            form=exchange.form,
            preferred_currency=exchange.form.get(CURRENCY_FILTER),
        ))

    # -- the request ---------------------------------------------------------------------------

    def _handle_post(self) -> None:
        sim = self.sim
        started = sim.clock()
        form = self._read_form()
        endpoint = ROUTES.get(urlsplit(self.path).path)
        if endpoint is None:
            exchange = _Exchange(RequestIdentity("unknown", None), 1, None, started, None)
            reply = _Reply(404, responses.NOT_FOUND, "not_found")
            self._record(exchange, reply.status, reply.outcome)
            self._send(reply)
            return
        identity, token, state, query = self._identify(endpoint, form)
        account = identity.account
        attempt = sim.faults.next_attempt(identity)
        fault = sim.faults.choose(identity, attempt)
        # The form of a conversions request goes to the ledger; authenticate's holds a secret.
        exchange = _Exchange(identity, attempt, fault, started, token,
                             MappingProxyType(form) if query is not None else MappingProxyType({}))
        kind = fault.kind if fault is not None else None

        self._pause(sim.latency)
        if fault is not None and kind == "latency":
            self._pause(float(fault.params.get("seconds", 1.0)))
        if sim.stop_event.is_set():
            self.close_connection = True
            self._record(exchange, None, "stopped")
            return
        if fault is not None and kind in _PREEMPTING:
            self._preempt(exchange, fault)
            return
        if fault is not None and kind == "insert":
            day = fault.day or identity.last_day
            if account is not None and day is not None:
                sim.dataset.insert(account, day, int(fault.params.get("count", 1)))

        if query is None and kind in _LYING:
            reply = _Reply(200, responses.success([]), kind)  # success, but no token
        elif query is None:
            reply = self._authenticate(form, account, exchange)
        else:
            reply = self._conversions(state, account, query, form, exchange,
                                      lie=fault if kind in _LYING else None)
        if fault is not None and kind == "drip":
            self._drip(exchange, reply, fault)
        elif kind == "truncated":
            self._truncated(exchange, reply)
        else:
            self._record(exchange, reply.status, reply.outcome, reply.ids, reply.token)
            self._send(reply)

    def _identify(self, endpoint: str, form: Mapping[str, str]
                  ) -> tuple[RequestIdentity, str | None, TokenState, _Query | None]:
        """Who asks for what: (identity, bearer token, token state, conversions query)."""
        if endpoint == "authenticate":
            account = self.sim.account_for(form.get("key"), form.get("secret"))
            return RequestIdentity(endpoint, account), None, "missing", None
        token = _bearer(self.headers.get("Authorization"))
        state, account = self.sim.tokens.lookup(token)
        query = parse_query(endpoint, form)
        identity = RequestIdentity(
            endpoint, account, query.start_raw, query.end_raw, query.page_key, query.limit_key,
            first_day=query.start.date() if query.start else None,
            last_day=query.end.date() if query.end else None,
        )
        return identity, token, state, query

    def _authenticate(self, form: Mapping[str, str], account: str | None,
                      exchange: _Exchange) -> _Reply:
        if not form.get("key") or not form.get("secret"):
            return _Reply(401, responses.envelope_error(
                "Incorrect arguments: key and secret are required"), "validation")
        if account is None:
            return _Reply(401, responses.INVALID_CREDENTIALS, "invalid_credentials")
        wait = self.sim.throttle.admit(account)
        if wait is not None:
            return self._throttled(wait, exchange)
        token = self.sim.tokens.issue(account)
        return _Reply(200, responses.success({"token": token}), "ok", token=token)

    def _conversions(self, state: TokenState, account: str | None, query: _Query,
                     form: Mapping[str, str], exchange: _Exchange, *, lie: Fault | None) -> _Reply:
        """One page of the range; `lie` (empty_page, short_page, zero_count) makes it hold less
        than the dataset has, in an answer that is otherwise right."""
        if state == "malformed":
            return _Reply(401, responses.WRONG_SEGMENTS, "unauthorized")
        if state != "ok" or account is None:
            return _Reply(401, responses.UNAUTHENTICATED, "unauthorized")
        wait = self.sim.throttle.admit(account)
        if wait is not None:
            return self._throttled(wait, exchange)
        if query.error is not None or query.start is None or query.end is None:
            return _Reply(401, responses.envelope_error(f"Incorrect arguments: {query.error}"),
                          "validation")
        dataset = self.sim.dataset
        segments = dataset.segments(account, query.start, query.end, record_filter(form))
        count, records = dataset.page(segments, query.page, query.limit)
        kind = lie.kind if lie is not None else None
        if kind in ("empty_page", "zero_count"):
            records = []
        elif lie is not None and kind == "short_page":
            keep = min(max(float(lie.params.get("keep", 0.4)), 0.0), 1.0)
            records = records[:min(int(len(records) * keep), max(len(records) - 1, 0))]
        if kind == "zero_count":
            count = 0
        if query.currency is not None:
            records = [convert(record, query.currency) for record in records]
        next_page = query.page + 1 if query.page * query.limit < count else None
        body = responses.success({"page": query.page, "limit": query.limit, "count": count,
                                  "nextPage": next_page, "data": records})
        return _Reply(200, body, kind or "ok", ids=ids_of(records))

    def _throttled(self, wait: int, exchange: _Exchange) -> _Reply:
        headers: tuple[tuple[str, str], ...] = ()
        if self.sim.send_retry_after(exchange.identity, exchange.attempt):
            headers = (("Retry-After", str(wait)),)
        return _Reply(429, responses.TOO_MANY_REQUESTS, "rate_limited", headers=headers)

    # -- faults --------------------------------------------------------------------------------

    def _preempt(self, exchange: _Exchange, fault: Fault) -> None:
        kind = fault.kind
        if kind == "reset":
            self._record(exchange, None, kind)
            self._reset()
        elif kind == "no_answer":
            self.close_connection = True
            self._record(exchange, None, kind)
            self._hold_silent()
        elif kind == "headers_then_silence":
            self.close_connection = True
            self._record(exchange, 200, kind)
            self.wfile.write(self._head(200, responses.JSON, 4096))
            self._hold_silent()
        elif kind == "endless_body":
            self.close_connection = True
            self._record(exchange, 200, kind)
            self.wfile.write(self._head(200, responses.JSON, None))
            self._endless()
        elif kind == "token_revoked":
            if exchange.identity.account is not None:
                self.sim.tokens.revoke(exchange.identity.account)
            self._reply_fault(exchange, _Reply(401, responses.UNAUTHENTICATED, kind))
        else:
            self._reply_fault(exchange, _canned_fault(fault))

    def _reply_fault(self, exchange: _Exchange, reply: _Reply) -> None:
        self._record(exchange, reply.status, reply.outcome)
        self._send(reply)

    def _reset(self) -> None:
        """Abort the connection with an RST: linger 0, then really close the socket."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference, or close() would not close
        self.connection.close()

    def _hold_silent(self) -> None:
        """Send nothing until hang_seconds pass, the simulator stops, or the client leaves."""
        deadline = time.monotonic() + self.sim.hang_seconds
        stop = self.sim.stop_event
        while not stop.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or self._peer_gone():
                return

    def _peer_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _endless(self) -> None:
        """Chunks of records, as fast as the client takes them, never the final chunk."""
        first = responses.success({"page": 1, "limit": 100, "count": 100, "nextPage": 2})[:-2]
        record = responses.dumps({"conversion_id": 1, "sale_amount": "1.00"}) + b","
        filler = record * max(1, 16384 // len(record))
        prefix = first + b',"data":['
        self.wfile.write(b"%x\r\n%s\r\n" % (len(prefix), prefix))
        chunk = b"%x\r\n%s\r\n" % (len(filler), filler)
        deadline = time.monotonic() + self.sim.hang_seconds
        while not self.sim.stop_event.is_set() and time.monotonic() < deadline:
            self.wfile.write(chunk)

    def _drip(self, exchange: _Exchange, reply: _Reply, fault: Fault) -> None:
        """Head at once, then the body a few bytes at a time at the configured rate."""
        rate = float(fault.params.get("bytes_per_second", self.sim.drip_bytes_per_second))
        step = 1 if rate <= 20 else int(rate // 20)
        interval = step / rate
        self._record(exchange, reply.status, "drip", reply.ids)
        self.wfile.write(self._head(reply.status, reply.content_type, len(reply.body),
                                    reply.headers))
        began = time.monotonic()
        stop = self.sim.stop_event
        for index, offset in enumerate(range(0, len(reply.body), step)):
            if stop.wait(max(0.0, began + index * interval - time.monotonic())):
                self.close_connection = True
                return
            self.wfile.write(reply.body[offset:offset + step])

    def _truncated(self, exchange: _Exchange, reply: _Reply) -> None:
        """Promise the whole body, send half of it, close."""
        self.close_connection = True
        cut = len(reply.body) // 2
        head = self._head(reply.status, reply.content_type, len(reply.body), reply.headers)
        self._record(exchange, reply.status, "truncated")
        self.wfile.write(head + reply.body[:cut])


_LYING = frozenset({"empty_page", "short_page", "zero_count"})
"""Fault kinds answered by a well-formed 200 that holds less than the dataset has."""


def _canned_fault(fault: Fault) -> _Reply:
    kind = fault.kind
    if kind == "malformed_json":
        return _Reply(200, responses.MALFORMED_JSON, kind)
    if kind in ("http_500", "http_502", "http_503"):
        return _Reply(int(kind[-3:]), responses.proxy_error_page(int(kind[-3:])), kind,
                      content_type=responses.HTML)
    if kind == "rate_limit":
        seconds = fault.params.get("retry_after", 1)
        return _Reply(429, responses.TOO_MANY_REQUESTS, kind,
                      headers=(("Retry-After", str(seconds)),))
    if kind == "rate_limit_no_header":
        return _Reply(429, responses.TOO_MANY_REQUESTS, kind)
    if kind == "envelope_error":
        return _Reply(200, responses.ENVELOPE_ERROR, kind)
    if kind == "huge_error_body":
        return _Reply(500, responses.huge_error_page(), kind, content_type=responses.HTML)
    raise ValueError(f"fault kind {kind!r} has no canned reply")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class Simulator:
    """The Involve Asia API on 127.0.0.1, with a deterministic dataset, faults and a ledger.

    See `app/simulator/README.md`; every argument is keyword-only.
    """

    def __init__(
        self,
        *,
        accounts: Sequence[SimAccount] | None = None,
        records_per_day: RecordsPerDay = 250,
        seed: int = 1,
        token_ttl: float = 7200.0,
        rate_limit_per_minute: int | None = 60,
        rate_window: float = 60.0,
        retry_after: str = "yes",
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = DEFAULT_RANDOM_FAULTS,
        latency: float = 0.0,
        hang_seconds: float = 3600.0,
        drip_bytes_per_second: float = 5.0,
        validation_rate: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.accounts: list[SimAccount] = list(accounts) if accounts else [SimAccount()]
        if retry_after not in RETRY_AFTER_CHOICES:
            raise ValueError(f"retry_after must be one of {RETRY_AFTER_CHOICES}, "
                             f"got {retry_after!r}")
        if drip_bytes_per_second <= 0:
            raise ValueError(f"drip_bytes_per_second must be > 0, got {drip_bytes_per_second}")
        self.seed = seed
        self.retry_after = retry_after
        self.latency = latency
        self.hang_seconds = hang_seconds
        self.drip_bytes_per_second = drip_bytes_per_second
        self.clock = clock
        self.host = host
        self.port = port
        self.dataset = Dataset([account.name for account in self.accounts], records_per_day, seed,
                               currencies={account.name: account.currency
                                           for account in self.accounts},
                               validation_rate=validation_rate)
        self.tokens = TokenStore(token_ttl, clock)
        self.throttle = Throttle(rate_limit_per_minute, clock, rate_window)
        self.faults = FaultBook(seed, fault_rate, fault_kinds)
        self.ledger = Ledger()
        self.stop_event = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, host: str | None = None, port: int | None = None) -> Simulator:
        """Bind (an OS-chosen port unless told) and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self.stop_event.clear()
        server = _Server((host or self.host, self.port if port is None else port), self)
        self._server = server
        self._serve_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="simulator-serve", daemon=True)
        self._serve_thread.start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the simulator listens on."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def base_url(self) -> str:
        """The API base, e.g. "http://127.0.0.1:PORT/api"."""
        host, port = self.address
        return f"http://{host}:{port}/api"

    def stop(self) -> None:
        """End every handler (hung ones too), close every socket, join every thread."""
        server = self._server
        if server is None:
            return
        self.stop_event.set()
        server.shutdown()
        server.server_close()
        server.abort_connections()
        if self._serve_thread is not None:
            self._serve_thread.join(STOP_JOIN_SECONDS)
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        with server.tracking:
            threads = list(server.threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        server.close_leftovers()
        self._server = None
        self._serve_thread = None

    def __enter__(self) -> Simulator:
        return self.start() if self._server is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # -- controls ------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Add a deterministic fault rule (the first matching rule wins)."""
        self.faults.add(fault)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.faults.clear()

    def revoke_tokens(self, account: str | None = None) -> int:
        """Invalidate every token issued so far (for one account, or all); return how many."""
        return self.tokens.revoke(account)

    def insert_records(self, account: str, day: dt.date | str, n: int) -> list[int]:
        """Live dataset: add n new conversions to the front of the day; return their ids."""
        return self.dataset.insert(account, day, n)

    def expected_ids(self, account: str, start_date: dt.date | str,
                     end_date: dt.date | str) -> set[int]:
        """Ids the dataset holds now for the inclusive range."""
        return self.dataset.expected_ids(account, start_date, end_date)

    def records(self, account: str, day: dt.date | str,
                currency: str | None = None) -> list[dict[str, Any]]:
        """The day's current dataset (current statuses), in served order; with `currency`
        ("USD", "MYR") as `filters[preferred_currency]=currency` would serve it."""
        records = self.dataset.records(account, as_date(day))
        return [convert(record, currency) for record in records] if currency else records

    @staticmethod
    def expected_record(record: Mapping[str, Any], currency: str | None) -> dict[str, Any]:
        """`record` (in its local currency) as `filters[preferred_currency]=currency` serves
        it; None or "" = unchanged. Same as `app.simulator.currency.convert`."""
        return convert(record, currency)

    def local_currency(self, account: str) -> str:
        """The currency the account's records carry without a preferred currency."""
        return self.dataset.currency(account)

    def advance_validation(self, steps: int = 1) -> None:
        """Move the validation clock on: at each step every still-pending record resolves to
        approved or rejected with probability `validation_rate` (seeded; never back)."""
        self.dataset.advance(steps)

    @property
    def validation_epoch(self) -> int:
        """Validation steps taken so far."""
        return self.dataset.epoch

    def statuses(self, account: str, day: dt.date | str) -> dict[int, str]:
        """Conversion id -> current status, for every record the day holds now."""
        return self.dataset.statuses(account, as_date(day))

    @property
    def issued_tokens(self) -> list[str]:
        """Every token ever issued."""
        return self.tokens.issued

    def request_count(self, account: str | None = None, endpoint: str = "range") -> int:
        """Requests seen for that endpoint (and account, unless None)."""
        return sum(1 for entry in self.ledger.snapshot()
                   if entry.endpoint == endpoint and (account is None or entry.account == account))

    # -- used by the handler -------------------------------------------------------------------

    def account_for(self, key: str | None, secret: str | None) -> str | None:
        """The account name whose key and secret these are, if any."""
        for account in self.accounts:
            if account.key == key and account.secret == secret:
                return account.name
        return None

    def send_retry_after(self, identity: RequestIdentity, attempt: int) -> bool:
        """Whether a throttle 429 carries Retry-After (seeded when retry_after="random")."""
        if self.retry_after == "random":
            return unit_draw(self.seed, "retry-after", identity.account, identity.endpoint,
                             identity.start, identity.end, identity.page, attempt) < 0.5
        return self.retry_after == "yes"
