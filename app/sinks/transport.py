"""The storage client's HTTP session: every GCS request under one hard wall-clock deadline.

google-cloud-storage's `timeout=` is `requests`' timeout: it bounds each socket read, not the
request, so an answer dripping one byte a second keeps a call alive for as long as the answer
lasts. The client accepts the `requests` session it sends through (its constructor's `_http`
argument: any object with `requests.Session.request`'s interface; the one it would build
itself is google-auth's `AuthorizedSession`). `DeadlineSession` is that `AuthorizedSession`
with `app.http.Deadlines` mounted, the machinery that bounds every API request:

- each request gets a deadline of the session's `timeout` (STORAGE_TIMEOUT), or less when the
  caller passes a smaller number as `timeout`; it covers connecting, the token refresh that
  may come first (google-auth's token request goes through a session with the same adapter,
  inside the same deadline), sending, and reading the answer; a streamed download keeps its
  deadline until its response is released;
- a request cut at its deadline raises `StorageDeadlineExceeded`, a `requests` Timeout, which
  the storage retry policy retries like any transient error;
- `abort_all()` cuts every request in flight and refuses new ones with
  `StorageRequestAborted`, which is never retried: the run has stopped storing.

The session also reads the body of every error answer (a response hook), so a streamed
download answered with an error releases its pooled connection at once instead of pinning it
(and its socket) until garbage collection while the client retries.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable
from typing import Any, cast

import requests
import urllib3
from google.auth.credentials import Credentials
from google.auth.transport.requests import AuthorizedSession, Request

from app.deadline import Deadlines

CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection (never more than the request's deadline)."""


class StorageDeadlineExceeded(requests.exceptions.Timeout):
    """A storage request ran past its deadline and was cut (retried like any timeout)."""


class StorageRequestAborted(requests.exceptions.RequestException):
    """A storage request cut short, or refused unsent, because the run stopped storing."""


def release_error_body(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """requests response hook: consume an error answer so its connection is released."""
    if response.status_code >= 400:
        with contextlib.suppress(Exception):
            response.content  # noqa: B018 - reading it is the point


def _close_all(deadlines: Deadlines, *sessions: requests.Session) -> None:
    deadlines.close()
    for session in sessions:
        session.close()


class DeadlineSession(AuthorizedSession):
    """google-auth's AuthorizedSession, each request bounded by a hard deadline (see the module
    docstring). `deadlines` may be shared with the owner, which can then `abort_all()` it."""

    def __init__(self, credentials: Credentials, *, timeout: float,
                 connect_timeout: float = CONNECT_TIMEOUT, deadlines: Deadlines | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.deadlines = deadlines or Deadlines(clock, name="storage-deadline-reaper")
        # Token requests (the metadata server on Cloud Run) go through a session of their own,
        # as google-auth does it, with the same adapter: they run inside the deadline of the
        # storage request that needed the token.
        auth_session = requests.Session()
        for prefix in ("http://", "https://"):
            auth_session.mount(prefix, self.deadlines.adapter(max_retries=3))
        super().__init__(credentials, auth_request=Request(auth_session))  # type: ignore[no-untyped-call]
        self._auth_session = auth_session
        for prefix in ("http://", "https://"):
            self.mount(prefix, self.deadlines.adapter())
        self.hooks["response"].append(release_error_body)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        weakref.finalize(self, _close_all, self.deadlines, auth_session)

    def request(  # type: ignore[override]  # noqa: PLR0917 - requests.Session.request's interface
        self, method: str, url: str, data: Any = None, headers: Any = None,
        max_allowed_time: float | None = None, timeout: Any = None, **kwargs: Any,
    ) -> requests.Response:
        if Deadlines.current() is not None:
            # Called again from within a request (google-auth resends after refreshing a
            # rejected token): the deadline of the outer request holds.
            return cast(requests.Response, super().request(  # type: ignore[no-untyped-call]
                method, url, data=data, headers=headers, max_allowed_time=max_allowed_time,
                timeout=timeout, **kwargs))
        if self.deadlines.aborted:
            raise StorageRequestAborted("storage request not sent: the run stopped storing")
        seconds = self.timeout
        if isinstance(timeout, int | float) and 0 < timeout < seconds:
            seconds = float(timeout)
        with self.deadlines.bounded(seconds, finish=False) as guard:
            try:
                response = cast(requests.Response, super().request(  # type: ignore[no-untyped-call]
                    method, url, data=data, headers=headers, max_allowed_time=max_allowed_time,
                    timeout=(min(self.connect_timeout, seconds), seconds), **kwargs))
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                guard.finish()
                if guard.aborted:
                    raise StorageRequestAborted(
                        "storage request cut short: the run stopped storing") from exc
                if guard.fired:
                    raise StorageDeadlineExceeded(
                        f"storage request exceeded {seconds:g}s ({type(exc).__name__})") from exc
                raise
            except BaseException:
                guard.finish()
                raise
        if guard.fired:
            # Cut while the answer came in: http.client takes a connection shut down in the
            # middle of the headers or of a body without a length for the end of the answer,
            # so what arrived is not to be trusted, whatever its status says.
            guard.finish()
            response.close()
            if guard.aborted:
                raise StorageRequestAborted("storage request cut short: the run stopped storing")
            raise StorageDeadlineExceeded(f"storage request exceeded {seconds:g}s")
        if kwargs.get("stream"):
            # The body is read after this returns: the deadline holds until the response goes.
            weakref.finalize(response, guard.finish)
        else:
            guard.finish()
        return response

    def abort_all(self) -> None:
        """Cut every request in flight and refuse new ones (the run stopped storing)."""
        self.deadlines.abort_all()

    def close(self) -> None:
        super().close()  # type: ignore[no-untyped-call]
        _close_all(self.deadlines, self._auth_session)
