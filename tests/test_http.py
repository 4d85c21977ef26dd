"""Hard per-request deadlines against the simulator's hostile servers, over real sockets."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from app.api import AccountClient
from app.errors import (
    ConnectFailed,
    FetchError,
    NetworkError,
    RequestInterrupted,
    RequestTimeout,
)
from app.http import HttpClient
from app.ratelimit import RateLimiter
from app.simulator import Fault, Simulator

DAY = dt.date(2025, 1, 15)
TIMEOUT = 1.0


@pytest.fixture
def sim(make_simulator) -> Simulator:  # type: ignore[no-untyped-def]
    return make_simulator(records_per_day=250, rate_limit_per_minute=None, hang_seconds=60.0,
                          drip_bytes_per_second=20.0)


@pytest.fixture
def client(sim: Simulator) -> Iterator[AccountClient]:
    http = HttpClient(timeout=TIMEOUT, connect_timeout=TIMEOUT)
    account = AccountClient(base_url=sim.base_url, key="general", secret="demo-secret",
                            http=http, limiter=RateLimiter(per_minute=100_000))
    yield account
    http.close()


def _client_threads() -> set[threading.Thread]:
    """Threads of this process that are not the in-process simulator's."""
    return {t for t in threading.enumerate() if not t.name.startswith("simulator-")}


def _connections_to(port: int) -> int:
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("no_answer", RequestTimeout),
        ("headers_then_silence", RequestTimeout),
        ("drip", RequestTimeout),
    ],
)
def test_a_silent_or_slow_server_costs_at_most_the_timeout_plus_one_second(
    sim: Simulator, client: AccountClient, kind: str, error: type[FetchError]
) -> None:
    """No answer, headers then silence, a slow drip: each ends in timeout .. timeout + 1 s."""
    client.fetch_page(DAY, DAY, 2, 100)  # authenticate and warm the connection first
    sim.add_fault(Fault(kind=kind, date=DAY.isoformat(), page=1, attempts={1}))
    started = time.monotonic()
    with pytest.raises(error):
        client.fetch_page(DAY, DAY, 1, 100)
    elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + 1.0, elapsed
    page = client.fetch_page(DAY, DAY, 1, 100)  # the next attempt gets through
    assert len(page.records) == 100


@pytest.mark.timeout(30)
def test_an_endless_body_is_cut_by_the_size_cap_or_the_deadline(sim: Simulator,
                                                                client: AccountClient) -> None:
    """A body that never ends stops at the size cap (fast server) or the deadline, never later."""
    sim.add_fault(Fault(kind="endless_body", date=DAY.isoformat(), page=1, attempts={1}))
    started = time.monotonic()
    with pytest.raises((RequestTimeout, NetworkError)):
        client.fetch_page(DAY, DAY, 1, 100)
    assert time.monotonic() - started <= TIMEOUT + 1.0
    assert len(client.fetch_page(DAY, DAY, 1, 100).records) == 100


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["reset", "truncated"])
def test_resets_and_truncated_bodies_are_network_errors(sim: Simulator, client: AccountClient,
                                                       kind: str) -> None:
    """A reset connection or a body cut short is a NetworkError, raised at once; the connection
    was made, so it is not a ConnectFailed."""
    sim.add_fault(Fault(kind=kind, date=DAY.isoformat(), page=1, attempts={1}))
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        client.fetch_page(DAY, DAY, 1, 100)
    assert time.monotonic() - started < TIMEOUT
    assert not isinstance(caught.value, ConnectFailed)
    assert caught.value.error_class == "network"
    assert len(client.fetch_page(DAY, DAY, 1, 100).records) == 100


