"""How a run ended: the states of its units, why it stopped, and the one function that turns
them into the run's status and exit code.

Exit codes (the contract): 0 all data fetched and written · 1 failed, a retry may help ·
2 bad configuration or credentials, a retry will not help · 3 finished but pages stayed
skipped (FAIL_ON_SKIPPED_PAGES=true). Nothing else in the job decides either.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import ConfigError, FatalFetchError, StorageCredentialsError


class UnitState(enum.StrEnum):
    """What became of one (account, day) in this run."""

    FETCHED = "fetched"
    """Every page read: a complete snapshot."""
    INCOMPLETE = "incomplete"
    """Pages stayed skipped after the second pass; stored marked incomplete (no complete
    snapshot existed to keep)."""
    KEPT = "kept"
    """The refresh stayed incomplete; the older complete snapshot was kept and served."""
    CAPPED = "capped"
    """MAX_RECORDS_LIMIT cut it short; stored marked incomplete."""
    REUSED = "reused"
    """A fresh complete snapshot served as it was: nothing fetched."""
    MISSING = "missing"
    """Not delivered: never started or cut short (SIGTERM, the skip cap, a fatal error)."""


class StopReason(enum.StrEnum):
    """Why a run stopped before the end of its plan (None: it did not)."""

    MAX_RECORDS = "max_records"
    SKIP_CAP = "skip_cap"
    INTERRUPTED = "interrupted"
    FATAL = "fatal"


class Status(enum.StrEnum):
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


EXIT_OK = 0
EXIT_RETRY = 1
EXIT_CONFIG = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130
"""Stopped by SIGINT (Ctrl-C): 128 + the signal's number, as shells report it. The run itself
ends as after SIGTERM (`failed`, `interrupted`); the runner, which knows the signal, sets it."""


@dataclass(frozen=True)
class Outcome:
    status: Status
    exit_code: int


def is_config_error(error: BaseException) -> bool:
    """Bad settings or credentials (the API's or storage's): a retry will not help."""
    return isinstance(error, ConfigError | FatalFetchError | StorageCredentialsError)


def decide(
    units: Iterable[UnitState],
    stop_reason: StopReason | None,
    fatal: BaseException | None,
    *,
    fail_on_skipped: bool,
) -> Outcome:
    """The run's status and exit code, from what became of its units and why it stopped.

    - a fatal error: failed; exit 2 when it is configuration or credentials, else 1;
    - stopped by SIGTERM or the skip cap, or a unit not delivered: failed, exit 1 (units
      never started because MAX_RECORDS_LIMIT was reached do not count as missing);
    - pages still skipped (a day incomplete, or kept from an older snapshot): partial, exit 3
      (0 with FAIL_ON_SKIPPED_PAGES=false);
    - otherwise succeeded, exit 0 (MAX_RECORDS_LIMIT included: its days are capped).
    """
    if fatal is not None:
        return Outcome(Status.FAILED, EXIT_CONFIG if is_config_error(fatal) else EXIT_RETRY)
    states = set(units)
    if stop_reason in (StopReason.INTERRUPTED, StopReason.SKIP_CAP, StopReason.FATAL):
        return Outcome(Status.FAILED, EXIT_RETRY)
    if UnitState.MISSING in states and stop_reason is not StopReason.MAX_RECORDS:
        return Outcome(Status.FAILED, EXIT_RETRY)
    if states & {UnitState.INCOMPLETE, UnitState.KEPT}:
        return Outcome(Status.PARTIAL, EXIT_SKIPPED if fail_on_skipped else EXIT_OK)
    return Outcome(Status.SUCCEEDED, EXIT_OK)

