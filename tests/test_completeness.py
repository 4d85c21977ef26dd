"""Complete means proven (issue 17): an API that answers 200 with less than it has never yields
a day called complete, and a refresh never replaces a good snapshot with a smaller one on the
API's word. The job runs as a subprocess against the simulator; the refresh tests write to the
GCS emulator through the real storage client."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.outcome import (
    DayFetch,
    Disposition,
    KeepReason,
    StopReason,
    StoredDay,
    Verdict,
    settle,
)
from app.simulator import DEFAULT_RANDOM_FAULTS, Fault, Simulator
from tests.support.gcs_fixtures import GcsEmulator, make_test_gcs_sink
from tests.support.jobrun import day_meta, job_env, read_day, read_result, read_summary, run_job

START, END = "2025-02-01", "2025-02-03"
DAYS = ["2025-02-01", "2025-02-02", "2025-02-03"]


def _range_requests(sim: Simulator, date: str | None = None) -> list[Any]:
    return [e for e in sim.ledger.snapshot() if e.endpoint == "range"
            and (date is None or e.form.get("start_date") == date)]


def _stored_ids(root: Path, date: str, account: str = "default") -> list[int]:
    return [r["conversion_id"] for r in read_day(root, account, date)]


def _assert_day_exact(sim: Simulator, root: Path, date: str, account: str = "default") -> None:
    ids = _stored_ids(root, date, account)
    assert len(ids) == len(set(ids)), f"{date}: a record stored twice"
    assert set(ids) == sim.expected_ids(account, date, date), f"{date}: records missing"
    assert day_meta(root, account, date)["complete"] == "true"


# -- settle: the one decision, as a table ---------------------------------------------------------

DONE = {"second_pass_done": True}
WHOLE = DayFetch(records=250, count=250, **DONE)


@pytest.mark.parametrize(("day", "stored", "allow", "verdict"), [
    (DayFetch(interrupted=True), None, False, Verdict(Disposition.DROP)),
    (DayFetch(interrupted=True, capped=True, stop_reason=StopReason.MAX_RECORDS), None, False,
     Verdict(Disposition.STORE)),
    (DayFetch(skipped=True), None, False, Verdict(Disposition.HOLD)),
    (DayFetch(skipped=True, stop_reason=StopReason.MAX_RECORDS), None, False,
     Verdict(Disposition.STORE)),
    (DayFetch(skipped=True, **DONE), None, False, Verdict(Disposition.STORE)),
    (DayFetch(skipped=True, **DONE), StoredDay(True, True), False,
     Verdict(Disposition.KEEP, KeepReason.INCOMPLETE)),
    (DayFetch(skipped=True, **DONE), StoredDay(False, False), False, Verdict(Disposition.STORE)),
    (DayFetch(records=240, count=250, **DONE), StoredDay(True, True), False,
     Verdict(Disposition.KEEP, KeepReason.INCOMPLETE)),
    (DayFetch(capped=True, **DONE), StoredDay(True, True), False,
     Verdict(Disposition.KEEP, KeepReason.INCOMPLETE)),
    (WHOLE, None, False, Verdict(Disposition.STORE)),
    (WHOLE, StoredDay(True, False, missing=0), False, Verdict(Disposition.STORE)),
    (WHOLE, StoredDay(True, False, missing=30), False, Verdict(Disposition.REREAD)),
    (DayFetch(records=250, count=250, read_again=True, **DONE), StoredDay(True, False, missing=30),
     False, Verdict(Disposition.KEEP, KeepReason.SHRANK)),
    (WHOLE, StoredDay(True, False, missing=30), True, Verdict(Disposition.STORE)),
    (WHOLE, StoredDay(False, False, missing=30), False, Verdict(Disposition.STORE)),
    (WHOLE, StoredDay(True, True), False, Verdict(Disposition.STORE)),
])
def test_settle_decides_each_day_once(day: DayFetch, stored: StoredDay | None, allow: bool,
                                      verdict: Verdict) -> None:
    """settle's table: drop what was cut short, hold skipped pages for the second pass, keep a
    complete snapshot over an incomplete or short fetch, read again (then keep) a refresh that
    lacks stored records unless shrinking is allowed, else store."""
    assert settle(day, stored, allow_shrink=allow) == verdict


def test_a_day_short_of_its_count_is_not_complete() -> None:
    """Fewer records after dedupe than the last answer's count: short, so not complete."""
    assert DayFetch(records=249, count=250).short and not DayFetch(records=249, count=250).complete
    assert DayFetch(records=251, count=250).complete and DayFetch(records=0, count=0).complete


