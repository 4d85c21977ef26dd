"""The Involve Asia publisher API for one account: authentication, tokens, and one page request.

`AccountClient` turns one HTTP exchange into a `Page` or a typed error from `app.errors`: this
is the only module that knows how the API's answers (and its lying error bodies) look.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from app import jsoncodec
from app.errors import (
    BadJSON,
    EmptyPage,
    EnvelopeError,
    HTTPStatusError,
    InvalidCredentials,
    RateLimited,
    RequestRejected,
    ShortPage,
    TokenRejected,
    truncate,
)
from app.http import HttpClient, HttpResponse
from app.models import Page
from app.ratelimit import RateLimiter
from app.retry import parse_retry_after

TOKEN_TTL = 7200.0
"""Tokens live about two hours."""
TOKEN_REFRESH_MARGIN = 600.0
"""Re-authenticate this long before the token's expected expiry."""
AUTHENTICATE = "/authenticate"


def _decode(response: HttpResponse) -> Any:
    try:
        return jsoncodec.loads(response.body)
    except (ValueError, UnicodeDecodeError) as exc:
        preview = truncate(response.body[:400].decode("utf-8", "replace"))
        raise BadJSON(f"HTTP {response.status}: body is not JSON: {preview}",
                      status=response.status) from exc


def _body_text(response: HttpResponse) -> str:
    return truncate(response.body[:2000].decode("utf-8", "replace"))


def _raise_for_status(response: HttpResponse, *, wall_clock: Callable[[], float]) -> None:
    """Map every non-200 answer to its error class."""
    status = response.status
    if status == 200:
        return
    if status == 429:
        retry_after = parse_retry_after(
            _header(response.headers, "Retry-After"), now=wall_clock()
        )
        raise RateLimited(f"HTTP 429: {_body_text(response)}", retry_after=retry_after)
    if status == 401:
        try:
            body = json.loads(response.body)
        except (ValueError, UnicodeDecodeError):
            body = None
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
        if "argument" in message.lower():
            raise RequestRejected(f"HTTP 401 (request rejected): {truncate(message)}", status=401)
        if "invalid credentials" in message.lower():
            raise InvalidCredentials("HTTP 401: Invalid Credentials", status=401)
        raise TokenRejected(f"HTTP 401 (token): {_body_text(response)}", status=401)
    if status in (404, 405):
        raise RequestRejected(
            f"HTTP {status}: endpoint not found, check INVOLVE_ASIA_BASE_URL", status=status
        )
    raise HTTPStatusError(f"HTTP {status}: {_body_text(response)}", status=status)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _envelope_data(response: HttpResponse, *, wall_clock: Callable[[], float]) -> Any:
    _raise_for_status(response, wall_clock=wall_clock)
    body = _decode(response)
    if not isinstance(body, dict):
        raise BadJSON(f"expected a JSON object, got {type(body).__name__}", status=response.status)
    if body.get("status") != "success":
        raise EnvelopeError(
            f"API status {body.get('status')!r}: {truncate(str(body.get('message', '')))}",
            status=response.status,
        )
    return body.get("data")


