"""The retry policy: attempts, the seed's back-off schedule, jitter, Retry-After."""

from __future__ import annotations

import email.utils

from app.errors import BadJSON, InvalidCredentials, RateLimited, RequestTimeout
from app.retry import MAX_RETRY_AFTER, RetryPolicy, parse_retry_after


def test_backoff_follows_the_seed_schedule_and_repeats_the_last_wait() -> None:
    """Waits are 10, 20, 30, 40, 60 s and then 60 s again, without jitter."""
    policy = RetryPolicy(max_retries=7, jitter=0.0)
    waits = [policy.wait_before_retry(n, RequestTimeout("t")) for n in range(1, 8)]
    assert waits == [10, 20, 30, 40, 60, 60, 60]


def test_jitter_adds_at_most_its_fraction() -> None:
    """Jitter stretches a wait by up to `jitter` x the wait, never shortens it."""
    policy = RetryPolicy(jitter=0.1, random=lambda: 1.0)
    assert policy.wait_before_retry(1, BadJSON("x")) == 11.0
    policy = RetryPolicy(jitter=0.1, random=lambda: 0.0)
    assert policy.wait_before_retry(1, BadJSON("x")) == 10.0


def test_five_retries_means_six_attempts() -> None:
    """MAX_RETRY_ATTEMPTS=5 retries after the first try: attempt 6 is the last."""
    policy = RetryPolicy(max_retries=5)
    error = RequestTimeout("t")
    assert [policy.should_retry(n, error) for n in range(1, 7)] == [True] * 5 + [False]


def test_fatal_errors_are_never_retried() -> None:
    """Bad credentials are not retried, whatever the budget."""
    assert not RetryPolicy().should_retry(1, InvalidCredentials("no"))


def test_rate_limit_uses_retry_after_or_the_configured_delay() -> None:
    """A 429 waits the server's Retry-After, else RATE_LIMIT_DELAY; no jitter on either."""
    policy = RetryPolicy(rate_limit_delay=30.0, random=lambda: 1.0)
    assert policy.wait_before_retry(1, RateLimited("429", retry_after=3.0)) == 3.0
    assert policy.wait_before_retry(4, RateLimited("429")) == 30.0


def test_retry_after_parses_seconds_and_http_dates_and_clamps() -> None:
    """Retry-After may be delta-seconds or an HTTP date; huge or negative values are clamped."""
    now = 1_700_000_000.0
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now=now) == 12.0
    assert parse_retry_after("999999", now=now) == MAX_RETRY_AFTER
    assert parse_retry_after("-5", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_retry_after_is_clamped_once_where_it_is_parsed() -> None:
    """A server's huge Retry-After is clamped where the header is read, and the policy waits
    exactly what the error carries."""
    clamped = parse_retry_after("999999", now=0.0)
    policy = RetryPolicy(random=lambda: 1.0)
    assert policy.wait_before_retry(1, RateLimited("429", retry_after=clamped)) == MAX_RETRY_AFTER
