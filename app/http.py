"""One HTTP POST with a hard wall-clock deadline, whatever the server does.

Built on urllib3's connection pools directly: `requests` on top of them cost ~0.3-0.5 ms of
CPU per page (sessions, hooks, cookies, header merging), about a fifth of the job's CPU at
zero latency, for features a form POST to one API does not use.

A socket timeout bounds each socket operation, not the request: a server that sends a
byte every few seconds, or headers and then nothing, or a body that never ends, keeps a plain
request alive for hours. Here every request gets a deadline:

- connect and per-read timeouts never exceed the time left;
- the body is streamed and the deadline is checked between chunks, with a size cap;
- a reaper thread (one per client, stopped by `close()`) shuts down the socket of any request
  whose deadline passes while it is blocked inside the HTTP stack (status line, headers, a read),
  which wakes the blocked call at once.

Every failure path closes the connection; no thread is started per request. Low-level errors
are mapped to `app.errors` classes here and nowhere else:

- no connection was ever made (refused, name not resolved, host or network unreachable):
  `ConnectFailed` ("network"), naming host and port;
- a deadline passed (connect timeout, silence, drip, endless body): `RequestTimeout`;
- a connection that broke mid-exchange (reset, truncated or oversized body): `NetworkError`;
- `abort_all()` (SIGTERM) cut the request short, or it came after: `RequestInterrupted`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import heapq
import itertools
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any
from urllib.parse import urlencode

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from app.errors import ConnectFailed, FetchError, NetworkError, RequestInterrupted, RequestTimeout

MAX_BODY_BYTES = 32 * 1024 * 1024
"""A page of 100 conversions is ~100 KB; anything past this is a broken or endless response."""

_CHUNK = 64 * 1024


class _Guard:
    """The deadline of one request and the connections it is using."""

    __slots__ = ("_conns", "_lock", "_seen", "aborted", "deadline", "done", "fired")

    def __init__(self, deadline: float, seen: weakref.WeakSet[HTTPConnection]) -> None:
        self.deadline = deadline
        self._seen = seen
        self.fired = False
        """The request's sockets were shut down: its deadline passed, or it was aborted."""
        self.aborted = False
        """`abort_all()` fired it (SIGTERM), not its deadline."""
        self.done = False
        self._conns: list[HTTPConnection] = []
        self._lock = threading.Lock()

    def attach(self, conn: HTTPConnection) -> None:
        self._seen.add(conn)
        with self._lock:
            self._conns.append(conn)
            fire_now = self.fired
        if fire_now:
            _shutdown(conn)

    def close_connections(self) -> None:
        """After a failure: close every connection this request touched; none can be reused."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._conns = []  # the pool owns healthy connections; drop our references

    def fire(self, *, abort: bool = False) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            self.aborted = self.aborted or abort
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn)


def _shutdown(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_current_guard: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar(
    "current_guard", default=None
)


class _GuardedConnectionMixin:
    """Registers the connection with the deadline guard of the request being sent on it."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        guard = _current_guard.get()
        if guard is not None:
            guard.attach(self)  # type: ignore[arg-type]
        super().request(method, url, *args, **kwargs)  # type: ignore[misc]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        guard = _current_guard.get()
        if guard is not None and guard.fired:  # fired while the socket did not exist yet
            _shutdown(self)  # type: ignore[arg-type]


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _Reaper:
    """One thread that fires guards whose deadline has passed."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, _Guard]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._aborted = False
        self._thread: threading.Thread | None = None
        self._wake_at: float | None = None
        """When the sleeping reaper wakes up by itself (None: only when notified)."""

    def watch(self, guard: _Guard) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("HTTP client is closed")
            if self._aborted:  # abort_all() ran after this request's own check: abort it too
                guard.fire(abort=True)
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadline-reaper",
                                                daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (guard.deadline, next(self._counter), guard))
            # Wake the reaper only if it would otherwise sleep past this deadline: with one
            # timeout for every request that is almost never, and a wake-up per request cost
            # two thread switches.
            if self._wake_at is None or guard.deadline < self._wake_at:
                self._cond.notify()

    def abort_all(self) -> None:
        """Fire every watched guard as aborted, and every guard watched from now on."""
        with self._cond:
            self._aborted = True
            guards = [g for _, _, g in self._heap]
        for guard in guards:
            guard.fire(abort=True)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake_at = None
                    self._cond.wait()
                    continue
                deadline, _, guard = self._heap[0]
                now = self._clock()
                delay = deadline - now
                if delay > 0:
                    wait = min(delay, 1.0)  # at least once a second: finished guards are dropped
                    self._wake_at = now + wait
                    self._cond.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
                self._cond.release()
                try:
                    guard.fire()
                finally:
                    self._cond.acquire()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)


def _discard(response: urllib3.BaseHTTPResponse | None) -> None:
    """A failed response: close it (its connection cannot be reused) and free its pool slot."""
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
        with contextlib.suppress(Exception):
            response.release_conn()


_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EHOSTDOWN: "host down",
    errno.EADDRNOTAVAIL: "address not available",
}


def _host_port(url: str) -> str:
    parts = urllib3.util.parse_url(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.host}:{port}"


def _connect_failure(exc: urllib3.exceptions.NewConnectionError, target: str) -> str:
    """What stopped the connection, in a few words, and where to (no urllib3 object reprs)."""
    cause = exc.__cause__
    if isinstance(exc, urllib3.exceptions.NameResolutionError) or isinstance(cause,
                                                                             socket.gaierror):
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        return f"name not resolved: {target} ({reason})"
    if isinstance(cause, OSError):
        what = _CONNECT_ERRNOS.get(cause.errno or 0)
        if what is not None:
            return f"{what}: {target}"
        return f"could not connect: {target} ({cause.strerror or cause})"
    return f"could not connect: {target} ({exc})"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float


class HttpClient:
    """POSTs form-encoded bodies with a hard deadline per request; thread-safe; reuses connections."""

    def __init__(
        self,
        *,
        timeout: float,
        connect_timeout: float = 10.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        pool_size: int = 8,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = "involve-asia-job/1.0",
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._headers = {
            "User-Agent": user_agent,
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        # No proxies or .netrc picked up from the environment; certifi's CA bundle, as requests
        # used; never retried or redirected behind our back (the pager owns retries).
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False,
                                         retries=False, ca_certs=certifi.where())
        self._pool.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }
        self._reaper = _Reaper(clock)
        self._connections: weakref.WeakSet[HTTPConnection] = weakref.WeakSet()
        self._closed = False
        self._aborted = False

    def post_form(
        self, url: str, data: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """POST `data` form-encoded; return status, headers and the whole body.

        Raises ConnectFailed when no connection could be made (refused, name not resolved,
        unreachable), RequestTimeout when a deadline passes (at any stage), NetworkError for
        resets, truncated or oversized bodies, RequestInterrupted once `abort_all()` ran.
        """
        if self._aborted:
            raise RequestInterrupted("request not sent: the job is stopping")
        start = self._clock()
        guard = _Guard(start + self.timeout, self._connections)
        self._reaper.watch(guard)
        token = _current_guard.set(guard)
        response: urllib3.BaseHTTPResponse | None = None
        try:
            response = self._pool.urlopen(
                "POST",
                url,
                body=urlencode(data),
                headers={**self._headers, **headers} if headers else self._headers,
                timeout=urllib3.Timeout(connect=min(self.connect_timeout, self.timeout),
                                        read=self.timeout),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            body = self._read_body(response, guard)
            response.release_conn()  # back to the pool, ready for the next request
            return HttpResponse(
                status=response.status,
                headers=dict(response.headers),
                body=body,
                elapsed=self._clock() - start,
            )
        except FetchError as exc:
            _discard(response)
            guard.close_connections()
            if guard.aborted and not isinstance(exc, RequestInterrupted):
                raise self._interrupted() from exc
            raise
        except (urllib3.exceptions.HTTPError, HTTPException, OSError) as exc:
            _discard(response)
            guard.close_connections()
            raise self._map_error(exc, guard, url) from exc
        finally:
            guard.finish()
            _current_guard.reset(token)

    def _read_body(self, response: urllib3.BaseHTTPResponse, guard: _Guard) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.stream(_CHUNK):
            if guard.aborted:
                raise self._interrupted()
            if guard.fired or self._clock() > guard.deadline:
                raise RequestTimeout(
                    f"request exceeded {self.timeout:g}s while reading the body "
                    f"({size} bytes received)"
                )
            size += len(chunk)
            if size > self.max_body_bytes:
                raise NetworkError(f"response body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
        if guard.aborted:
            raise self._interrupted()
        if guard.fired:
            raise RequestTimeout(f"request exceeded {self.timeout:g}s")
        return b"".join(chunks)

    @staticmethod
    def _interrupted() -> RequestInterrupted:
        return RequestInterrupted("request interrupted: the job is stopping")

    def _map_error(self, exc: BaseException, guard: _Guard, url: str) -> FetchError:
        if guard.aborted:
            return self._interrupted()
        if guard.fired:
            return RequestTimeout(f"request exceeded {self.timeout:g}s ({type(exc).__name__})")
        # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            return ConnectFailed(_connect_failure(exc, _host_port(url)))
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            connect = min(self.connect_timeout, self.timeout)
            return RequestTimeout(f"connect timeout: no answer from {_host_port(url)} "
                                  f"within {connect:g}s")
        if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
            return RequestTimeout(f"{type(exc).__name__}: no data within {self.timeout:g}s")
        return NetworkError(f"{type(exc).__name__}: {exc}")

    def abort_all(self) -> None:
        """Shut down every request in flight now and refuse new ones (used on SIGTERM): each
        of them raises RequestInterrupted."""
        self._aborted = True
        self._reaper.abort_all()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reaper.close()
        self._pool.clear()
        for conn in list(self._connections):  # also any the pool no longer tracks
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