class AccountClient:
    """Talks to the API for one account: token handling and single page requests.

    Thread-safe: concurrent page requests share one token; a token rejected by the server is
    replaced once (by whichever thread sees it first) and the request repeated, without
    spending a page attempt.
    """

    def __init__(
        self,
        *,
        base_url: str,
        key: str,
        secret: str,
        http: HttpClient,
        limiter: RateLimiter,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        token_ttl: float = TOKEN_TTL,
        refresh_margin: float = TOKEN_REFRESH_MARGIN,
        on_token: Callable[[str], None] | None = None,
        on_request: Callable[[bool], None] | None = None,
        log: Any = None,
        currency: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.currency = currency or None
        """Sent as `filters[preferred_currency]` on every conversions request; None sends
        nothing (the account's local currency)."""
        self._key = key
        self._secret = secret
        self._http = http
        self._limiter = limiter
        self._clock = clock
        self._wall_clock = wall_clock
        self._token_ttl = token_ttl
        self._refresh_margin = min(refresh_margin, token_ttl / 2)
        self._on_token = on_token
        self._on_request = on_request
        self._log = log
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_generation = 0
        self._lock = threading.Lock()
        self._waits = threading.local()

    # -- transport

    def _post(self, path: str, data: Mapping[str, str], token: str | None = None) -> HttpResponse:
        waited = self._limiter.acquire()
        self._waits.seconds = getattr(self._waits, "seconds", 0.0) + waited
        if self._on_request is not None:  # every request sent; True: an authentication
            self._on_request(path == AUTHENTICATE)
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self._http.post_form(f"{self.base_url}{path}", data, headers)

    def throttle_wait(self) -> float:
        """Seconds this thread's latest `fetch_page` call waited for the account's throttle
        (every request it made, authentication included): not request time."""
        seconds: float = getattr(self._waits, "seconds", 0.0)
        return seconds

    def throttle_pace(self) -> tuple[int, float]:
        """(sends reserved at the account's throttle so far, its interval in seconds): tells
        how much of a wait for a request slot the throttle's own pace explains."""
        return self._limiter.reservations, self._limiter.interval

    # -- authentication

    def sign_in(self) -> None:
        """Authenticate now and use the new token from here on (raises like `authenticate`)."""
        with self._lock:
            self._install(self.authenticate())
            self._note("auth_ok")

    def authenticate(self) -> str:
        """Exchange key and secret for a token (raises InvalidCredentials when refused)."""
        response = self._post(AUTHENTICATE, {"key": self._key, "secret": self._secret})
        if response.status == 401:
            raise InvalidCredentials("HTTP 401: Invalid Credentials (check key and secret)",
                                     status=401)
        data = _envelope_data(response, wall_clock=self._wall_clock)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise BadJSON("authenticate: no token in the response", status=response.status)
        if self._on_token is not None:
            self._on_token(token)
        return token

    def _current_token(self) -> tuple[str, int]:
        with self._lock:
            if self._token is None or self._clock() >= self._token_expires:
                renewing = self._token is not None
                self._install(self.authenticate())
                if renewing:
                    self._note("token_refreshed", reason="expiring")
                else:
                    self._note("auth_ok")
            assert self._token is not None
            return self._token, self._token_generation

    def _install(self, token: str) -> None:
        self._token = token
        self._token_expires = self._clock() + self._token_ttl - self._refresh_margin
        self._token_generation += 1

    def _replace_token(self, generation: int) -> None:
        """The token of `generation` was rejected: re-authenticate unless another thread did."""
        with self._lock:
            if self._token_generation == generation:
                self._install(self.authenticate())
                self._note("token_refreshed", reason="rejected")

    def _note(self, event: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.info(event, **fields)

    # -- conversions

    def fetch_page(self, start: dt.date, end: dt.date, page: int, limit: int) -> Page:
        """One attempt at one page. A rejected token is renewed once and the request repeated."""
        self._waits.seconds = 0.0
        form = {
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "page": str(page),
            "limit": str(limit),
        }
        if self.currency is not None:
            form["filters[preferred_currency]"] = self.currency
        token, generation = self._current_token()
        try:
            return self._parse_page(self._post("/conversions/range", form, token), page, limit)
        except TokenRejected:
            self._replace_token(generation)
        token, _ = self._current_token()
        return self._parse_page(self._post("/conversions/range", form, token), page, limit)

    def _parse_page(self, response: HttpResponse, page: int, limit: int) -> Page:
        data = _envelope_data(response, wall_clock=self._wall_clock)
        if not isinstance(data, dict):
            raise BadJSON("conversions: `data` is not an object", status=response.status)
        records = data.get("data")
        count = data.get("count")
        if not isinstance(records, list) or not isinstance(count, int) or count < 0:
            raise BadJSON("conversions: missing `data` list or `count`", status=response.status)
        if set(map(type, records)) - {dict}:  # one C pass, not a generator per record
            raise BadJSON("conversions: a record is not an object", status=response.status)
        next_page = data.get("nextPage")
        result = Page(
            page=int(data.get("page") or page),
            limit=int(data.get("limit") or limit),
            count=count,
            next_page=next_page if isinstance(next_page, int) else None,
            records=records,
        )
        if len(records) < result.expected:
            short = ShortPage if records else EmptyPage
            raise short(
                f"page {result.page} of {result.pages} holds {len(records)} of the "
                f"{result.expected} records its answer implies (count {count}, limit {result.limit})",
                status=response.status, answer=result,
            )
        return result
