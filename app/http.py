"""One HTTP POST with a hard wall-clock deadline, whatever the server does.

Built on a `requests.Session` with one `HTTPAdapter` mounted for http:// and https://: never
retried (`max_retries=0`, the fetch layer owns retries) or redirected, one pool of `pool_size`
connections per host, cookies refused, nothing taken from the environment (proxies, .netrc,
CA bundle: `trust_env` off; requests verifies against certifi's bundle).

`requests`' `timeout=` bounds each socket operation, not the request: a server that sends a
byte every few seconds, or headers and then nothing, or a body that never ends, keeps a plain
request alive for hours. Here every request gets one deadline, `timeout` seconds from the moment
`post_form` is called, that covers the whole exchange:

- the connect timeout is the smaller of `connect_timeout` and `timeout`, each read's timeout
  never exceeds `timeout`;
- a reaper thread (one per client, stopped by `close()`) shuts down the socket of any request
  whose deadline passes while it is blocked anywhere in the HTTP stack: the TLS handshake, the
  request, the status line, the headers, a body read. That wakes the blocked call at once. A
  connection registers when urllib3 starts to connect it (`connect()`: name lookup, TCP, TLS)
  or, reused from the pool, when it sends the request (`request()`); a TLS socket registers
  itself before its handshake (`GuardedSSLSocket`);
- the body is streamed and the deadline is checked between chunks, with a size cap.

A name lookup is the one step nothing can cut short: `getaddrinfo` has no socket to shut down,
so it runs for as long as the system resolver allows (resolv.conf's timeout and attempts); the
request fails as a RequestTimeout as soon as it returns past the deadline.

The machinery (`Deadlines`: guards, the reaper, the adapter) serves any `requests` session:
the storage client's session uses it too (`app/sinks/transport.py`), so one implementation
bounds every request the job sends.

The guards are installed through public hooks only: the adapter's
`get_connection_with_tls_context` (requests' documented subclassing point) hands back the pool,
whose `ConnectionCls` (urllib3's public attribute) is set to the guarded class before the pool
creates a connection; `init_poolmanager` (the same kind of hook) gives the pools an SSL context
built by urllib3's `create_urllib3_context` whose `sslsocket_class` (the standard library's
hook) is the guarded TLS socket.

Every failure path closes the connection; no thread is started per request. `requests`' and
urllib3's errors are mapped to `app.errors` classes here and nowhere else:

- no connection was ever made (refused, name not resolved, host or network unreachable):
  `ConnectFailed` ("network"), naming host and port;
- a deadline passed (connect timeout, silence, drip, endless body): `RequestTimeout`;
- a connection that broke mid-exchange (reset, truncated, undecodable or oversized body):
  `NetworkError`;
- `abort_all()` (SIGTERM) cut the request short, or it came after: `RequestInterrupted`.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy

import requests
import urllib3

from app.deadline import Deadlines, Guard, release_session
from app.errors import ConnectFailed, FetchError, NetworkError, RequestInterrupted, RequestTimeout

MAX_BODY_BYTES = 32 * 1024 * 1024
"""A page of 100 conversions is ~100 KB; anything past this is a broken or endless response."""

_CHUNK = 64 * 1024


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


def _reason(exc: BaseException) -> BaseException:
    """The urllib3 error a requests exception wraps (through MaxRetryError), else `exc`."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner


def _discard(response: requests.Response | None) -> None:
    """A failed response: close it (its connection cannot be reused) and free its pool slot."""
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


@dataclass(frozen=True)
class HttpResponse:
    """One answer, read whole: status code, headers (case-insensitive), body (decoded from
    gzip/deflate)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpClient:
    """POSTs form-encoded bodies with a hard deadline per request; thread-safe; reuses connections.

    One Session serves all of an account's fetch threads: it keeps no state between requests
    (cookies refused, headers fixed at construction).
    """

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
        self._timeouts = (min(connect_timeout, timeout), timeout)
        session = requests.Session()
        session.trust_env = False
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        session.headers.update({"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"})
        # One host; keep up to pool_size idle connections; never wait for a free one (how many
        # requests are in flight is the fetch layer's decision, and a wait would eat the deadline).
        self._deadlines = Deadlines(clock)
        adapter = self._deadlines.adapter(max_retries=0, pool_connections=1,
                                          pool_maxsize=pool_size, pool_block=False)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        self._closed = False
        self._aborted = False
        # A client nobody closes (the original interface has no close()) must not leave its
        # reaper thread and pooled sockets behind: they go when the client is collected.
        weakref.finalize(self, release_session, self._deadlines, session)

    @property
    def aborted(self) -> bool:
        """`abort_all()` ran: every request from now on raises RequestInterrupted unsent."""
        return self._aborted

    def post_form(
        self, url: str, data: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """POST `data` form-encoded; return status, headers and the whole body.

        Raises ConnectFailed when no connection could be made (refused, name not resolved,
        unreachable), RequestTimeout when the deadline passes (at any stage), NetworkError for
        resets, truncated, undecodable or oversized bodies, RequestInterrupted once
        `abort_all()` ran.
        """
        if self._aborted:
            raise RequestInterrupted("request not sent: the job is stopping")
        response: requests.Response | None = None
        with self._deadlines.bounded(self.timeout) as guard:
            try:
                response = self._session.post(url, data=data, headers=headers,
                                              timeout=self._timeouts, stream=True,
                                              allow_redirects=False)
                body = self._read_body(response, guard)
                return HttpResponse(status=response.status_code, headers=response.headers,
                                    body=body)
            except FetchError as exc:
                _discard(response)
                if guard.aborted and not isinstance(exc, RequestInterrupted):
                    raise self._interrupted() from exc
                raise
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                _discard(response)
                raise self._map_error(exc, guard, url) from exc

    def _read_body(self, response: requests.Response, guard: Guard) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(_CHUNK):
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

    def _map_error(self, exc: Exception, guard: Guard, url: str) -> FetchError:
        """The one place a requests/urllib3 failure becomes an `app.errors` class."""
        if guard.aborted:
            return self._interrupted()
        if guard.fired:
            return RequestTimeout(f"request exceeded {self.timeout:g}s ({type(exc).__name__})")
        reason = _reason(exc)
        if isinstance(exc, requests.ConnectTimeout):
            return RequestTimeout(f"connect timeout: no answer from {_host_port(url)} "
                                  f"within {self._timeouts[0]:g}s")
        if isinstance(exc, requests.ReadTimeout) or isinstance(
                reason, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
            # iter_content reports a read timeout in the body as a ConnectionError.
            return RequestTimeout(f"ReadTimeout: no data within {self.timeout:g}s")
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return ConnectFailed(_connect_failure(reason, _host_port(url)))
        # ChunkedEncodingError (reset or truncated body), ContentDecodingError, SSLError, a
        # ConnectionError after the connection was made: the exchange broke.
        return NetworkError(f"{type(exc).__name__}: {type(reason).__name__}: {reason}"
                            if reason is not exc else f"{type(exc).__name__}: {exc}")

    def abort_all(self) -> None:
        """Shut down every request in flight now and refuse new ones (used on SIGTERM): each
        of them raises RequestInterrupted."""
        self._aborted = True
        self._deadlines.abort_all()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._deadlines.close()
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

