"""`python -m app status`: the day store at a glance, read from the snapshots' metadata only.

One store, written through the real sinks (a local folder and the GCS emulator), holds complete,
incomplete, missing, low-volume and pending days and a snapshot without metadata; status shows
it as a table (80 columns, colour only on a terminal) and as the contract's JSON, with exit 0
(every day complete), 3 (not) and 2 (bad settings, as the job). The volume check it shares with
the job is pinned here too; the job's own `day_volume_low` entry against its real log output is
in tests/test_ops_monitoring.py.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app import logs
from app.reports import display_width
from app.simulator import Simulator
from app.sinks import Sink
from app.status import DEFAULT_DAYS, main
from app.store import SnapshotMeta, date_prefixes, day_object
from app.volume import volume_drop
from tests.support.faultproxy import FaultProxy
from tests.support.gcs_fixtures import GcsEmulator, make_test_gcs_sink
from tests.support.jobrun import REPO, job_env, run_job

END = dt.date(2025, 3, 31)
START = END - dt.timedelta(days=DEFAULT_DAYS - 1)  # 2025-02-25: the default 35 days
NOW = dt.datetime(2025, 4, 1, 6, 0, tzinfo=dt.UTC).timestamp()
FETCHED = NOW - 2 * 86400 - 3 * 3600  # every seeded snapshot is 2d 3h old
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def put_day(sink: Sink, account: str, day: dt.date, records: int, *, pending: int = 0,
            complete: bool = True, metadata: bool = True) -> None:
    """A day snapshot with the metadata the job writes (status reads nothing else of it)."""
    meta = SnapshotMeta(fetched_at=FETCHED, execution=f"exec-{account}", records=records,
                        complete=complete, currency="USD",
                        statuses={"pending": pending, "approved": records - pending})
    sink.put_bytes(day_object(account, day.isoformat()), gzip.compress(b""),
                   content_type="application/gzip",
                   metadata=meta.to_metadata() if metadata else None)


def d(month: int, day: int) -> dt.date:
    return dt.date(2025, month, day)


def seed(sink: Sink) -> None:
    """shopA: 35 complete days of 200 records (50 pending), but 03-10 holds 20 (low volume).
    shopB: 100 records a day, none pending, but 03-20 all pending; 03-05 incomplete (120, 30
    pending); 03-06, 03-07 and 03-31 missing; 03-15 without metadata. Plus a day before the
    range and a run object, which status ignores."""
    day = START
    while day <= END:
        put_day(sink, "shopA", day, 20 if day == d(3, 10) else 200, pending=5 if day == d(3, 10)
                else 50)
        if day == d(3, 5):
            put_day(sink, "shopB", day, 120, pending=30, complete=False)
        elif day == d(3, 15):
            put_day(sink, "shopB", day, 100, metadata=False)
        elif day not in (d(3, 6), d(3, 7), d(3, 31)):
            put_day(sink, "shopB", day, 100, pending=100 if day == d(3, 20) else 0)
        day += dt.timedelta(days=1)
    put_day(sink, "shopB", START - dt.timedelta(days=1), 1)
    sink.put_bytes("runs/2025-03-01_2025-03-01/exec/summary.json", b"{}")


@pytest.fixture(autouse=True)
def reset_log_config() -> Iterator[None]:
    """status sets up logging in this process (to stderr); no test inherits it."""
    yield
    logs.reset_logging()
    logs.clear_secrets()


@dataclass
class Store:
    kind: str
    sink: Sink
    env: dict[str, str]


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The seeded store in a local folder or in a bucket of the GCS emulator; `env` points the
    job's settings at it (no API credentials at all)."""
    if request.param == "local":
        from app.sinks import LocalSink

        sink: Sink = LocalSink(tmp_path / "out")
        seed(sink)
        yield Store("local", sink, {"OUTPUT_DIR": str(tmp_path / "out")})
        return
    emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
    gcs = make_test_gcs_sink(emulator.host, emulator.bucket)
    try:
        seed(gcs)
        yield Store("gcs", gcs, {**emulator.env(), "OUTPUT_DIR": str(tmp_path / "unused")})
    finally:
        gcs.close()


