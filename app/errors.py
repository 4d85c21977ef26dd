"""The job's error tree: every failure is sorted once, here, into a class that says
whether a retry can help and which summary bucket it counts in.

    JobError
    ├── FetchError                 one API request went wrong
    │   ├── RetryableFetchError    a later attempt may succeed
    │   │   ├── RequestTimeout         "timeout"      deadline passed (connect, silence, drip, endless body)
    │   │   ├── NetworkError           "network"      reset, truncated body, oversized body
    │   │   │   └── ConnectFailed          "network"      refused, DNS, unreachable: no connection made
    │   │   ├── HTTPStatusError        "http_status"  5xx and other unexpected statuses
    │   │   ├── RateLimited            "rate_limited" 429, with the server's Retry-After if any
    │   │   ├── BadJSON                "json_decode"  body is not the JSON we expect
    │   │   ├── EnvelopeError          "api_error"    HTTP 200 with "status": "error"
    │   │   ├── EmptyPage              "empty_page"   a page with none of the records its answer implies
    │   │   ├── ShortPage              "short_page"   a page with some, not all, of them
    │   │   └── TokenRejected          "token"        401 for a bad/expired token: re-authenticate once
    │   ├── RequestInterrupted     "interrupted"  cut short by SIGTERM (abort): not a skip, not a retry
    │   └── FatalFetchError        retrying cannot help
    │       ├── InvalidCredentials     "auth"         key/secret refused
    │       └── RequestRejected        "validation"   401 "Incorrect arguments": a bug in our request
    ├── ConfigError                bad settings (exit 2)
    ├── StorageError               the sink failed permanently (exit 1)
    │   ├── StorageCredentialsError    "config": no credentials/project for the client (exit 2)
    │   │   └── StorageConfigError         "config": the bucket is missing or refuses the job (exit 2)
    │   └── AlreadyExists              a create-only write found the object there
    └── ApiUnreachable             an account never reached the API: connection-level failures only (exit 1)

Only this module and the modules that raise these know how a low-level failure maps to a class:
`http.py` (transport: deadlines, connections, aborts), `api.py` (the API's answers) and
`app/sinks/` (storage); everyone else catches these classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.models import Page

MAX_DETAIL_CHARS = 300
"""Error bodies and texts are cut to this many characters before they reach a message or a log."""


def truncate(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Collapse whitespace and cut `text` so a 5 MB HTML page never becomes a log entry."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}… ({len(flat) - limit} more chars)"


class JobError(Exception):
    """Base of every error the job raises on purpose."""

    error_class = "other"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(truncate(message, 1000))


class FetchError(JobError):
    """One API request failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableFetchError(FetchError):
    retryable = True


class RequestTimeout(RetryableFetchError):
    error_class = "timeout"


class NetworkError(RetryableFetchError):
    error_class = "network"


class ConnectFailed(NetworkError):
    """No connection could be made (refused, DNS failure, host or network unreachable)."""


class HTTPStatusError(RetryableFetchError):
    error_class = "http_status"


class RateLimited(RetryableFetchError):
    error_class = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after
        """Seconds the server asked for, as `app.retry.parse_retry_after` clamped them."""


class BadJSON(RetryableFetchError):
    error_class = "json_decode"


class EnvelopeError(RetryableFetchError):
    error_class = "api_error"


class EmptyPage(RetryableFetchError):
    """A page answer (HTTP 200, valid envelope) holding fewer records than its own `count` and
    `limit` say its place holds: none of them. `answer` is the page as it came (its records
    are kept if every attempt stays short)."""

    error_class = "empty_page"

    def __init__(self, message: str, *, status: int | None = None, answer: Page | None = None
                 ) -> None:
        super().__init__(message, status=status)
        self.answer = answer


class ShortPage(EmptyPage):
    """Like `EmptyPage`, with some of the records."""

    error_class = "short_page"


class TokenRejected(RetryableFetchError):
    error_class = "token"


class RequestInterrupted(FetchError):
    """The request was cut short, or never sent, because the job is stopping (SIGTERM).

    Not a failure of the API: it is neither retried, nor counted as a retry, nor skipped."""

    error_class = "interrupted"
    retryable = False


class FatalFetchError(FetchError):
    retryable = False


class InvalidCredentials(FatalFetchError):
    error_class = "auth"


class RequestRejected(FatalFetchError):
    error_class = "validation"


class ConfigError(JobError):
    """A setting is missing or invalid; names the variable, the value (None: not set) and what
    is expected, and `problem`: what is wrong, when that says more than the expectation does."""

    error_class = "config"

    def __init__(self, variable: str, value: object, expected: str, *,
                 problem: str | None = None) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        self.problem = problem
        if value is None:
            text = f"{variable} is not set: expected {expected}"
        else:
            text = f"{variable}={value!r}: {problem or f'expected {expected}'}"
        super().__init__(text)


class StorageError(JobError):
    """Writing or reading the output failed after the storage client's own retries.

    `status` is the HTTP status of storage's last answer, when there was one."""

    error_class = "storage"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StorageCredentialsError(StorageError):
    """No usable credentials or project for the storage client: bad configuration, a retry
    will not help (exit 2)."""

    error_class = "config"


class StorageConfigError(StorageCredentialsError):
    """The start-up probe found GCS_BUCKET unusable: the bucket does not exist, or storage
    refuses the job (401/403). Configuration, a retry will not help (exit 2)."""


class AlreadyExists(StorageError):
    """A create-only write found the object already there (another task or attempt wrote it)."""

    error_class = "exists"


class ApiUnreachable(JobError):
    """An account has had no successful request and its requests keep failing at the
    connection level: the API (or the way to it) is down. The run ends at once with exit 1, so
    Cloud Run retries it later in a fresh container, instead of skipping page after page."""

    error_class = "network"

