"""Hard wall-clock deadlines for the requests of any `requests` session (`Deadlines`): the machinery
that bounds every request the job sends, the API's (`app.http.HttpClient`) and storage's
(`app.sinks.transport`). A generic transport module: it knows neither the API nor storage.

`requests`' `timeout=` bounds each socket operation, not the request. Here a reaper thread (one per
`Deadlines`) shuts down the socket of any request whose deadline passes while it is blocked anywhere in
the HTTP stack: the TLS handshake, the request, the status line, the headers, a body read. A connection
registers when urllib3 starts to connect it or, reused from the pool, when it sends the request; a TLS
socket registers itself before its handshake (`GuardedSSLSocket`). The guards are installed through public
hooks only (see `app.http`'s docstring).
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool


class Guard:
    """The deadline of one request and what it is using: connections, and a TLS socket while
    its handshake runs."""

    __slots__ = ("_lock", "_targets", "aborted", "deadline", "done", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        """The request's sockets were shut down: its deadline passed, or it was aborted."""
        self.aborted = False
        """`abort_all()` fired it (SIGTERM), not its deadline."""
        self.done = False
        self._targets: list[GuardedConnectionMixin | ssl.SSLSocket] = []
        self._lock = threading.Lock()

    def attach(self, target: GuardedConnectionMixin | ssl.SSLSocket) -> None:
        if isinstance(target, GuardedConnectionMixin):
            target.guard = self  # the connection is this request's now (it may come from the pool)
        with self._lock:
            if target not in self._targets:
                self._targets.append(target)
            fire_now = self.fired
        if fire_now:
            _shutdown(target)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._targets = []  # the pool owns healthy connections; drop our references

    def fire(self, *, abort: bool = False) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            self.aborted = self.aborted or abort
            # A connection this request already gave back to the pool may be another
            # request's by now: leave that one alone.
            targets = [t for t in self._targets
                       if not isinstance(t, GuardedConnectionMixin) or t.guard is self]
        for target in targets:
            _shutdown(target)


def _shutdown(target: GuardedConnectionMixin | ssl.SSLSocket) -> None:
    """Shut down the socket under a connection or a TLS socket; a blocked call on it wakes."""
    sock = target if isinstance(target, socket.socket) else getattr(target, "sock", None)
    if sock is None:  # not created yet (name lookup, TCP connect) or already closed
        return
    with contextlib.suppress(OSError):  # closed, or detached by the TLS wrap (fd -1)
        # The plain socket call, also for a TLS socket: it cuts the file descriptor without
        # touching the TLS state another thread may be using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current_guard: contextvars.ContextVar[Guard | None] = contextvars.ContextVar(
    "current_guard", default=None
)


class GuardedConnectionMixin:
    """Registers the connection with the deadline guard of the request using it.

    `connect()` is where urllib3 resolves the name, connects and (for https) does the TLS
    handshake; `request()` covers a keep-alive connection taken from the pool. During the
    handshake the connection's `sock` is a plain socket urllib3 has already handed to the TLS
    layer (detached), so the handshake registers its own socket: `GuardedSSLSocket`.
    """

    guard: Guard | None = None

    def connect(self) -> None:
        guard = _current_guard.get()
        if guard is not None:
            guard.attach(self)
        super().connect()  # type: ignore[misc]
        if guard is not None and guard.fired:  # fired while the socket did not exist yet
            _shutdown(self)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        guard = _current_guard.get()
        if guard is not None:
            guard.attach(self)
        super().request(method, url, *args, **kwargs)  # type: ignore[misc]