def status(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`python -m app status ARGS` in this process (the clock at NOW): exit code and stdout."""
    out = io.StringIO()
    code = main(list(args), env, stdout=out, now=lambda: NOW)
    return code, out.getvalue()


def run_status(env: dict[str, str], *args: str, timeout: float = 60
               ) -> subprocess.CompletedProcess[str]:
    """`python -m app status ARGS` as a process, its output in a pipe."""
    full = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, "-m", "app", "status", *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=timeout)


# --- the volume check -----------------------------------------------------------------------


def test_volume_drop_is_under_a_fifth_of_the_median_of_seven_days_or_more() -> None:
    """Under a fifth of the median is a drop (the median is returned); a fifth exactly is not;
    with fewer than 7 reference days, or a median of 0, there is no verdict."""
    week = [250, 240, 260, 250, 1000, 10, 250]
    assert volume_drop(49, week) == 250
    assert volume_drop(0, week) == 250
    assert volume_drop(50, week) is None
    assert volume_drop(0, week[:6]) is None
    assert volume_drop(0, [0] * 7) is None


def test_date_prefixes_cover_the_range_in_few_listings() -> None:
    """Within two months: a prefix per month; longer: a prefix per year touched."""
    assert date_prefixes(d(3, 1), d(3, 14)) == ["2025-03-"]
    assert date_prefixes(d(2, 20), d(3, 5)) == ["2025-02-", "2025-03-"]
    assert date_prefixes(d(1, 1), d(3, 31)) == ["2025-"]
    assert date_prefixes(dt.date(2024, 12, 1), d(2, 1)) == ["2024-", "2025-"]
    assert date_prefixes(dt.date(2024, 12, 20), d(1, 3)) == ["2024-12-", "2025-01-"]


# --- JSON -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_json_has_the_contract_shape_and_every_day(store: Store) -> None:
    """--json: start/end, one entry per account and day with exactly the contract's keys, the
    states, records, pending counts, fetch times and flags the metadata says, and the totals;
    exit 3 because days are incomplete or missing."""
    code, out = status({**store.env, "END_DATE": END.isoformat()}, "--json")
    assert code == 3
    doc = json.loads(out)
    assert list(doc) == ["start_date", "end_date", "days", "complete", "incomplete", "missing"]
    assert (doc["start_date"], doc["end_date"]) == (START.isoformat(), END.isoformat())
    assert (doc["complete"], doc["incomplete"], doc["missing"]) == (65, 2, 3)
    days = {(e["account"], e["date"]): e for e in doc["days"]}
    assert len(doc["days"]) == len(days) == 2 * DEFAULT_DAYS
    assert [e["account"] for e in doc["days"]] == ["shopA"] * 35 + ["shopB"] * 35
    for entry in doc["days"]:
        assert list(entry) == ["account", "date", "state", "records", "pending", "fetched_at",
                               "execution", "flags"]
    fetched = dt.datetime.fromtimestamp(FETCHED, dt.UTC).isoformat(timespec="microseconds")
    assert days[("shopA", "2025-03-09")] == {
        "account": "shopA", "date": "2025-03-09", "state": "complete", "records": 200,
        "pending": 50, "fetched_at": fetched, "execution": "exec-shopA", "flags": []}
    assert days[("shopA", "2025-03-10")]["flags"] == ["low_volume"]
    assert days[("shopA", "2025-03-10")]["records"] == 20
    assert days[("shopB", "2025-03-05")] == {
        "account": "shopB", "date": "2025-03-05", "state": "incomplete", "records": 120,
        "pending": 30, "fetched_at": fetched, "execution": "exec-shopB", "flags": []}
    for missing in ("2025-03-06", "2025-03-07", "2025-03-31"):
        assert days[("shopB", missing)] == {
            "account": "shopB", "date": missing, "state": "missing", "records": None,
            "pending": None, "fetched_at": None, "execution": None, "flags": []}
    assert days[("shopB", "2025-03-15")]["state"] == "incomplete"
    assert days[("shopB", "2025-03-15")]["flags"] == ["no_metadata"]
    assert days[("shopB", "2025-03-20")]["pending"] == 100
    flagged = [k for k, e in days.items() if e["flags"]]
    assert flagged == [("shopA", "2025-03-10"), ("shopB", "2025-03-15")]


@pytest.mark.timeout(60)
def test_all_complete_exits_0(store: Store) -> None:
    """A range where every day of every account is complete exits 0 (low volume or pending
    records do not make a day incomplete)."""
    code, out = status(store.env, "--json", "--start-date", "2025-03-08", "--end-date",
                       "2025-03-14")
    assert code == 0
    doc = json.loads(out)
    assert (doc["complete"], doc["incomplete"], doc["missing"]) == (14, 0, 0)
    assert any(e["flags"] == ["low_volume"] for e in doc["days"])


# --- the table --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_table_shows_each_day_and_lists_the_problem_days_with_the_fix(store: Store) -> None:
    """One row per day with state, records, pending share and age; under each account the days
    to fix (incomplete, missing runs, low volume) and the backfill command for each run of them:
    deploy/backfill.sh for a bucket, the job with OUTPUT_DIR for a folder."""
    code, out = status({**store.env, "END_DATE": END.isoformat(), "LOG_LANGUAGE": "en"})
    assert code == 3
    assert not ANSI.search(out)  # not a terminal: no colour
    lines = out.splitlines()
    assert lines[0] == f"📦 Day store {store.sink.root}"
    assert lines[1].startswith("2025-02-25 → 2025-03-31, 35 days; now 2025-04-01 14:00")
    assert "Account shopA: 35 complete, 0 incomplete, 0 missing" in lines
    assert "Account shopB: 30 complete, 2 incomplete, 3 missing" in lines
    rows = [line.split() for line in lines if line.startswith("  2025-03-")]
    assert ["2025-03-09", "Sun", "complete", "200", "25.0%", "2d", "3h"] in rows
    assert ["2025-03-10", "Mon", "complete", "20", "25.0%", "2d", "3h", "low", "volume"] in rows
    assert ["2025-03-05", "Wed", "incomplete", "120", "25.0%", "2d", "3h"] in rows
    assert ["2025-03-06", "Thu", "missing", "—", "—", "—"] in rows
    assert ["2025-03-20", "Thu", "complete", "100", "100.0%", "2d", "3h"] in rows
    text = "\n".join(lines)
    shop_b = text[text.index("Account shopB"):]
    assert "    2025-03-05 incomplete: 120 records, fetched 2d 3h ago" in shop_b
    assert "    2025-03-06 → 2025-03-07 missing: no snapshot (2 days)" in shop_b
    assert "    2025-03-15: snapshot metadata unreadable, counted incomplete" in shop_b
    assert "    2025-03-31 missing: no snapshot" in shop_b
    shop_a = text[text.index("Account shopA"):text.index("Account shopB")]
    assert "    2025-03-10 low volume: 20 records, median 200" in shop_a
    assert "Low volume: under a fifth of the median" in shop_a
    if store.kind == "gcs":
        fixes = ["PROJECT=<project> deploy/backfill.sh 2025-03-05 2025-03-07",
                 "PROJECT=<project> deploy/backfill.sh 2025-03-15 2025-03-15",
                 "PROJECT=<project> deploy/backfill.sh 2025-03-31 2025-03-31"]
        assert "    PROJECT=<project> deploy/backfill.sh 2025-03-10 2025-03-10" in shop_a
    else:
        folder = store.env["OUTPUT_DIR"]
        fixes = [f"OUTPUT_DIR={folder} START_DATE={a} END_DATE={b} python -m app"
                 for a, b in [("2025-03-05", "2025-03-07"), ("2025-03-15", "2025-03-15"),
                              ("2025-03-31", "2025-03-31")]]
    after = shop_b[shop_b.index("To fetch them again:"):].splitlines()[1:4]
    assert [line.strip() for line in after] == fixes
    assert lines[-1] == "Total: 65 complete, 2 incomplete, 3 missing; exit code 3"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("language", ["zh", "en"])
def test_table_fits_80_columns_for_35_days(tmp_path: Path, language: str) -> None:
    """Every row of the 35-day table, its headings and its problem lines fit 80 terminal
    columns (CJK characters count two), in Chinese (the default) and English."""
    from app.sinks import LocalSink

    seed(LocalSink(tmp_path / "out"))
    code, out = status({"OUTPUT_DIR": str(tmp_path / "out"), "END_DATE": END.isoformat(),
                        "LOG_LANGUAGE": language})
    assert code == 3
    lines = out.splitlines()
    assert sum(1 for line in lines if line.startswith("  2025-")) == 2 * DEFAULT_DAYS
    # The title and the commands hold the folder's path, which varies.
    with_path = [line for line in lines if str(tmp_path) in line]
    assert len(with_path) == 1 + 4  # the title, a command for shopA, three for shopB
    too_wide = [line for line in lines if display_width(line) > 80 and line not in with_path]
    assert too_wide == []
    if language == "zh":
        assert "账户 shopB：完整30天，不完整2天，缺失3天" in lines
        assert any(line.split()[1:4] == ["周一", "完整", "20"] and "记录骤减" in line
                   for line in lines)


@pytest.mark.timeout(60)
def test_no_colour_in_a_pipe_colour_on_a_terminal(tmp_path: Path) -> None:
    """The real entry point: piped, the table has no escape codes; on a terminal (a pty) the
    states are coloured; NO_COLOR turns colour off there too."""
    from app.sinks import LocalSink

    seed(LocalSink(tmp_path / "out"))
    env = {"OUTPUT_DIR": str(tmp_path / "out"), "LOG_LANGUAGE": "en", "HOME": str(tmp_path)}
    args = ("--start-date", "2025-03-04", "--end-date", "2025-03-06")
    piped = run_status(env, *args)
    assert piped.returncode == 3, piped.stderr
    assert "incomplete" in piped.stdout and not ANSI.search(piped.stdout)

    def on_terminal(extra: dict[str, str]) -> tuple[int, str]:
        primary, secondary = os.openpty()
        full = {"PATH": os.environ.get("PATH", ""), **env, **extra}
        proc = subprocess.Popen([sys.executable, "-m", "app", "status", *args], cwd=REPO,
                                env=full, stdout=secondary, stderr=subprocess.DEVNULL)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(primary)
        return proc.wait(timeout=60), b"".join(chunks).decode()

    code, shown = on_terminal({})
    assert code == 3
    assert "\x1b[33mincomplete" in shown and "\x1b[31mmissing" in shown
    assert "\x1b[32mcomplete" in shown
    code, plain = on_terminal({"NO_COLOR": "1"})
    assert code == 3 and not ANSI.search(plain) and "incomplete" in plain


# --- the entry point: settings, storage, requests ---------------------------------------------


@pytest.mark.timeout(60)
def test_bad_settings_exit_2_like_the_job(tmp_path: Path) -> None:
    """A date after today or a bad bucket name exits 2 with the job's config_invalid entry (on
    stderr: stdout stays empty for scripts); GCS_BUCKET with a credentials file that does not
    exist exits 2 naming GOOGLE_APPLICATION_CREDENTIALS, as the job does."""
    future = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    home = tmp_path / "home"
    home.mkdir()
    base = {"OUTPUT_DIR": str(tmp_path / "out"), "LOG_FORMAT": "json", "HOME": str(home),
            "NO_GCE_CHECK": "True"}
    for extra, args, variable in [({}, ("--end-date", future), "END_DATE"),
                                  ({"GCS_BUCKET": "My_Bucket!!"}, ("--json",), "GCS_BUCKET")]:
        run = run_status({**base, **extra}, *args)
        assert run.returncode == 2, run.stderr
        assert run.stdout == ""
        entries = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
        (entry,) = [e for e in entries if e.get("event") == "config_invalid"]
        assert entry["variable"] == variable
    run = run_status({**base, "GCS_BUCKET": "some-valid-name",
                      "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")}, "--json")
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    entries = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert [(e["event"], e["variable"]) for e in entries] == [
        ("config_invalid", "GOOGLE_APPLICATION_CREDENTIALS")]


@pytest.mark.timeout(90)
def test_status_of_a_store_the_job_wrote_asks_the_api_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    """After a real job run, status (with the job's whole environment, API settings included)
    shows its days complete with the pending counts of their snapshots, exits 0, and sends the
    API no request."""
    out = tmp_path / "out"
    env = job_env(simulator.base_url, "2025-01-02", "2025-01-03", OUTPUT_DIR=str(out))
    assert run_job(env).code == 0
    requests = len(simulator.ledger)
    run = run_status(env, "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert (doc["complete"], doc["incomplete"], doc["missing"]) == (2, 0, 0)
    for entry in doc["days"]:
        records = [json.loads(line) for line in gzip.decompress(
            (out / "days" / "account=default" / f"date={entry['date']}" /
             "conversions.ndjson.gz").read_bytes()).splitlines()]
        assert entry["account"] == "default" and entry["records"] == len(records) > 0
        assert entry["pending"] == sum(r["conversion_status"] == "pending" for r in records)
    assert len(simulator.ledger) == requests


@pytest.mark.timeout(90)
def test_storage_requests_are_one_listing_per_account_and_month(
    gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    """Against GCS status lists, never stats or downloads: the job's probe plus, with accounts
    configured, one listing per account and month of a 35-day range (two months here); without
    accounts configured, one listing of days/. Either way the answer is the same."""
    sink = make_test_gcs_sink(gcs_emulator.host, gcs_emulator.bucket)
    try:
        seed(sink)
    finally:
        sink.close()
    accounts = json.dumps([{"name": n, "key": "general", "secret": f"made-up-{n}"}
                           for n in ("shopA", "shopB")])
    answers = []
    for extra, expected in [({"INVOLVE_ASIA_ACCOUNTS": accounts}, 1 + 2 * 2), ({}, 1 + 1)]:
        with FaultProxy(gcs_emulator.host) as proxy:
            env = {"GCS_BUCKET": gcs_emulator.bucket, "STORAGE_EMULATOR_HOST": proxy.url,
                   "END_DATE": END.isoformat(), "OUTPUT_DIR": str(tmp_path / "unused"), **extra}
            run = run_status(env, "--json")
            assert run.returncode == 3, run.stderr
            assert [e.category for e in proxy.events] == ["list"] * expected
        answers.append(json.loads(run.stdout))
    assert answers[0] == answers[1]


@pytest.mark.timeout(60)
def test_an_empty_store_shows_the_default_account_missing(tmp_path: Path) -> None:
    """Nothing configured and nothing stored: the job's default account, every day of the
    default range (the 35 days up to yesterday in TIMEZONE, whatever DEFAULT_DATE_RANGE says)
    missing, exit 3 (an empty store is not a complete one)."""
    code, out = status({"OUTPUT_DIR": str(tmp_path / "out"), "DEFAULT_DATE_RANGE": "1",
                        "TIMEZONE": "Asia/Shanghai"}, "--json")
    assert code == 3
    doc = json.loads(out)
    yesterday = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date() - dt.timedelta(days=1)
    assert doc["end_date"] == yesterday.isoformat()
    assert doc["start_date"] == (yesterday - dt.timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    assert {e["account"] for e in doc["days"]} == {"default"}
    assert (doc["complete"], doc["incomplete"], doc["missing"]) == (0, 0, DEFAULT_DAYS)



@pytest.mark.timeout(60)
def test_the_readme_example_is_real_output(tmp_path: Path) -> None:
    """The table in README "Status: the store at a glance" is what status prints for its store
    (one account, 10 days: incomplete, missing, low volume), the folder shown as /srv/output."""
    from app.sinks import LocalSink

    root = tmp_path / "output"
    sink = LocalSink(root)
    for n in range(1, 11):
        if n == 5:
            put_day(sink, "shopB", d(3, n), 120, pending=30, complete=False)
        elif n not in (6, 7):
            put_day(sink, "shopB", d(3, n), 12 if n == 9 else 100, pending=25 if n == 10 else 0)
    code, out = status({"OUTPUT_DIR": str(root), "LOG_LANGUAGE": "en"},
                       "--start-date", "2025-03-01", "--end-date", "2025-03-10")
    assert code == 3
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Status: the store at a glance"):]
    example = section[section.index("📦"):section.index("```", section.index("📦"))]
    assert out.replace(str(root), "/srv/output") == example


@pytest.mark.timeout(60)
def test_a_bucket_that_does_not_exist_exits_2_naming_gcs_bucket(gcs_emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """status opens storage as the job does: a GCS_BUCKET that does not exist exits 2 with the
    job's storage_config_invalid entry naming GCS_BUCKET, and prints no table."""
    home = tmp_path / "home"
    home.mkdir()
    run = run_status({"GCS_BUCKET": "no-such-bucket-here", "STORAGE_EMULATOR_HOST": gcs_emulator.host,
                      "LOG_FORMAT": "json", "HOME": str(home), "NO_GCE_CHECK": "True"}, "--json")
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    entries = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    (entry,) = [e for e in entries if e.get("event") == "storage_config_invalid"]
    assert entry["variable"] == "GCS_BUCKET"
