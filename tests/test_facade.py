"""The original interface, in process: InvolveAsiaAPI on the job's fetch loop, with the original
envelope, one range query, the preferred currency, save_to_json and its failure modes."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import ApiUnreachable
from app.involve_asia import InvolveAsiaAPI
from app.simulator import Fault, SimAccount

FAST = {"RETRY_BACKOFF": "10,20,30,40,60", "REQUEST_DELAY": "0", "REQUESTS_PER_MINUTE": "100000",
        "REQUEST_TIMEOUT": "2"}


class _Events(logging.Handler):
    """The facade's lines on the `app` logger, as {"event", "level", "message", **fields}."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append({**getattr(record, "fields", {}), "event": getattr(record, "event", None),
                            "level": record.levelname.lower(), "message": record.getMessage()})


@pytest.fixture
def app_events() -> Iterator[list[dict[str, object]]]:
    """Every line the facade logs during the test (a handler on the `app` logger)."""
    handler = _Events()
    logger = logging.getLogger("app")
    logger.addHandler(handler)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)


def settings_for(base_url: str, tmp_path: Path, **extra: str):  # type: ignore[no-untyped-def]
    return load_settings({"INVOLVE_ASIA_BASE_URL": base_url,
                          "INVOLVE_ASIA_API_SECRET": "demo-secret", "LOG_LANGUAGE": "en",
                          "LOG_FORMAT": "json", "OUTPUT_DIR": str(tmp_path / "out"),
                          **FAST, **extra},
                         today=dt.date(2025, 5, 3))


@pytest.mark.timeout(60)
def test_get_conversions_returns_the_original_envelope(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """authenticate() -> True; get_conversions pages the range as one query and returns the
    original envelope: count, total_pages, pages_fetched, skipped page numbers, every record
    once; a dead page waits 10,20,30,40,60 twice (main and second pass) and is summarised."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_500", date="2025-05-02", page=2))
    sleeps: list[float] = []
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path), sleep=sleeps.append)
    assert api.authenticate() is True
    result = api.get_conversions("2025-05-01", "2025-05-02")
    assert result is not None
    assert set(result) == {"status", "message", "data"}
    assert (result["status"], result["message"]) == ("success", "Success")
    data = result["data"]
    assert set(data) == {"page", "limit", "count", "total_pages", "pages_fetched",
                         "skipped_pages", "current_page_count", "data"}
    assert (data["page"], data["limit"], data["count"], data["total_pages"]) == (1, 100, 500, 5)
    assert data["pages_fetched"] == 4
    assert data["skipped_pages"] == [2]
    assert data["current_page_count"] == len(data["data"]) == 400
    ids = {r["conversion_id"] for r in data["data"]}
    assert len(ids) == 400
    assert ids < sim.expected_ids("default", "2025-05-01", "2025-05-02")
    ranges = {(e.start_date, e.end_date) for e in sim.ledger.snapshot() if e.endpoint == "range"}
    assert ranges == {("2025-05-01", "2025-05-02")}  # one query, not day by day
    # five waits in the main pass, five more in the second pass; jitter adds at most 10 %
    # (the throttle's sub-millisecond pacing sleeps go through the same injected sleep)
    backoffs = [w for w in sleeps if w >= 1]
    bases = [10, 20, 30, 40, 60] * 2
    assert len(backoffs) == len(bases)
    assert all(b <= w <= b * 1.1 for w, b in zip(backoffs, bases, strict=True))
    summary = api.get_skipped_pages_summary()
    assert "2025-05-01..2025-05-02" in summary and "(1)" in summary


@pytest.mark.timeout(60)
def test_authenticate_is_false_on_bad_credentials(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """authenticate() answers False for wrong credentials, without retrying; get_conversions
    then gives None without sending anything, as the original did."""
    sim = make_simulator(rate_limit_per_minute=None)
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path,
                                               INVOLVE_ASIA_API_SECRET="wrong"))
    assert api.authenticate() is False
    assert sim.request_count(endpoint="authenticate") == 1
    assert api.token is None
    assert api.get_conversions("2025-05-01", "2025-05-01") is None
    assert sim.request_count(endpoint="authenticate") == 1  # not signed in: nothing is sent
    assert sim.request_count(endpoint="range") == 0


@pytest.mark.timeout(60)
def test_iter_conversions_streams_and_the_default_range_is_yesterday(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """iter_conversions yields records one by one; get_conversions_default_range is yesterday."""
    sim = make_simulator(records_per_day=120, rate_limit_per_minute=None)
    settings = settings_for(sim.base_url, tmp_path)
    api = InvolveAsiaAPI(settings=settings)
    it = api.iter_conversions(settings.start_date, settings.end_date)
    first = next(it)
    assert "conversion_id" in first
    assert 1 + sum(1 for _ in it) == 120
    result = api.get_conversions_default_range()
    assert result is not None and result["data"]["current_page_count"] == 120
    days = {(e.start_date, e.end_date) for e in sim.ledger.snapshot() if e.endpoint == "range"}
    assert days == {("2025-05-02", "2025-05-02")}


@pytest.mark.timeout(60)
def test_nothing_came_back_is_none(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A range without conversions gives None, not an empty envelope, once the API said so
    twice (an empty answer is confirmed by one more request)."""
    sim = make_simulator(records_per_day=0, rate_limit_per_minute=None)
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path))
    assert api.authenticate()
    assert api.get_conversions("2025-05-01", "2025-05-03") is None
    assert sim.request_count(endpoint="range") == 2