# -- pages checked against their own answer -------------------------------------------------------


@pytest.mark.timeout(120)
def test_an_empty_last_page_once_is_retried(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The last page of a 250-record day comes back empty once: it is retried, exit 0, every
    record stored once and the day complete."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="empty_page", date=DAYS[0], page=3, attempts={1}))
    run = run_job(job_env(sim.base_url, DAYS[0], DAYS[0], OUTPUT_DIR=str(tmp_path)))
    assert run.code == 0, run.stderr[-2000:]
    _assert_day_exact(sim, tmp_path, DAYS[0])
    assert [e["error_class"] for e in run.named("page_retry")] == ["empty_page"]


@pytest.mark.timeout(120)
def test_a_short_middle_page_and_a_short_last_page_are_retried(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Page 2 of 3 brings 40 of 100 records once, page 3 20 of 50 once: both retried, exit 0,
    every record stored once."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="short_page", date=DAYS[0], page=2, attempts={1}))
    sim.add_fault(Fault(kind="short_page", date=DAYS[0], page=3, attempts={1}))
    run = run_job(job_env(sim.base_url, DAYS[0], DAYS[0], OUTPUT_DIR=str(tmp_path)))
    assert run.code == 0, run.stderr[-2000:]
    _assert_day_exact(sim, tmp_path, DAYS[0])
    assert sorted((e["page"], e["error_class"]) for e in run.named("page_retry")) == [
        (2, "short_page"), (3, "short_page")]
    assert read_summary(tmp_path, DAYS[0], DAYS[0], _execution(run))["retries"] == {
        "short_page": 2}


def _execution(run: Any) -> str:
    return str(run.named("job_started")[0]["logging.googleapis.com/labels"]["execution"])


@pytest.mark.timeout(120)
def test_a_page_short_on_every_attempt_is_skipped_and_the_day_incomplete(make_simulator,
                                                                         tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Day 2's page 2 is short on every attempt (both passes): exit 3, partial, that page in
    skipped_pages, day 2 stored incomplete with the records it did get; days 1 and 3 complete
    and exact."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="short_page", date=DAYS[1], page=2))
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 3, run.stderr[-2000:]
    summary = read_summary(tmp_path, START, END, "e1")
    assert summary["status"] == "partial"
    assert [(s["date"], s["page"], s["error_class"]) for s in summary["skipped_pages"]] == [
        (DAYS[1], 2, "short_page")]
    for date in (DAYS[0], DAYS[2]):
        _assert_day_exact(sim, tmp_path, date)
    assert day_meta(tmp_path, "default", DAYS[1])["complete"] == "false"
    kept = _stored_ids(tmp_path, DAYS[1])
    assert len(kept) == len(set(kept)) == 150 + 40  # pages 1 and 3, and 40 of page 2
    assert set(kept) < sim.expected_ids("default", DAYS[1], DAYS[1])


@pytest.mark.timeout(120)
def test_a_busy_day_answering_count_zero_once_is_fetched_whole(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A 230-record day answers count 0 once: asked again, every record stored, exit 0."""
    sim = make_simulator(records_per_day=230, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="zero_count", date=DAYS[0], attempts={1}))
    run = run_job(job_env(sim.base_url, DAYS[0], DAYS[0], OUTPUT_DIR=str(tmp_path)))
    assert run.code == 0, run.stderr[-2000:]
    _assert_day_exact(sim, tmp_path, DAYS[0])
    assert len(_stored_ids(tmp_path, DAYS[0])) == 230
    assert len(run.named("day_empty_confirm")) == 1


@pytest.mark.timeout(120)
def test_truly_empty_days_are_stored_complete_after_one_confirming_request(make_simulator,
                                                                            tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An account without conversions: each day is asked twice (one confirming request), then
    stored complete and empty; exit 0."""
    sim = make_simulator(records_per_day=0, rate_limit_per_minute=None)
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path)))
    assert run.code == 0, run.stderr[-2000:]
    for date in DAYS:
        assert len(_range_requests(sim, date)) == 2
        assert read_day(tmp_path, "default", date) == []
        meta = day_meta(tmp_path, "default", date)
        assert (meta["complete"], meta["records"]) == ("true", "0")


# -- a refresh never shrinks a snapshot on the API's word ----------------------------------------


@pytest.fixture
def bucket(gcs_emulator: GcsEmulator) -> Iterator[Any]:
    sink = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket)
    yield sink
    sink.close()