@pytest.mark.timeout(60)
def test_a_hundred_failures_leave_no_thread_and_no_socket(sim: Simulator) -> None:
    """100 failing requests in a row: thread count back to its baseline, no connection left open."""
    kinds = ["reset", "truncated", "headers_then_silence", "http_503", "malformed_json"]
    for n in range(100):
        sim.add_fault(Fault(kind=kinds[n % len(kinds)], date=DAY.isoformat(), page=1,
                            attempts={n + 1}))
    gc.collect()  # clients earlier tests dropped release their threads now, not mid-test
    threads_before = _client_threads()
    http = HttpClient(timeout=0.3, connect_timeout=0.3)
    client = AccountClient(base_url=sim.base_url, key="general", secret="demo-secret", http=http,
                           limiter=RateLimiter(per_minute=100_000))
    port = int(sim.base_url.split(":")[2].split("/")[0])
    failures = 0
    for _ in range(100):
        try:
            client.fetch_page(DAY, DAY, 1, 100)
        except FetchError:
            failures += 1
        assert _connections_to(port) <= 1  # at most the one pooled keep-alive connection
    assert failures == 100
    assert len(_client_threads() - threads_before) <= 1  # + the client's deadline reaper
    http.close()
    deadline = time.monotonic() + 2
    while _connections_to(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _connections_to(port) == 0
    assert _client_threads() - threads_before == set()  # no thread of this client is left


@pytest.mark.timeout(30)
def test_abort_all_ends_a_request_in_flight_at_once(sim: Simulator, client: AccountClient) -> None:
    """SIGTERM support: abort_all() wakes a request blocked on a silent server immediately, as
    RequestInterrupted (not a timeout); every later request is refused unsent, the same way."""
    http = HttpClient(timeout=20.0)
    account = AccountClient(base_url=sim.base_url, key="general", secret="demo-secret",
                            http=http, limiter=RateLimiter(per_minute=100_000))
    sim.add_fault(Fault(kind="no_answer", date=DAY.isoformat(), page=1, attempts={1}))
    account.fetch_page(DAY, DAY, 2, 100)
    timer = threading.Timer(0.5, http.abort_all)
    timer.start()
    started = time.monotonic()
    with pytest.raises(RequestInterrupted) as caught:
        account.fetch_page(DAY, DAY, 1, 100)
    assert time.monotonic() - started < 2.0
    assert caught.value.error_class == "interrupted" and not caught.value.retryable
    seen = len(sim.ledger.snapshot())
    with pytest.raises(RequestInterrupted, match="not sent"):
        account.fetch_page(DAY, DAY, 1, 100)
    assert len(sim.ledger.snapshot()) == seen  # nothing reached the server
    http.close()


@pytest.mark.timeout(30)
def test_abort_all_interrupts_a_raw_request_to_a_silent_socket() -> None:
    """A server that accepts and never answers: abort_all() from another thread ends the
    blocked post_form within a fraction of a second, as RequestInterrupted."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        http = HttpClient(timeout=20.0)
        timer = threading.Timer(0.3, http.abort_all)
        timer.start()
        started = time.monotonic()
        with pytest.raises(RequestInterrupted):
            http.post_form(f"http://127.0.0.1:{port}/api/conversions/range", {"page": "1"})
        assert time.monotonic() - started < 2.0
        http.close()


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, read, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _connect_failure(url: str) -> tuple[FetchError, float]:
    with HttpClient(timeout=5.0, connect_timeout=5.0) as http:
        started = time.monotonic()
        with pytest.raises(FetchError) as caught:
            http.post_form(url, {"page": "1"})
        return caught.value, time.monotonic() - started


@pytest.mark.timeout(30)
def test_a_closed_port_is_a_connect_failure_named_as_such() -> None:
    """Connection refused: ConnectFailed ("network"), "connection refused: 127.0.0.1:PORT", at
    once; not a timeout."""
    port = _closed_port()
    error, elapsed = _connect_failure(f"http://127.0.0.1:{port}/api/authenticate")
    assert type(error) is ConnectFailed
    assert error.error_class == "network" and error.retryable
    assert str(error) == f"connection refused: 127.0.0.1:{port}"
    assert elapsed < 1.0


@pytest.mark.timeout(30)
def test_a_name_that_cannot_resolve_is_a_connect_failure() -> None:
    """Name not resolved: ConnectFailed naming the host. The name is in the reserved `.invalid`
    TLD and longer than DNS's 253-character limit, so the resolver refuses it locally and no
    query leaves the machine."""
    host = ".".join(["a" * 60] * 5) + ".invalid"
    assert len(host) > 253
    error, elapsed = _connect_failure(f"http://{host}:80/api/authenticate")
    assert type(error) is ConnectFailed
    assert str(error).startswith(f"name not resolved: {host}:80")
    assert elapsed < 2.0


@pytest.mark.timeout(30)
def test_an_unreachable_network_is_a_connect_failure() -> None:
    """The kernel refuses TCP to the broadcast address (ENETUNREACH, nothing sent):
    ConnectFailed, "network unreachable: 255.255.255.255:PORT"."""
    error, elapsed = _connect_failure("http://255.255.255.255:9/api/authenticate")
    assert type(error) is ConnectFailed
    assert str(error) == "network unreachable: 255.255.255.255:9"
    assert elapsed < 1.0


@contextlib.contextmanager
def _unanswered_port(accept_after: float | None = None) -> Iterator[int]:
    """A listener on 127.0.0.1 whose accept queue is full: the kernel drops further SYNs.

    With `accept_after`, a thread empties the queue after that many seconds and keeps
    accepting (and never answering): a dropped SYN then gets through when the client resends
    it, about 1 s after the first (Linux's initial retransmission timeout), so the TCP connect
    takes that long.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port: int = server.getsockname()[1]
        fillers = []
        for _ in range(3):  # fill the accept queue; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        stop = threading.Event()
        accepted: list[socket.socket] = []

        def accept_all() -> None:
            if stop.wait(accept_after):
                return
            server.settimeout(0.05)
            while not stop.is_set():
                with contextlib.suppress(OSError):  # TimeoutError included
                    accepted.append(server.accept()[0])

        acceptor = threading.Thread(target=accept_all, name="acceptor", daemon=True)
        if accept_after is not None:
            acceptor.start()
        try:
            yield port
        finally:
            stop.set()
            if accept_after is not None:
                acceptor.join(5)
            for sock in fillers + accepted:
                sock.close()


@pytest.mark.timeout(30)
def test_an_unanswered_connect_stays_a_timeout() -> None:
    """A listener whose accept queue is full drops our SYN: the connect timeout passes and the
    error is RequestTimeout ("timeout"), saying so, not a ConnectFailed."""
    with _unanswered_port() as port, HttpClient(timeout=3.0, connect_timeout=0.5) as http:
        started = time.monotonic()
        with pytest.raises(RequestTimeout) as caught:
            http.post_form(f"http://127.0.0.1:{port}/api/authenticate", {"a": "b"})
        elapsed = time.monotonic() - started
    assert str(caught.value) == f"connect timeout: no answer from 127.0.0.1:{port} within 0.5s"
    assert 0.4 <= elapsed <= 1.5


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_unanswered_connect_ends_at_the_request_deadline(scheme: str) -> None:
    """A connect timeout longer than the request's deadline does not stretch it: the SYN that is
    never answered ends at the deadline, as RequestTimeout, over http and https."""
    with _unanswered_port() as port, HttpClient(timeout=0.5, connect_timeout=10.0) as http:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            http.post_form(f"{scheme}://127.0.0.1:{port}/api/authenticate", {"a": "b"})
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed <= 1.5


@pytest.mark.timeout(30)
def test_a_slow_connect_then_a_stalled_handshake_ends_at_the_deadline() -> None:
    """The deadline counts from the start of the request, not from the handshake: a TCP
    connect that takes ~1 s (a dropped SYN, resent) followed by a TLS handshake the server never
    answers ends at the 1.5 s deadline, not 1.5 s after the connect."""
    with _unanswered_port(accept_after=0.3) as port, \
            HttpClient(timeout=1.5, connect_timeout=1.5) as http:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            http.post_form(f"https://127.0.0.1:{port}/api/authenticate", {"a": "b"})
        elapsed = time.monotonic() - started
    assert 1.35 <= elapsed <= 2.0, elapsed


class _TlsStall:
    """A TCP listener on 127.0.0.1 for https:// URLs that never completes a TLS handshake.

    `drip=False`: it accepts and never sends a byte. `drip=True`: it answers the ClientHello
    with the header of a 16 KB handshake record, then one byte of it every 0.1 s, so no single
    socket read ever waits long enough to time out. No certificate is involved.
    """

    def __init__(self, *, drip: bool) -> None:
        self.drip = drip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, name="tls-stall", daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)
            if self.drip:
                with contextlib.suppress(OSError):
                    conn.recv(65536)  # the ClientHello
                    conn.sendall(b"\x16\x03\x03\x40\x00")  # handshake record, 16384 bytes
                    for _ in range(100):  # 10 s of one byte every 0.1 s
                        if self.stop.wait(0.1):
                            break
                        conn.sendall(b"\x02")

    def __enter__(self) -> str:
        self.thread.start()
        return f"https://127.0.0.1:{self.port}/api/authenticate"

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("drip", [False, True], ids=["silent", "dripping"])
def test_a_stalled_tls_handshake_ends_at_the_deadline(drip: bool) -> None:
    """A server that accepts TCP and then stalls the TLS handshake (never answers the
    ClientHello, or answers it one byte at a time) ends at the request deadline as
    RequestTimeout: the deadline covers the handshake, not only the request after it."""
    with _TlsStall(drip=drip) as url, HttpClient(timeout=TIMEOUT, connect_timeout=TIMEOUT) as http:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            http.post_form(url, {"page": "1"})
        elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + 1.0, elapsed


@pytest.mark.timeout(30)
def test_abort_all_interrupts_a_stalled_tls_handshake() -> None:
    """abort_all() from another thread ends a request stuck in the TLS handshake within a
    fraction of a second, as RequestInterrupted, long before its 20 s deadline."""
    with _TlsStall(drip=False) as url, HttpClient(timeout=20.0, connect_timeout=20.0) as http:
        timer = threading.Timer(0.3, http.abort_all)
        timer.start()
        started = time.monotonic()
        with pytest.raises(RequestInterrupted):
            http.post_form(url, {"page": "1"})
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert http.aborted


class _FixedPage:
    """A one-route API on 127.0.0.1 that answers every conversions request with `body`.

    It records the Cookie header of every request (None when absent) in `cookies`, and sends
    `set_cookie` (if any) as a Set-Cookie header with every answer.
    """

    def __init__(self, body: bytes, *, set_cookie: str | None = None) -> None:
        from http import server

        page = body
        cookies: list[str | None] = []
        self.cookies = cookies

        class Handler(server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                cookies.append(self.headers.get("Cookie"))
                answer = (b'{"status":"success","message":"Success","data":{"token":"t"}}'
                          if self.path.endswith("/authenticate") else page)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                if set_cookie is not None:
                    self.send_header("Set-Cookie", set_cookie)
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"123456789012345678901234567890", 123456789012345678901234567890),  # past 64 bits
        (b"-9223372036854775809", -9223372036854775809),  # just under int64
        (b"18446744073709551615", 18446744073709551615),  # uint64 max: the fast parser's range
        (b"739252000070099", 739252000070099),
        (b'"\\ud800 lone"', "\ud800 lone"),  # the fast parser refuses a lone surrogate
        (b"NaN", "nan"),  # not JSON, but Python's json reads it; the page is not lost for it
    ],
)
def test_page_values_are_parsed_exactly(raw: bytes, value: object) -> None:
    """Whichever parser reads a page, every value comes out as the API wrote it."""
    body = (b'{"status":"success","message":"Success","data":{"page":1,"limit":100,"count":1,'
            b'"nextPage":null,"data":[{"conversion_id":1,"amount":' + raw + b"}]}}")
    with _FixedPage(body) as base_url, HttpClient(timeout=5) as http:
        client = AccountClient(base_url=base_url, key="k", secret="s", http=http,
                               limiter=RateLimiter(per_minute=100_000))
        page = client.fetch_page(DAY, DAY, 1, 100)
    amount = page.records[0]["amount"]
    if value == "nan":
        assert amount != amount  # noqa: PLR0124 - NaN is the one value unequal to itself
    else:
        assert amount == value
        assert type(amount) is type(value)