@pytest.mark.timeout(60)
def test_currency_defaults_to_preferred_currency_and_can_be_chosen(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every conversions request carries filters[preferred_currency]: USD by default, MYR when
    asked, nothing for "" (the account's local SGD); the amounts are the converted ones."""
    sim = make_simulator(accounts=[SimAccount(currency="SGD")], records_per_day=150,
                         rate_limit_per_minute=None)
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path))
    assert api.authenticate()
    day = "2025-05-01"
    by_id = {r["conversion_id"]: r for r in sim.records("default", day)}
    for asked, sent, expected in ((None, "USD", "USD"), ("MYR", "MYR", "MYR"),
                                  ("", None, "SGD")):
        before = len(sim.ledger)
        result = api.get_conversions(day, day, currency=asked)
        assert result is not None
        records = result["data"]["data"]
        assert {r["currency"] for r in records} == {expected}, asked
        for record in records:
            assert record == sim.expected_record(by_id[record["conversion_id"]], sent or None)
        sent_values = {e.preferred_currency for e in sim.ledger.snapshot()[before:]
                       if e.endpoint == "range"}
        assert sent_values == {sent}, asked


@pytest.mark.timeout(60)
def test_preferred_currency_setting_is_the_default(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """PREFERRED_CURRENCY=MYR in the settings: get_conversions without currency asks for MYR."""
    sim = make_simulator(records_per_day=30, rate_limit_per_minute=None)
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path, PREFERRED_CURRENCY="MYR"))
    assert api.authenticate()
    result = api.get_conversions("2025-05-01", "2025-05-01")
    assert result is not None
    assert {r["currency"] for r in result["data"]["data"]} == {"MYR"}
    assert {e.preferred_currency for e in sim.ledger.snapshot() if e.endpoint == "range"} == {"MYR"}


@pytest.mark.timeout(60)
def test_api_name_labels_log_lines_and_skips(make_simulator, tmp_path: Path, app_events) -> None:  # type: ignore[no-untyped-def]
    """api_name is the account label of every line of the call (page lines, the token's, the
    skip's) and of the skip records; skipped_pages holds page numbers, as the original's."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_503", date="2025-05-01", page=3))
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path), sleep=lambda s: None)
    assert api.authenticate()
    sim.revoke_tokens()  # the call signs in again: that line names the account too
    result = api.get_conversions("2025-05-01", "2025-05-01", api_name="shop-my")
    assert result is not None and result["data"]["skipped_pages"] == [3]
    call = app_events[[e["event"] for e in app_events].index("fetch_started"):]
    named = [e for e in call if "account" in e]
    assert {"page_fetched", "page_retry", "page_skipped", "token_refreshed"} <= {
        e["event"] for e in named}
    assert all(e["account"] == "shop-my" for e in named)
    assert all("shop-my" in str(e["message"]) for e in named if e["event"] in (
        "fetch_started", "page_fetched", "page_retry", "page_skipped", "token_refreshed",
        "fetch_finished"))
    assert api.skipped_pages == [3]
    assert "shop-my" in api.get_skipped_pages_summary()


@pytest.mark.timeout(60)
def test_save_to_json_writes_indented_utf8_under_output_dir(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """save_to_json: OUTPUT_DIR/conversions_YYYYMMDD_HHMMSS.json, indented, non-ASCII kept as
    UTF-8; a chosen filename is used as given."""
    sim = make_simulator(records_per_day=10, rate_limit_per_minute=None)
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path))
    data = {"status": "success", "data": {"data": [{"offer_name": "蝦皮 Shopee ✓"}]}}
    path = api.save_to_json(data)
    assert path is not None
    saved = Path(path)
    assert saved.parent == tmp_path / "out"
    assert re.fullmatch(r"conversions_\d{8}_\d{6}\.json", saved.name)
    text = saved.read_text(encoding="utf-8")
    assert "蝦皮 Shopee ✓" in text and "\\u" not in text
    assert text.startswith('{\n  "status"')
    assert json.loads(text) == data
    named = api.save_to_json(data, "weekly.json")
    assert named == str(tmp_path / "out" / "weekly.json")


@pytest.mark.timeout(60)
def test_save_to_json_gives_none_when_it_cannot_write(make_simulator, tmp_path: Path, app_events) -> None:  # type: ignore[no-untyped-def]
    """A path under a file, or data JSON cannot hold: None and an error line, no exception."""
    sim = make_simulator(records_per_day=10, rate_limit_per_minute=None)
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path))
    (tmp_path / "out" / "taken").write_text("a file, not a folder")
    assert api.save_to_json({"a": 1}, "taken/result.json") is None
    assert api.save_to_json({"a": object()}, "ok.json") is None
    assert [e["event"] for e in app_events if e["level"] == "error"] == ["save_failed"] * 2
    assert not (tmp_path / "out" / "ok.json").exists()


@pytest.mark.timeout(60)
def test_an_unreachable_api_gives_none_at_once(tmp_path: Path) -> None:
    """A closed port: authenticate() is False and get_conversions None at once; iter_conversions
    raises ApiUnreachable after three refused attempts (waits injected)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    api = InvolveAsiaAPI(settings=settings_for(f"http://127.0.0.1:{port}", tmp_path),
                         sleep=sleeps.append)
    assert api.authenticate() is False
    assert api.get_conversions("2025-05-01", "2025-05-01") is None
    assert not [w for w in sleeps if w >= 1]
    with pytest.raises(ApiUnreachable):
        list(api.iter_conversions("2025-05-01", "2025-05-01"))
    assert len([w for w in sleeps if w >= 1]) == 2  # back-offs; the rest is throttle pacing