def _day_object(date: str) -> str:
    return f"days/account=default/date={date}/conversions.ndjson.gz"


def _gcs_day(sink: Any, date: str) -> tuple[bytes, dict[str, str]]:
    info = sink.stat(_day_object(date))
    data = sink.get_bytes(_day_object(date))
    assert info is not None and data is not None
    return data, dict(info.metadata)


def _gcs_summary(sink: Any, execution: str) -> dict[str, Any]:
    data = sink.get_bytes(f"runs/{START}_{END}/{execution}/summary.json")
    assert data is not None
    summary: dict[str, Any] = json.loads(data)
    return summary


@pytest.mark.timeout(180)
def test_a_refresh_the_api_denies_keeps_the_snapshot(make_simulator, gcs_emulator: GcsEmulator,
                                                     bucket: Any) -> None:  # type: ignore[no-untyped-def]
    """The API answers count 0 for stored day 2 on every attempt of a refresh: the old snapshot
    stays byte for byte, the summary lists it kept (shrank, both counts), a day_shrank warning
    names them, exit 3; days 1 and 3 are refreshed. With ALLOW_SNAPSHOT_SHRINK=true the next
    refresh replaces it and changes.removed counts the loss."""
    sim = make_simulator(records_per_day=330, rate_limit_per_minute=None, validation_rate=0.6)
    env = job_env(sim.base_url, START, END, **gcs_emulator.env(), CLOUD_RUN_EXECUTION="e1")
    assert run_job(env).code == 0
    before, meta = _gcs_day(bucket, DAYS[1])
    sim.advance_validation()
    sim.add_fault(Fault(kind="zero_count", date=DAYS[1]))
    refresh = run_job({**env, "CLOUD_RUN_EXECUTION": "e2", "SNAPSHOT_MAX_AGE": "0"})
    assert refresh.code == 3, refresh.stderr[-2000:]
    assert _gcs_day(bucket, DAYS[1]) == (before, meta)
    summary = _gcs_summary(bucket, "e2")
    assert summary["status"] == "partial"
    assert summary["kept_days"] == [{
        "account": "default", "date": DAYS[1], "fetched_at": meta["fetched_at"], "records": 330,
        "reason": "shrank", "kept_records": 330, "fetched_records": 0}]
    [warning] = refresh.named("day_shrank")
    assert (warning["severity"], warning["kept_records"], warning["fetched_records"],
            warning["missing"]) == ("WARNING", 330, 0, 330)
    assert len(refresh.named("day_reread")) == 1
    assert summary["changes"]["removed"] == 0
    for date in (DAYS[0], DAYS[2]):
        data, day_metadata = _gcs_day(bucket, date)
        assert day_metadata["execution"] == "e2"
        stored = {r["conversion_id"]: r["conversion_status"]
                  for r in map(json.loads, gzip.decompress(data).splitlines())}
        assert stored == sim.statuses("default", date)
    result = [json.loads(line) for line in gzip.decompress(
        bucket.get_bytes(f"runs/{START}_{END}/e2/conversions.ndjson.gz")).splitlines()]
    assert len(result) == summary["records"] == 3 * 330

    allowed = run_job({**env, "CLOUD_RUN_EXECUTION": "e3", "SNAPSHOT_MAX_AGE": "0",
                       "ALLOW_SNAPSHOT_SHRINK": "true"})
    assert allowed.code == 0, allowed.stderr[-2000:]
    data, day_metadata = _gcs_day(bucket, DAYS[1])
    assert gzip.decompress(data) == b"" and day_metadata["records"] == "0"
    changes = _gcs_summary(bucket, "e3")["changes"]
    assert changes["removed"] == 330
    assert [(d["date"], d["removed"]) for d in changes["days"] if d["removed"]] == [(DAYS[1], 330)]


