"""Redaction: the one place that knows what a secret looks like.

`redact_text` removes the secrets registered at start-up (and their URL-encoded forms) and
anything shaped like a credential: Authorization values, bearer tokens, JWTs, credential query
parameters and form fields (`secret=`, `token=`, `key=`, `signature=`, `upload_id=`, ...) and
JSON fields (`"token": "..."`). `is_secret_name` tells which field names hold a secret whatever
their value. The log pipeline and the sinks both call these; nothing else redacts.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 4
"""Shorter values are not registered: blanking every "abc" would garble ordinary text."""

_SECRET_NAME = re.compile(
    r"(?i)^(.*[_-])?(secret|token|password|passwd|authorization|api[_-]?key|cookie|credentials?)$"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header in any spelling: "Authorization: Bearer x", "'Authorization': 'x'"
    (
        re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token|jwt)\s+)?"
            r"[^\s\"',;{}\[\]]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # a bearer token anywhere else
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/-]+=*"), r"\1 " + REDACTED),
    # a JWT anywhere (the API's tokens are JWTs)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # query strings and form bodies: secret=..., api_key=..., X-Goog-Signature=..., upload_id=...
    # (at most three name parts before the keyword keeps the scan linear on odd text)
    (
        re.compile(
            r"(?i)\b((?:[a-z0-9]+[_-]){0,3}"
            r"(?:secret|token|password|passwd|key|apikey|signature|credential|upload_id))"
            r"=[^&\s\"']+"
        ),
        r"\1=" + REDACTED,
    ),
    # JSON text: "token": "...", "secret": "...", "api_key": "..."
    (
        re.compile(
            r"(?i)([\"'](?:(?:api_|client_|access_|refresh_)?(?:secret|token|password)|api_?key)"
            r"[\"']\s*:\s*[\"'])[^\"']*"
        ),
        r"\1" + REDACTED,
    ),
)

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Redact `value` (and its URL-encoded forms) everywhere from now on; < 4 chars is ignored."""
    global _secret_pattern
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        return
    forms = {value, quote_plus(value), quote(value, safe="")}
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        longest_first = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in longest_first))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secret_pattern
    with _lock:
        _secrets.clear()
        _secret_pattern = None


def redact_text(text: str) -> str:
    """`text` with registered secrets and credential-shaped substrings replaced by REDACTED."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def is_secret_name(name: str) -> bool:
    """Whether a field called `name` (token, api_secret, Authorization, ...) holds a secret."""
    return _SECRET_NAME.match(name) is not None
