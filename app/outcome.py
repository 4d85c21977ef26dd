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


class Disposition(enum.StrEnum):
    """What becomes of one fetched (account, day): decided by `settle`, nowhere else."""

    HOLD = "hold"
    """Pages stayed skipped in the main pass: fetch them again in the second pass first."""
    DROP = "drop"
    """Cut short (SIGTERM, the skip cap, a fatal error): nothing of it is kept."""
    REREAD = "reread"
    """A complete fetch lacks records of the complete snapshot it would replace: read the day
    once more before believing it."""
    STORE = "store"
    """Becomes the day's snapshot if it ranks above the one there (complete or not)."""
    KEEP = "keep"
    """The complete snapshot there stays and is served; `Verdict.reason` says why."""


class KeepReason(enum.StrEnum):
    INCOMPLETE = "incomplete"
    """The fetch stayed incomplete (pages skipped, short, capped)."""
    SHRANK = "shrank"
    """The fetch, read twice, still lacks records of the stored snapshot."""


@dataclass(frozen=True)
class DayFetch:
    """How the fetch of one day ended, as `settle` needs it."""

    interrupted: bool = False
    skipped: bool = False
    """Pages still skipped (after the second pass, once `second_pass_done`)."""
    capped: bool = False
    """MAX_RECORDS_LIMIT cut it short."""
    records: int = 0
    """Records after dedupe."""
    count: int | None = None
    """The `count` of the day's last answer (None: no page answered)."""
    second_pass_done: bool = False
    read_again: bool = False
    """This is the day's second read, after a REREAD."""
    stop_reason: StopReason | None = None

    @property
    def short(self) -> bool:
        """Fewer records than the last answer's `count`: the API said more than it gave."""
        return self.count is not None and self.records < self.count

    @property
    def complete(self) -> bool:
        return not (self.interrupted or self.skipped or self.capped or self.short)


@dataclass(frozen=True)
class StoredDay:
    """The day's snapshot as the store has it when the fetch is settled."""

    complete: bool
    ranks_higher: bool
    """It ranks at or above this fetch (complete beats incomplete, then the later fetch)."""
    missing: int = 0
    """Its records absent from this fetch (counted only when this fetch would replace it)."""


@dataclass(frozen=True)
class Verdict:
    disposition: Disposition
    reason: KeepReason | None = None


def settle(day: DayFetch, stored: StoredDay | None = None, *,  # noqa: PLR0911 - one row, one return
           allow_shrink: bool = False) -> Verdict:
    """The one decision of what becomes of a fetched day (the contract, "What complete means"):

    - cut short and not by MAX_RECORDS_LIMIT: drop it;
    - pages skipped in the main pass (not capped): hold it for the second pass;
    - incomplete (skipped, short, capped) over a complete snapshot: keep the snapshot;
    - complete, but lacking records of the complete snapshot it would replace: read it again;
      still lacking them: keep the snapshot (`shrank`), unless ALLOW_SNAPSHOT_SHRINK;
    - otherwise store it (the store replaces the snapshot only if the fetch ranks higher).
    """
    capped_run = day.stop_reason is StopReason.MAX_RECORDS
    if day.interrupted and not (day.capped or capped_run):
        return Verdict(Disposition.DROP)
    if day.skipped and not day.second_pass_done and not day.interrupted and not capped_run:
        return Verdict(Disposition.HOLD)
    if stored is None or not stored.complete:
        return Verdict(Disposition.STORE)
    if not day.complete:
        return Verdict(Disposition.KEEP, KeepReason.INCOMPLETE)
    if stored.missing and not stored.ranks_higher and not allow_shrink:
        if not day.read_again:
            return Verdict(Disposition.REREAD)
        return Verdict(Disposition.KEEP, KeepReason.SHRANK)
    return Verdict(Disposition.STORE)


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

