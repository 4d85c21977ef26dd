"""The Involve Asia publisher API: authentication, one page request, and the seed's facade.

`AccountClient` turns one HTTP exchange into a `Page` or a typed error from `app.errors`: this
is the only module that knows how the API's answers (and its lying error bodies) look.
`InvolveAsiaAPI` keeps the seed script's public methods for callers that used it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import (
    BadJSON,
    EmptyPage,
    EnvelopeError,
    FetchError,
    HTTPStatusError,
    InvalidCredentials,
    RateLimited,
    RequestRejected,
    TokenRejected,
    truncate,
)
from app.http import HttpClient, HttpResponse
from app.ratelimit import RateLimiter
from app.retry import parse_retry_after

TOKEN_TTL = 7200.0
"""Tokens live about two hours."""
TOKEN_REFRESH_MARGIN = 600.0
"""Re-authenticate this long before the token's expected expiry."""


@dataclass(frozen=True)
class Page:
    """One page of `/conversions/range` as the API returned it."""

    page: int
    limit: int
    count: int
    next_page: int | None
    records: list[dict[str, Any]]

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.count / self.limit)) if self.limit else 1


_DIGIT_MASK = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19
"""Every integer outside orjson's 64-bit range has 19 digits or more."""


def _loads(body: bytes) -> Any:
    """Parse a response body: orjson when it is exact, the standard library otherwise.

    orjson parses a page in less than half the time, but turns an integer past 64 bits into a
    float. So a body holding a run of 19 or more digits (the only way to write such an
    integer; long digit strings trigger it too, harmlessly) goes to the standard library, as
    does anything orjson refuses that the standard library reads (NaN, lone surrogates).
    """
    if _LONG_NUMBER not in body.translate(_DIGIT_MASK):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _decode(response: HttpResponse) -> Any:
    try:
        return _loads(response.body)
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
        on_request: Callable[[], None] | None = None,
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
        self.token_refreshes = 0

    # -- transport

    def _post(self, path: str, data: Mapping[str, str], token: str | None = None) -> HttpResponse:
        waited = self._limiter.acquire()
        self._waits.seconds = getattr(self._waits, "seconds", 0.0) + waited
        if self._on_request is not None:
            self._on_request()
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self._http.post_form(f"{self.base_url}{path}", data, headers)

    def throttle_wait(self) -> float:
        """Seconds this thread's latest `fetch_page` call waited for the account's throttle
        (every request it made, authentication included): not request time."""
        seconds: float = getattr(self._waits, "seconds", 0.0)
        return seconds

    # -- authentication

    def sign_in(self) -> None:
        """Authenticate now and use the new token from here on (raises like `authenticate`)."""
        with self._lock:
            renewing = self._token is not None
            self._install(self.authenticate())
            if renewing:
                self.token_refreshes += 1
            self._note("auth_ok")

    def authenticate(self) -> str:
        """Exchange key and secret for a token (raises InvalidCredentials when refused)."""
        response = self._post("/authenticate", {"key": self._key, "secret": self._secret})
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
                    self.token_refreshes += 1
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
                self.token_refreshes += 1
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
        if not records and page < result.pages:
            raise EmptyPage(
                f"page {page} of {result.pages} came back empty (count {count})",
                status=response.status,
            )
        return result


class InvolveAsiaAPI:
    """The seed script's interface, kept for callers that used it.

    `get_conversions` collects everything in memory as the seed did (use `iter_conversions`
    to stream); both run the same fetch loop as the job, with its deadlines and retries.
    """

    def __init__(self, settings: Any | None = None, *, sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import os

        from app.config import load_settings  # the facade may be built without a job around it

        self.settings = settings if settings is not None else load_settings(os.environ)
        self._sleep = sleep or time.sleep
        self._clock = clock or time.monotonic
        self.account = self.settings.accounts[0]
        self.http = HttpClient(timeout=self.settings.request_timeout, clock=self._clock)
        self.limiter = RateLimiter(
            per_minute=self.settings.requests_per_minute,
            min_interval=self.settings.request_delay,
            clock=self._clock,
            sleep=self._sleep,
        )
        self.client = AccountClient(
            base_url=self.settings.base_url, key=self.account.key, secret=self.account.secret,
            http=self.http, limiter=self.limiter, clock=self._clock,
        )
        self.skipped_pages: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}

    def authenticate(self) -> bool:
        try:
            self.client._install(self.client.authenticate())
        except FetchError:
            return False
        return True

    def iter_conversions(self, start_date: str | dt.date, end_date: str | dt.date
                         ) -> Iterator[dict[str, Any]]:
        from app.pager import Pager, RunState
        from app.retry import RetryPolicy

        start = dt.date.fromisoformat(str(start_date))
        end = dt.date.fromisoformat(str(end_date))
        state = RunState(max_skipped_pages=self.settings.max_skipped_pages)
        pager = Pager(
            client=self.client,
            policy=RetryPolicy(max_retries=self.settings.max_retry_attempts,
                               backoff=self.settings.retry_backoff,
                               rate_limit_delay=self.settings.rate_limit_delay),
            state=state, sleep=self._sleep, clock=self._clock,
            page_limit=self.settings.page_limit, concurrency=1,
            account=self.account.name,
        )
        seen: set[object] = set()

        def fresh(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for record in records:
                key = record.get("conversion_id")
                if key is None or key not in seen:
                    seen.add(key)
                    yield record

        skipped: dict[dt.date, list[int]] = {}
        day = start
        while day <= end and not state.stopped:
            run = pager.unit(day)
            for item in run:
                if isinstance(item, Page):
                    yield from fresh(item.records)
            if run.outcome is not None and run.outcome.skipped:
                skipped[day] = run.outcome.skipped
            day += dt.timedelta(days=1)
        for skipped_day, pages in skipped.items():
            if state.stopped:
                break
            for item in pager.retry(skipped_day, pages):
                if isinstance(item, Page):
                    yield from fresh(item.records)
        self.skipped_pages = [s.as_dict() for s in state.skipped]
        self.stats = state.as_dict()

    def get_conversions(self, start_date: str | dt.date, end_date: str | dt.date
                        ) -> dict[str, Any]:
        data = [dict(r) for r in self.iter_conversions(start_date, end_date)]
        return {
            "data": data,
            "total_records": len(data),
            "pages": self.stats.get("pages", 0),
            "skipped_pages": list(self.skipped_pages),
        }

    def get_conversions_default_range(self) -> dict[str, Any]:
        return self.get_conversions(self.settings.start_date, self.settings.end_date)

    def get_skipped_pages_summary(self) -> str:
        from app.reports import render_skip_report

        return render_skip_report(self.skipped_pages, self.settings.log_language)

    def print_final_summary(self) -> None:
        from app.reports import render_final_summary

        print(render_final_summary({
            "status": "partial" if self.skipped_pages else "succeeded",
            "start_date": self.settings.start_date.isoformat(),
            "end_date": self.settings.end_date.isoformat(),
            "accounts": [self.account.name],
            "skipped_pages": self.skipped_pages,
            **self.stats,
        }, self.settings.log_language))