@pytest.mark.timeout(180)
def test_a_refresh_missing_records_once_reads_the_day_again(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A refresh whose first read lacks stored records (count 0 once) reads the day once more
    and stores the whole day: exit 0, nothing kept, nothing removed."""
    sim = make_simulator(records_per_day=200, rate_limit_per_minute=None)
    env = job_env(sim.base_url, DAYS[0], DAYS[0], OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1")
    assert run_job(env).code == 0
    sim.add_fault(Fault(kind="zero_count", date=DAYS[0], attempts={2, 3}))  # both reads of read 1
    refresh = run_job({**env, "CLOUD_RUN_EXECUTION": "e2", "SNAPSHOT_MAX_AGE": "0"})
    assert refresh.code == 0, refresh.stderr[-2000:]
    _assert_day_exact(sim, tmp_path, DAYS[0])
    summary = read_summary(tmp_path, DAYS[0], DAYS[0], "e2")
    assert summary["kept_days"] == [] and summary["changes"]["removed"] == 0
    assert len(refresh.named("day_reread")) == 1
    assert day_meta(tmp_path, "default", DAYS[0])["execution"] == "e2"


# -- lies at random -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_random_lies_never_yield_a_complete_day_with_a_record_missing(make_simulator,
                                                                      tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """20 % random faults, half of them empty, short or zero-count answers, over 12 days (two
    seeds): a day marked complete holds every record once, and exit 0 means every day did."""
    kinds = ("http_503", "reset", "malformed_json", "empty_page", "short_page", "zero_count")
    assert set(kinds[:3]) <= set(DEFAULT_RANDOM_FAULTS)
    start, end = "2025-05-01", "2025-05-12"
    days = [f"2025-05-{d:02d}" for d in range(1, 13)]
    lies = 0
    for seed in (3, 11):
        root = tmp_path / f"seed{seed}"
        sim = make_simulator(records_per_day=450, rate_limit_per_minute=None, seed=seed,
                             fault_rate=0.2, fault_kinds=kinds)
        run = run_job(job_env(sim.base_url, start, end, OUTPUT_DIR=str(root),
                              CLOUD_RUN_EXECUTION="e1", MAX_SKIPPED_PAGES="50"))
        assert run.code in (0, 3), run.stderr[-2000:]
        lies += sum(e.outcome in ("empty_page", "short_page", "zero_count")
                    for e in sim.ledger.snapshot())
        complete = 0
        for date in days:
            ids = _stored_ids(root, date)
            assert len(ids) == len(set(ids))
            if day_meta(root, "default", date)["complete"] == "true":
                complete += 1
                assert set(ids) == sim.expected_ids("default", date, date), date
        if run.code == 0:
            assert complete == len(days)
            rows = read_result(root, start, end, "e1")
            assert {r["conversion_id"] for r in rows} == sim.expected_ids("default", start, end)
    assert lies >= 8, "the faults did not lie often enough to test anything"


@pytest.mark.timeout(60)
def test_the_original_interface_retries_short_pages_and_lists_those_that_stay_short(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """InvolveAsiaAPI.get_conversions: page 1 short once is retried and whole; page 3 short on
    every attempt is listed in skipped_pages, its 40 records kept: 440 of 500, each once."""
    from app.involve_asia import InvolveAsiaAPI
    from tests.test_facade import settings_for

    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="short_page", date="2025-05-01", page=1, attempts={1}))
    sim.add_fault(Fault(kind="short_page", date="2025-05-01", page=3))
    api = InvolveAsiaAPI(settings=settings_for(sim.base_url, tmp_path), sleep=lambda _s: None)
    assert api.authenticate() is True
    result = api.get_conversions("2025-05-01", "2025-05-02")
    assert result is not None
    data = result["data"]
    assert data["skipped_pages"] == [3]
    ids = [r["conversion_id"] for r in data["data"]]
    assert len(ids) == len(set(ids)) == 440
    assert set(ids) < sim.expected_ids("default", "2025-05-01", "2025-05-02")
