"""Simulated accounts and their bearer tokens (JWT-looking, random, with a TTL)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from app.simulator.currency import check_local


@dataclass(frozen=True)
class SimAccount:
    """One API account: a display name, the key/secret pair that authenticates it, and the
    local currency its conversions are kept in (one of `LOCAL_CURRENCIES`; not USD by
    default, so a test can tell whether amounts were converted)."""

    name: str = "default"
    key: str = "general"
    secret: str = "demo-secret"  # noqa: S105 - made-up default for local runs
    currency: str = "MYR"

    def __post_init__(self) -> None:
        check_local(self.currency)


TokenState = str
""""ok", "missing", "malformed", "unknown", "expired" or "revoked"."""


@dataclass
class _Token:
    account: str
    expires: float
    revoked: bool = False


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class TokenStore:
    """Issues tokens, knows which account each belongs to, expires and revokes them."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        if ttl <= 0:
            raise ValueError(f"token_ttl must be > 0 seconds, got {ttl}")
        self._ttl = ttl
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._issued: list[str] = []
        self._lock = threading.Lock()

    def issue(self, account: str) -> str:
        """A new random token for `account`, valid for the TTL from now."""
        header = _b64url(b'{"typ":"JWT","alg":"HS256"}')
        claims = {"iss": "involve-asia-simulator", "jti": secrets.token_hex(12)}
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{header}.{payload}.{_b64url(secrets.token_bytes(32))}"
        with self._lock:
            self._tokens[token] = _Token(account=account, expires=self._clock() + self._ttl)
            self._issued.append(token)
        return token

    def lookup(self, token: str | None) -> tuple[TokenState, str | None]:
        """(state, account the token was issued to, if it ever was)."""
        if not token:
            return "missing", None
        if token.count(".") != 2:
            return "malformed", None
        with self._lock:
            found = self._tokens.get(token)
            if found is None:
                return "unknown", None
            if found.revoked:
                return "revoked", found.account
            if self._clock() >= found.expires:
                return "expired", found.account
            return "ok", found.account

    def revoke(self, account: str | None = None) -> int:
        """Invalidate every token issued so far (for one account, or all); return how many."""
        count = 0
        with self._lock:
            for token in self._tokens.values():
                if (account is None or token.account == account) and not token.revoked:
                    token.revoked = True
                    count += 1
        return count

    @property
    def issued(self) -> list[str]:
        """Every token ever issued, oldest first."""
        with self._lock:
            return list(self._issued)
