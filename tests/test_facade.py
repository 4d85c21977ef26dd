"""The seed's public interface, kept: InvolveAsiaAPI on the new fetch loop."""

from __future__ import annotations

import datetime as dt

import pytest

from app.config import load_settings
from app.involve_asia import InvolveAsiaAPI
from app.simulator import Fault

FAST = {"RETRY_BACKOFF": "10,20,30,40,60", "REQUEST_DELAY": "0", "REQUESTS_PER_MINUTE": "100000",
        "REQUEST_TIMEOUT": "2"}


@pytest.mark.timeout(60)
def test_seed_methods_return_the_old_shapes(make_simulator) -> None:  # type: ignore[no-untyped-def]
    """authenticate() -> bool; get_conversions() -> dict with data, total_records, pages,
    skipped_pages; a dead page shows in get_skipped_pages_summary(); waits are injected."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_500", date="2025-05-02", page=2))
    settings = load_settings({"INVOLVE_ASIA_BASE_URL": sim.base_url,
                              "INVOLVE_ASIA_API_SECRET": "demo-secret", "LOG_LANGUAGE": "en",
                              "START_DATE": "2025-05-01", "END_DATE": "2025-05-02", **FAST})
    sleeps: list[float] = []
    api = InvolveAsiaAPI(settings, sleep=sleeps.append)
    assert api.authenticate() is True
    result = api.get_conversions("2025-05-01", "2025-05-02")
    assert set(result) == {"data", "total_records", "pages", "skipped_pages"}
    assert result["total_records"] == len(result["data"]) == 400
    assert result["pages"] == 5
    assert [(s["date"], s["page"]) for s in result["skipped_pages"]] == [("2025-05-02", 2)]
    # five waits in the main pass, five more in the second pass; jitter adds at most 10 %
    # (the throttle's sub-millisecond pacing sleeps go through the same injected sleep)
    backoffs = [w for w in sleeps if w >= 1]
    bases = [10, 20, 30, 40, 60] * 2
    assert len(backoffs) == len(bases)
    assert all(b <= w <= b * 1.1 for w, b in zip(backoffs, bases, strict=True))
    assert "2025-05-02" in api.get_skipped_pages_summary()
    ids = {r["conversion_id"] for r in result["data"]}
    assert len(ids) == 400


@pytest.mark.timeout(60)
def test_authenticate_is_false_on_bad_credentials(make_simulator) -> None:  # type: ignore[no-untyped-def]
    """The seed's authenticate() answered False for wrong credentials, without retrying."""
    sim = make_simulator(rate_limit_per_minute=None)
    settings = load_settings({"INVOLVE_ASIA_BASE_URL": sim.base_url,
                              "INVOLVE_ASIA_API_SECRET": "wrong", **FAST},
                             today=dt.date(2025, 5, 3))
    assert InvolveAsiaAPI(settings).authenticate() is False
    assert sim.request_count(endpoint="authenticate") == 1


@pytest.mark.timeout(60)
def test_iter_conversions_streams_default_range(make_simulator) -> None:  # type: ignore[no-untyped-def]
    """iter_conversions yields records one by one; the default range is yesterday."""
    sim = make_simulator(records_per_day=120, rate_limit_per_minute=None)
    settings = load_settings({"INVOLVE_ASIA_BASE_URL": sim.base_url,
                              "INVOLVE_ASIA_API_SECRET": "demo-secret", **FAST},
                             today=dt.date(2025, 5, 3))
    api = InvolveAsiaAPI(settings)
    it = api.iter_conversions(settings.start_date, settings.end_date)
    first = next(it)
    assert "conversion_id" in first
    assert 1 + sum(1 for _ in it) == 120
    assert api.get_conversions_default_range()["total_records"] == 120