class GuardedHTTPConnection(GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(GuardedConnectionMixin, HTTPSConnection):
    pass


class GuardedSSLSocket(ssl.SSLSocket):
    """A TLS socket that registers with the current request's guard before its handshake, so
    a server that stalls the handshake is cut off at the deadline (or by `abort_all()`)."""

    def do_handshake(self, block: bool = False) -> None:
        guard = _current_guard.get()
        if guard is not None:
            guard.attach(self)
        super().do_handshake(block)


def _tls_context() -> ssl.SSLContext:
    """urllib3's own default TLS settings; wrapped sockets are `GuardedSSLSocket`s (the
    standard library's public `sslsocket_class` hook). Certificates are still verified:
    requests hands urllib3 certifi's CA bundle for every https pool."""
    context = urllib3.util.create_urllib3_context()
    context.sslsocket_class = GuardedSSLSocket
    return context


class _DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools make guarded connections, and whose `close()` closes them."""

    def __init__(self, **kwargs: Any) -> None:
        self._pools: weakref.WeakSet[HTTPConnectionPool] = weakref.WeakSet()
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        pool_kwargs.setdefault("ssl_context", _tls_context())
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> ConnectionPool:
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        if isinstance(pool, HTTPConnectionPool) and not issubclass(pool.ConnectionCls,
                                                                   GuardedConnectionMixin):
            # A pool seen for the first time; it has not made a connection yet.
            pool.ConnectionCls = (GuardedHTTPSConnection if isinstance(pool, HTTPSConnectionPool)
                                  else GuardedHTTPConnection)
            self._pools.add(pool)
        return pool

    def close(self) -> None:
        super().close()
        # urllib3 2.8's PoolManager.clear() forgets its pools without closing them, which would
        # leave their idle keep-alive sockets open until garbage collection: close them here.
        for pool in list(self._pools):
            pool.close()


def release_session(deadlines: Deadlines, session: requests.Session) -> None:
    deadlines.close()
    session.close()


class _Reaper:
    """One thread that fires guards whose deadline has passed."""

    def __init__(self, clock: Callable[[], float], name: str) -> None:
        self._clock = clock
        self._name = name
        self._heap: list[tuple[float, int, Guard]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._aborted = False
        self._thread: threading.Thread | None = None
        self._wake_at: float | None = None
        """When the sleeping reaper wakes up by itself (None: only when notified)."""

    def watch(self, guard: Guard) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("HTTP client is closed")
            if self._aborted:  # abort_all() ran after this request's own check: abort it too
                guard.fire(abort=True)
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
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


class Deadlines:
    """Hard wall-clock deadlines for the requests of `requests` sessions: the machinery of
    `HttpClient`, for any session that mounts `adapter()` (the storage client's too).

    Each request is sent inside `bounded(seconds)`: its connections register with the guard it
    yields, and one reaper thread (started on first use, named `name`) shuts their sockets down
    when the deadline passes, wherever the request is blocked. `abort_all()` does the same at
    once to every request in flight and to every one started later (SIGTERM, or a run that
    stops storing).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 name: str = "http-deadline-reaper") -> None:
        self._clock = clock
        self._reaper = _Reaper(clock, name)
        self._aborted = False

    @staticmethod
    def adapter(**kwargs: Any) -> HTTPAdapter:
        """An HTTPAdapter (same arguments) whose connections obey the deadlines; mount it for
        http:// and https://."""
        return _DeadlineAdapter(**kwargs)

    @staticmethod
    def current() -> Guard | None:
        """The guard of the request this thread is sending, if any."""
        return _current_guard.get()

    @property
    def aborted(self) -> bool:
        return self._aborted

    @contextlib.contextmanager
    def bounded(self, seconds: float, *, finish: bool = True) -> Iterator[Guard]:
        """Send requests inside this block with a deadline `seconds` from now. The guard is
        finished on leaving (`finish=False`: the caller finishes it, e.g. once a streamed
        body is read; until then the deadline still holds for the connection)."""
        guard = Guard(self._clock() + seconds)
        self._reaper.watch(guard)
        token = _current_guard.set(guard)
        try:
            yield guard
        finally:
            if finish:
                guard.finish()
            _current_guard.reset(token)

    def abort_all(self) -> None:
        """Cut every request in flight now, and every one started from now on."""
        self._aborted = True
        self._reaper.abort_all()

    def close(self) -> None:
        self._reaper.close()


