"""Fault injection: deterministic rules and seeded random draws.

A request is identified by (account, endpoint, start_date, end_date, page, limit); the n-th time
the simulator sees the same identity is its attempt n. A `Fault` rule names the kind and,
optionally, which requests it hits; the first matching rule wins. Without a matching rule a
conversions request draws a random fault with probability `fault_rate`. The draw is a hash of
(seed, request identity, attempt), so it does not depend on thread timing: the same client
requests get the same faults in every run.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.simulator.dataset import as_date, unit_draw

FAULT_KINDS: tuple[str, ...] = (
    "reset",                 # RST: SO_LINGER 0 then close, no response
    "no_answer",             # read the request, send nothing, hold the socket open
    "headers_then_silence",  # 200 status line + headers with a Content-Length, then nothing
    "drip",                  # a valid response whose body trickles at N bytes/s
    "endless_body",          # 200, chunked, chunks forever, fast
    "truncated",             # Content-Length larger than the bytes sent, then close
    "malformed_json",        # 200, body is not JSON
    "http_500",              # HTML error page, like a proxy's
    "http_502",
    "http_503",
    "rate_limit",            # 429 with Retry-After
    "rate_limit_no_header",  # 429 without Retry-After
    "envelope_error",        # HTTP 200 with {"status":"error",...}
    "token_revoked",         # revoke the account's tokens, then 401 like a bad token
    "empty_page",            # 200, right envelope and count, data [] (any page, the last included)
    "short_page",            # 200, right count, part of the page's records; params {"keep": fraction}
    "zero_count",            # 200, count 0, data [], nextPage null: a day the API denies
    "latency",               # params {"seconds": x}: delay, then the normal answer
    "insert",                # params {"count": n}: insert n records into the day, then serve
    "huge_error_body",       # 500 with a ~5 MB HTML body
)
"""Every fault kind the simulator implements."""

DEFAULT_RANDOM_FAULTS: tuple[str, ...] = (
    "reset", "truncated", "malformed_json", "http_500", "http_502", "http_503",
    "rate_limit", "envelope_error", "empty_page",
)
"""The kinds random faults draw from by default: transient, each over within a few seconds."""

LYING_FAULTS: tuple[str, ...] = ("empty_page", "short_page", "zero_count")
"""Answers that parse and say `success` but hold less than the API has: the job must not take
them for complete. `DEFAULT_RANDOM_FAULTS` has only `empty_page`; the demo and the benchmarks
draw all three."""

ENDPOINTS: tuple[str, ...] = ("range", "data-range", "authenticate")
"""Endpoint names used by rules, attempts and the ledger."""

SILENT_KINDS = frozenset({"no_answer", "headers_then_silence"})
"""Kinds that hold the socket silent until `hang_seconds` pass or the simulator stops."""


@dataclass(frozen=True)
class Fault:
    """One fault rule. Every field but `kind` narrows which requests it hits (None = any).

    `date` hits requests whose start_date..end_date contains that day; `attempts` are 1-based
    attempt numbers of that exact request; `params` tune the kind: `seconds` (latency),
    `count` (insert), `retry_after` (rate_limit), `bytes_per_second` (drip), `keep` (short_page:
    the fraction of the page's records sent, default 0.4, rounded down).
    """

    kind: str
    account: str | None = None
    date: dt.date | str | None = None
    page: int | None = None
    attempts: Collection[int] | None = None
    endpoint: str = "range"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; expected one of {ENDPOINTS}")
        if self.date is not None:
            object.__setattr__(self, "date", as_date(self.date))
        if self.attempts is not None:
            object.__setattr__(self, "attempts", frozenset(self.attempts))
        object.__setattr__(self, "params", dict(self.params))

    @property
    def day(self) -> dt.date | None:
        """The rule's day as a date (normalised in `__post_init__`)."""
        return self.date if isinstance(self.date, dt.date) else None

    def matches(self, request: RequestIdentity, attempt: int) -> bool:
        """Whether this rule hits the `attempt`-th sighting of `request`."""
        if self.endpoint != request.endpoint:
            return False
        if self.account is not None and self.account != request.account:
            return False
        if self.page is not None and self.page != request.page:
            return False
        if self.attempts is not None and attempt not in self.attempts:
            return False
        day = self.day
        if day is None:
            return True
        return (request.first_day is not None and request.last_day is not None
                and request.first_day <= day <= request.last_day)


@dataclass(frozen=True)
class RequestIdentity:
    """What makes two requests "the same request" for attempt counting and rule matching.

    `start` / `end` / `page` / `limit` are as sent (page and limit as ints when they parse);
    `first_day` / `last_day` are the range's days when the bounds parse.
    """

    endpoint: str
    account: str | None
    start: str | None = None
    end: str | None = None
    page: int | str | None = None
    limit: int | str | None = None
    first_day: dt.date | None = field(default=None, compare=False)
    last_day: dt.date | None = field(default=None, compare=False)


class FaultBook:
    """The rules, the attempt counters and the random draw, shared by all handler threads."""

    def __init__(self, seed: int, rate: float, kinds: Sequence[str]) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault_rate must be in 0..1, got {rate}")
        unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; expected some of {FAULT_KINDS}")
        if rate > 0 and not kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self._seed = seed
        self._rate = rate
        self._kinds = tuple(kinds)
        self._rules: list[Fault] = []
        self._attempts: Counter[RequestIdentity] = Counter()
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        """Add a deterministic rule (after the existing ones)."""
        with self._lock:
            self._rules.append(fault)

    def clear(self) -> None:
        """Drop every rule (attempt counters keep counting)."""
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[Fault]:
        """The current rules, in match order."""
        with self._lock:
            return list(self._rules)

    def next_attempt(self, request: RequestIdentity) -> int:
        """Count one more sighting of `request`; return its 1-based attempt number."""
        with self._lock:
            self._attempts[request] += 1
            return self._attempts[request]

    def choose(self, request: RequestIdentity, attempt: int) -> Fault | None:
        """The fault for this attempt: the first matching rule, else a seeded random draw."""
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            if rule.matches(request, attempt):
                return rule
        if request.endpoint == "authenticate" or self._rate <= 0.0:
            return None
        identity = (request.account, request.endpoint, request.start, request.end,
                    request.page, request.limit, attempt)
        if unit_draw(self._seed, "fault", *identity) >= self._rate:
            return None
        pick = int(unit_draw(self._seed, "kind", *identity) * len(self._kinds))
        return Fault(kind=self._kinds[pick], account=request.account,
                     page=request.page if isinstance(request.page, int) else None,
                     attempts={attempt}, endpoint=request.endpoint)