@pytest.mark.timeout(30)
def test_a_page_holding_a_non_object_record_is_a_bad_page() -> None:
    """`data` must be a list of objects: a number among the records makes the page a retryable
    json_decode error, not a record."""
    from app.errors import BadJSON

    body = (b'{"status":"success","message":"Success","data":{"page":1,"limit":100,"count":2,'
            b'"nextPage":null,"data":[{"conversion_id":1},7]}}')
    with _FixedPage(body) as base_url, HttpClient(timeout=5) as http:
        client = AccountClient(base_url=base_url, key="k", secret="s", http=http,
                               limiter=RateLimiter(per_minute=100_000))
        with pytest.raises(BadJSON, match="not an object") as caught:
            client.fetch_page(DAY, DAY, 1, 100)
    assert caught.value.error_class == "json_decode"


@pytest.mark.timeout(30)
def test_cookies_are_neither_kept_nor_sent() -> None:
    """Cookies are off: a Set-Cookie from the API is not stored, and no request carries one."""
    body = (b'{"status":"success","message":"Success","data":{"page":1,"limit":100,"count":1,'
            b'"nextPage":null,"data":[{"conversion_id":1}]}}')
    fixed = _FixedPage(body, set_cookie="session=made-up; Path=/")
    with fixed as base_url, HttpClient(timeout=5) as http:
        client = AccountClient(base_url=base_url, key="k", secret="s", http=http,
                               limiter=RateLimiter(per_minute=100_000))
        for _ in range(3):
            client.fetch_page(DAY, DAY, 1, 100)
    assert len(fixed.cookies) == 4  # authenticate + three pages
    assert fixed.cookies == [None] * 4
