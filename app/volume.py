"""A day's volume against its account's other days: the check `python -m app status` flags as
`low_volume` and the job logs as `day_volume_low` for each day it stores (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

VOLUME_SHARE = 0.2
"""A day under this share of the median of its reference days is a volume drop."""
VOLUME_MIN_DAYS = 7
"""No verdict with fewer complete reference days than this."""
VOLUME_LOOKBACK_DAYS = 14
"""The job checks each day it stores against the account's stored days this far back."""


def volume_drop(records: int, reference: Sequence[int]) -> float | None:
    """The median of `reference` (record counts of complete days) when `records` is under a
    fifth of it, else None; also None with fewer than 7 reference days (no verdict).

    A sudden drop usually means tracking broke upstream, and the API then honestly reports few
    conversions: the fetch is complete, the data is not."""
    if len(reference) < VOLUME_MIN_DAYS:
        return None
    median = float(statistics.median(reference))
    return median if records < median * VOLUME_SHARE else None
