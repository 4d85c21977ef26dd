"""The one decision of a run's status and exit code: a table, one row per case of the README's
exit-code list."""

from __future__ import annotations

import pytest

from app.errors import (
    ApiUnreachable,
    ConfigError,
    InvalidCredentials,
    RequestRejected,
    StorageCredentialsError,
    StorageError,
)
from app.outcome import Outcome, Status, StopReason, UnitState, decide

F, INC, K, C, R, M = (UnitState.FETCHED, UnitState.INCOMPLETE, UnitState.KEPT, UnitState.CAPPED,
                    UnitState.REUSED, UnitState.MISSING)
S, P, X = Status.SUCCEEDED, Status.PARTIAL, Status.FAILED

ROWS = [
    # (what, unit states, stop reason, fatal error, FAIL_ON_SKIPPED_PAGES, status, exit)
    ("everything fetched", [F, F], None, None, True, S, 0),
    ("everything reused", [R, R], None, None, True, S, 0),
    ("nothing to do", [], None, None, True, S, 0),
    ("MAX_RECORDS_LIMIT: capped and unstarted days", [F, C, M], StopReason.MAX_RECORDS, None,
     True, S, 0),
    ("pages stayed skipped", [F, INC], None, None, True, P, 3),
    ("pages stayed skipped, FAIL_ON_SKIPPED_PAGES=false", [F, INC], None, None, False, P, 0),
    ("a refresh kept the older complete snapshot", [F, K], None, None, True, P, 3),
    ("MAX_RECORDS_LIMIT with pages skipped", [C, INC], StopReason.MAX_RECORDS, None, True, P, 3),
    ("SIGTERM", [F, M], StopReason.INTERRUPTED, None, True, X, 1),
    ("SIGTERM before any day was missing", [F], StopReason.INTERRUPTED, None, True, X, 1),
    ("the skip cap", [F, M], StopReason.SKIP_CAP, None, True, X, 1),
    ("a day not delivered", [F, M], None, None, True, X, 1),
    ("storage failing", [F], StopReason.FATAL, StorageError("GCS upload failed"), True, X, 1),
    ("an unreachable API", [M], StopReason.FATAL, ApiUnreachable("refused"), True, X, 1),
    ("an unexpected error", [F], None, RuntimeError("bug"), True, X, 1),
    ("bad API credentials", [], StopReason.FATAL, InvalidCredentials("401"), True, X, 2),
    ("a request the API rejects", [F], StopReason.FATAL, RequestRejected("401 args"), True, X, 2),
    ("missing storage credentials", [], None, StorageCredentialsError("none"), True, X, 2),
    ("a bad setting", [], None, ConfigError("GCS_BUCKET", "ab", "a bucket name"), True, X, 2),
]


@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_status_and_exit_code(row: tuple[object, ...]) -> None:
    """Each README exit-code case decides exactly one (status, exit code)."""
    _what, states, stop, fatal, fail_on_skipped, status, code = row
    assert decide(states, stop, fatal, fail_on_skipped=bool(fail_on_skipped)) == Outcome(  # type: ignore[arg-type]
        status, code)  # type: ignore[arg-type]
