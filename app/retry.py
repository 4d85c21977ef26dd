"""Retry policy: how many attempts a page gets and how long to wait before each retry.

Pure: no I/O, no sleeping. The caller owns the clock and the sleep; this module only answers
"may I try again?" and "how long do I wait first?".
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.errors import FetchError, RateLimited

MAX_RETRY_AFTER = 300.0
"""A server's Retry-After is honoured up to this many seconds; anything longer is clamped, once,
by `parse_retry_after` (the only way a `RateLimited` gets its `retry_after`)."""


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    `now` is the wall-clock time (epoch seconds) used for HTTP dates.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass
class RetryPolicy:
    """`max_retries` retries after the first try, waiting `backoff[n-1]` (+ jitter) before retry n.

    The last backoff value repeats. A 429 waits the server's Retry-After (as clamped by
    `parse_retry_after`) when it sent one,
    otherwise `rate_limit_delay`. Jitter adds up to `jitter` x the wait, so that concurrent
    clients do not retry in lock-step.
    """

    max_retries: int = 5
    backoff: Sequence[float] = (10.0, 20.0, 30.0, 40.0, 60.0)
    rate_limit_delay: float = 30.0
    jitter: float = 0.1
    random: Callable[[], float] = field(default=random.random, repr=False)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def should_retry(self, attempt: int, error: FetchError) -> bool:
        """After failed attempt number `attempt` (1-based), is there another try?"""
        return error.retryable and attempt < self.max_attempts

    def wait_before_retry(self, retry: int, error: FetchError) -> float:
        """Seconds to wait before retry number `retry` (1-based) after `error`."""
        if isinstance(error, RateLimited):
            if error.retry_after is not None:
                return error.retry_after
            return self.rate_limit_delay
        base = self.backoff[min(retry, len(self.backoff)) - 1] if self.backoff else 0.0
        return base * (1.0 + self.jitter * self.random())
