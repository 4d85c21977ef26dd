"""The ledger: every request the simulator saw, what it answered and which records it served."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class LedgerEntry:
    """One request and its outcome.

    `outcome` is what the client got: "ok", a fault kind, or "rate_limited", "unauthorized",
    "invalid_credentials", "validation", "not_found". `fault` names the fault that fired even
    when the answer stayed normal ("latency", "insert"). `status` is None when no status line was
    sent. `ids` are the conversion ids in the body. `token` is the bearer token presented (for
    authenticate: the token issued). Times come from the simulator's clock; `finished` is when
    the simulator committed to the answer, just before sending any of it, so the entry is in
    the ledger before the client sees a byte (silence, drip and endless faults included).
    `form` is the request's form for the conversions endpoints (empty for authenticate, whose
    form holds the secret); `preferred_currency` is its `filters[preferred_currency]` as sent
    (None when absent, "" when empty).
    """

    endpoint: str
    account: str | None
    start_date: str | None
    end_date: str | None
    page: int | None
    limit: int | None
    attempt: int
    status: int | None
    outcome: str
    ids: tuple[int, ...]
    token: str | None
    started: float
    finished: float
    fault: str | None = None
    form: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    preferred_currency: str | None = None


class Ledger:
    """Thread-safe, append-only list of `LedgerEntry`."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []
        self._lock = threading.Lock()

    def append(self, entry: LedgerEntry) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[LedgerEntry]:
        """A copy of every entry so far, in the order they were recorded."""
        with self._lock:
            return list(self._entries)

    @property
    def entries(self) -> list[LedgerEntry]:
        """Same as `snapshot()`."""
        return self.snapshot()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def outcomes(self, endpoint: str | None = None) -> Counter[str]:
        """How many requests ended in each outcome (for one endpoint, or all)."""
        return Counter(entry.outcome for entry in self.snapshot()
                       if endpoint is None or entry.endpoint == endpoint)

    def served_ids(self, account: str | None = None) -> set[int]:
        """Every id served in a complete, successful page (outcome "ok")."""
        return {i for entry in self.snapshot()
                if entry.outcome == "ok" and (account is None or entry.account == account)
                for i in entry.ids}
