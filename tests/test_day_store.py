"""The day store end to end (issue 11): the job as a subprocess against the simulator, writing
to a local folder. Currency, refresh with changes, reuse, kept snapshots, overlapping ranges,
new accounts, MAX_RECORDS_LIMIT, and DuckDB reading the store."""

from __future__ import annotations

import collections
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from app.simulator import Fault, SimAccount, Simulator
from tests.support.jobrun import (
    day_file,
    day_meta,
    job_env,
    read_day,
    read_result,
    read_summary,
    run_job,
)

START, END = "2025-02-01", "2025-02-03"
DAYS = ["2025-02-01", "2025-02-02", "2025-02-03"]


def _range_requests(sim: Simulator) -> list[Any]:
    return [e for e in sim.ledger.snapshot() if e.endpoint == "range"]


def _accounts_env(accounts: list[SimAccount]) -> str:
    return json.dumps([{"name": a.name, "key": a.key, "secret": a.secret} for a in accounts])


def _transitions(before: dict[int, str], after: dict[int, str]) -> collections.Counter[str]:
    return collections.Counter(f"{before[i]}->{after[i]}" for i in before
                               if i in after and before[i] != after[i])


@pytest.mark.timeout(120)
def test_default_settings_ask_for_usd_and_store_the_converted_amounts(make_simulator,
                                                                      tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without PREFERRED_CURRENCY every conversions request carries USD, and the day store
    holds the amounts the simulator converts to USD (not the account's local MYR)."""
    sim = make_simulator(records_per_day=150, rate_limit_per_minute=None)
    assert sim.local_currency("default") != "USD"
    run = run_job(job_env(sim.base_url, START, START, OUTPUT_DIR=str(tmp_path),
                          CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 0, run.stderr[-2000:]
    requests = _range_requests(sim)
    assert requests and {e.preferred_currency for e in requests} == {"USD"}
    stored = {r["conversion_id"]: r for r in read_day(tmp_path, "default", START)}
    expected = {r["conversion_id"]: r for r in sim.records("default", START, currency="USD")}
    assert stored.keys() == expected.keys()
    for key, record in stored.items():
        assert record["currency"] == "USD"
        assert record["payout"] == expected[key]["payout"]
        assert record["sale_amount"] == expected[key]["sale_amount"]
    local = {r["conversion_id"]: r for r in sim.records("default", START)}
    assert any(local[k]["payout"] != stored[k]["payout"] for k in stored)
    assert day_meta(tmp_path, "default", START)["currency"] == "USD"
    assert read_summary(tmp_path, START, START, "e1")["currency"] == "USD"


@pytest.mark.timeout(120)
def test_myr_is_sent_as_asked_and_euro_exits_2_before_any_request(make_simulator,
                                                                  tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """PREFERRED_CURRENCY=MYR reaches the API as MYR; EURO is refused at start-up (exit 2)
    with not one request sent."""
    sim = make_simulator(accounts=[SimAccount(currency="SGD")], records_per_day=120,
                         rate_limit_per_minute=None)
    refused = run_job(job_env(sim.base_url, START, START, OUTPUT_DIR=str(tmp_path / "x"),
                              PREFERRED_CURRENCY="EURO"))
    assert refused.code == 2
    assert "PREFERRED_CURRENCY" in refused.stdout + refused.stderr
    assert sim.ledger.snapshot() == []
    run = run_job(job_env(sim.base_url, START, START, OUTPUT_DIR=str(tmp_path / "y"),
                          PREFERRED_CURRENCY="MYR"))
    assert run.code == 0, run.stderr[-2000:]
    assert {e.preferred_currency for e in _range_requests(sim)} == {"MYR"}
    rows = read_day(tmp_path / "y", "default", START)
    assert {r["currency"] for r in rows} == {"MYR"}
    expected = {r["conversion_id"]: r["payout"] for r in sim.records("default", START,
                                                                     currency="MYR")}
    assert {r["conversion_id"]: r["payout"] for r in rows} == expected


@pytest.mark.timeout(180)
def test_a_refresh_stores_current_statuses_and_counts_exactly_what_changed(make_simulator,
                                                                            tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Statuses move and late conversions arrive: SNAPSHOT_MAX_AGE=0 stores the new state and
    `changes` counts exactly the transitions and additions; a rerun with defaults right after
    sends no conversions request and exits 0."""
    sim = make_simulator(records_per_day=260, rate_limit_per_minute=None, validation_rate=0.5)
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1")
    first = run_job(env)
    assert first.code == 0, first.stderr[-2000:]
    assert read_summary(tmp_path, START, END, "e1")["changes"]["added"] == 3 * 260
    before = {d: sim.statuses("default", d) for d in DAYS}
    sim.advance_validation()
    late = sim.insert_records("default", DAYS[1], 7)
    after = {d: sim.statuses("default", d) for d in DAYS}
    expected = collections.Counter[str]()
    for d in DAYS:
        expected += _transitions(before[d], after[d])
    assert sum(expected.values()) > 0

    refresh = run_job({**env, "CLOUD_RUN_EXECUTION": "e2", "SNAPSHOT_MAX_AGE": "0"})
    assert refresh.code == 0, refresh.stderr[-2000:]
    summary = read_summary(tmp_path, START, END, "e2")
    changes = summary["changes"]
    assert changes["added"] == 7 and changes["removed"] == 0
    assert changes["transitions"] == dict(sorted(expected.items()))
    by_day = {d["date"]: d for d in changes["days"]}
    assert by_day[DAYS[1]]["added"] == 7
    for d in DAYS:
        assert by_day.get(d, {}).get("transitions", {}) == dict(
            sorted(_transitions(before[d], after[d]).items()))
        stored = {r["conversion_id"]: r["conversion_status"] for r in read_day(tmp_path, "default", d)}
        assert stored == after[d]
    assert set(late) <= {r["conversion_id"] for r in read_result(tmp_path, START, END, "e2")}
    logged = {e["date"]: e for e in refresh.named("day_changed")}
    assert set(logged) == set(by_day)
    assert logged[DAYS[1]]["added"] == 7

    requests_so_far = len(_range_requests(sim))
    again = run_job({**env, "CLOUD_RUN_EXECUTION": "e3"})
    assert again.code == 0, again.stderr[-2000:]
    assert len(_range_requests(sim)) == requests_so_far
    reused = read_summary(tmp_path, START, END, "e3")
    assert [d["date"] for d in reused["reused_days"]] == DAYS
    assert reused["pages"] == 0 and reused["records"] == 3 * 260 + 7
    assert reused["changes"] == {"added": 0, "removed": 0, "transitions": {}, "days": []}


@pytest.mark.timeout(180)
def test_a_refresh_with_a_page_still_skipped_keeps_the_complete_snapshot(make_simulator,
                                                                         tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A refresh whose day 2 keeps a dead page exits 3, leaves day 2's earlier complete
    snapshot byte for byte (served in the result, listed as kept), and refreshes the others."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None, validation_rate=0.6)
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1")
    assert run_job(env).code == 0
    kept_bytes = day_file(tmp_path, "default", DAYS[1]).read_bytes()
    kept_meta = day_meta(tmp_path, "default", DAYS[1])
    sim.advance_validation()
    sim.add_fault(Fault(kind="http_502", date=DAYS[1], page=2))
    refresh = run_job({**env, "CLOUD_RUN_EXECUTION": "e2", "SNAPSHOT_MAX_AGE": "0"})
    assert refresh.code == 3, refresh.stderr[-2000:]
    assert day_file(tmp_path, "default", DAYS[1]).read_bytes() == kept_bytes
    assert day_meta(tmp_path, "default", DAYS[1]) == kept_meta
    summary = read_summary(tmp_path, START, END, "e2")
    assert summary["status"] == "partial"
    assert [(d["date"], d["fetched_at"]) for d in summary["kept_days"]] == [
        (DAYS[1], kept_meta["fetched_at"])]
    assert [(s["date"], s["page"]) for s in summary["skipped_pages"]] == [(DAYS[1], 2)]
    for d in (DAYS[0], DAYS[2]):
        stored = {r["conversion_id"]: r["conversion_status"] for r in read_day(tmp_path, "default", d)}
        assert stored == sim.statuses("default", d)
        assert day_meta(tmp_path, "default", d)["execution"] == "e2"
    rows = read_result(tmp_path, START, END, "e2")
    day2 = [r["conversion_id"] for r in rows if r["datetime_conversion"].startswith(DAYS[1])]
    assert sorted(day2) == sorted(sim.statuses("default", DAYS[1]))
    assert summary["records"] == len(rows) == 900


@pytest.mark.timeout(180)
def test_an_overlapping_range_fetches_only_its_new_day_and_the_store_holds_each_once(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Mar 1-3, then Mar 2-4: the second run requests only Mar 4; the day store holds each day
    once and every record exactly once; DuckDB reads it with hive partitioning."""
    sim = make_simulator(records_per_day=210, rate_limit_per_minute=None)
    env = job_env(sim.base_url, "2025-03-01", "2025-03-03", OUTPUT_DIR=str(tmp_path),
                  CLOUD_RUN_EXECUTION="e1")
    assert run_job(env).code == 0
    seen = len(_range_requests(sim))
    second = run_job({**env, "START_DATE": "2025-03-02", "END_DATE": "2025-03-04",
                      "CLOUD_RUN_EXECUTION": "e2"})
    assert second.code == 0, second.stderr[-2000:]
    assert {e.form["start_date"] for e in _range_requests(sim)[seen:]} == {"2025-03-04"}
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("days/**/*.ndjson.gz"))
    assert files == [f"days/account=default/date=2025-03-0{d}/conversions.ndjson.gz"
                     for d in (1, 2, 3, 4)]
    ids = [r["conversion_id"] for p in tmp_path.glob("days/**/*.ndjson.gz")
           for r in read_day(tmp_path, "default", p.parent.name.removeprefix("date="))]
    assert len(ids) == len(set(ids))
    assert set(ids) == sim.expected_ids("default", "2025-03-01", "2025-03-04")
    assert len(read_result(tmp_path, "2025-03-02", "2025-03-04", "e2")) == 3 * 210

    counts = duckdb.execute(
        "SELECT account, CAST(date AS VARCHAR) AS day, count(*) AS n, "
        "count(DISTINCT conversion_id) AS ids "
        "FROM read_json_auto(?, hive_partitioning=true) GROUP BY ALL ORDER BY day",
        [f"{tmp_path.as_posix()}/days/**/*.ndjson.gz"]).fetchall()
    assert counts == [("default", f"2025-03-0{d}", 210, 210) for d in (1, 2, 3, 4)]


@pytest.mark.timeout(180)
def test_a_new_account_is_fetched_and_the_old_one_reused(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An account added to INVOLVE_ASIA_ACCOUNTS between two runs is fetched by the second run;
    the first account's fresh snapshots are reused (no request for it)."""
    old = SimAccount(name="old", key="general", secret="s-old")
    new = SimAccount(name="new", key="general", secret="s-new")
    sim = make_simulator(accounts=[old, new], records_per_day=140, rate_limit_per_minute=None)
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1",
                  INVOLVE_ASIA_ACCOUNTS=_accounts_env([old]))
    assert run_job(env).code == 0
    seen = len(_range_requests(sim))
    second = run_job({**env, "CLOUD_RUN_EXECUTION": "e2",
                      "INVOLVE_ASIA_ACCOUNTS": _accounts_env([old, new])})
    assert second.code == 0, second.stderr[-2000:]
    assert {e.account for e in _range_requests(sim)[seen:]} == {"new"}
    summary = read_summary(tmp_path, START, END, "e2")
    assert {(d["account"], d["date"]) for d in summary["reused_days"]} == {("old", d) for d in DAYS}
    rows = read_result(tmp_path, START, END, "e2")
    assert {r["conversion_id"] for r in rows if r["_account"] == "new"} == sim.expected_ids(
        "new", START, END)
    assert len(rows) == 6 * 140


@pytest.mark.timeout(180)
def test_max_records_leaves_incomplete_snapshots_that_a_full_run_replaces(make_simulator,
                                                                          tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """MAX_RECORDS_LIMIT=250: exit 0, status succeeded, stop_reason max_records, and the days it
    cut are marked incomplete; a later full run with defaults fetches and completes them."""
    sim = make_simulator(records_per_day=230, rate_limit_per_minute=None)
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1")
    capped = run_job({**env, "MAX_RECORDS_LIMIT": "250"})
    assert capped.code == 0, capped.stderr[-2000:]
    summary = read_summary(tmp_path, START, END, "e1")
    assert summary["status"] == "succeeded" and summary["stop_reason"] == "max_records"
    assert summary["records"] == 250
    stored = [d for d in DAYS if day_file(tmp_path, "default", d).exists()]
    assert stored and any(day_meta(tmp_path, "default", d)["complete"] == "false" for d in stored)
    full = run_job({**env, "CLOUD_RUN_EXECUTION": "e2"})
    assert full.code == 0, full.stderr[-2000:]
    for d in DAYS:
        assert day_meta(tmp_path, "default", d)["complete"] == "true"
        assert len(read_day(tmp_path, "default", d)) == 230
    assert len(read_result(tmp_path, START, END, "e2")) == 3 * 230


@pytest.mark.timeout(120)
def test_snapshot_metadata_says_when_by_whom_how_many_and_the_status_mix(make_simulator,
                                                                         tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each snapshot records its fetch time, execution, records, completeness, currency and
    counts by conversion_status, matching its content."""
    sim = make_simulator(records_per_day=180, rate_limit_per_minute=None)
    before = dt.datetime.now(dt.UTC)
    assert run_job(job_env(sim.base_url, START, START, OUTPUT_DIR=str(tmp_path),
                           CLOUD_RUN_EXECUTION="e-meta")).code == 0
    meta = day_meta(tmp_path, "default", START)
    rows = read_day(tmp_path, "default", START)
    assert meta["execution"] == "e-meta" and meta["complete"] == "true"
    assert int(meta["records"]) == len(rows) == 180
    assert json.loads(meta["status_counts"]) == dict(
        collections.Counter(r["conversion_status"] for r in rows))
    fetched = dt.datetime.fromisoformat(meta["fetched_at"])
    assert before - dt.timedelta(seconds=1) <= fetched <= dt.datetime.now(dt.UTC)
