"""What a run says about itself: request counts, progress lines, pacing, trouble reports."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from structlog.testing import capture_logs

from app import logs
from app.config import load_settings
from app.job import Job
from app.progress import Progress
from app.reports import render_resource_line
from app.resources import ResourceMonitor
from app.simulator import Fault, SimAccount
from app.sinks import make_sink
from app.watchdog import Watchdog
from tests.support.jobrun import job_env, read_summary, run_job

START, END = "2025-02-01", "2025-02-02"


@pytest.fixture(autouse=True)
def reset_log_config() -> Iterator[None]:
    """Each test starts and ends with no log handler and structlog defaults."""
    logs.reset_logging()
    yield
    logs.reset_logging()

DAYS = [dt.date(2025, 2, 1), dt.date(2025, 2, 2)]


@pytest.mark.timeout(120)
def test_summary_requests_count_every_request_the_api_saw(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`requests` is every request the API saw: pages, a retry, a page repeated after its token
    was rejected, and the authentications, which `auth_requests` counts apart."""
    sim = make_simulator(records_per_day=300, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_502", date=DAYS[0].isoformat(), page=2, attempts={1}))
    sim.add_fault(Fault(kind="token_revoked", date=DAYS[1].isoformat(), page=2, attempts={1}))
    run = run_job(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                          CLOUD_RUN_EXECUTION="e1"))
    assert run.code == 0, run.stderr[-2000:]
    summary = read_summary(tmp_path, START, END, "e1")
    ledger = sim.ledger.snapshot()
    auth = [e for e in ledger if e.endpoint == "authenticate"]
    assert len(auth) == 2  # the first sign-in, and the one after the token was revoked
    assert summary["pages"] == 6
    # 6 pages, a retry, 2 sign-ins, and each page whose token the revocation caught in flight
    # sent again (1 or more: the day's pages go 4 at a time)
    assert summary["requests"] == len(ledger) >= 6 + 1 + 2 + 1
    assert summary["auth_requests"] == 2
    (final,) = run.named("run_summary")
    assert (final["requests"], final["auth_requests"]) == (len(ledger), 2)
    assert f"{len(ledger)} (2 to authenticate)" in final["message"]


# -- progress lines ----------------------------------------------------------------------------


class Clock:
    """A settable clock for Progress."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_account_line_gives_its_own_rate_and_eta_and_the_run_its_own() -> None:
    """Two accounts side by side, one page a second and one every three: each line has its
    account's own pages/min and ETAs; the run's rate is their sum, its ETA the slower one's."""
    clock = Clock()
    progress = Progress(clock=clock)
    progress.plan("fast", 2)
    progress.plan("slow", 2)
    for second in range(1, 31):
        clock.now += 1
        progress.page_done("fast", "d1", second, 60)
        if second % 3 == 0:
            progress.page_done("slow", "d1", second // 3, 20)
    fast, slow = progress.line("fast", "d1"), progress.line("slow", "d1")
    assert (fast["rate"], slow["rate"], fast["run_rate"]) == (60.0, 20.0, 80.0)
    assert (fast["pages_done"], fast["pages"], fast["percent"]) == (30, 60, 50.0)
    assert fast["eta_seconds"] == 30.0 and slow["eta_seconds"] == 30.0
    # the day not sized yet counts as the account's mean: 60 + 30 pages left at 60/min
    assert fast["account_eta_seconds"] == 90.0 and slow["account_eta_seconds"] == 90.0
    assert fast["run_eta_seconds"] == slow["run_eta_seconds"] == 90.0
    assert fast["run_percent"] == slow["run_percent"] == round(100 * 40 / 160, 1)


def test_the_rate_is_the_last_minutes_pace() -> None:
    """After a minute at 60 pages/min and a quiet half minute, the rate says 30 pages/min."""
    clock = Clock()
    progress = Progress(clock=clock)
    progress.plan("acme", 1)
    for page in range(1, 61):
        clock.now += 1
        progress.page_done("acme", "d1", page, 100)
    assert progress.line("acme", "d1")["rate"] == 60.0
    clock.now += 30
    assert progress.line("acme", "d1")["rate"] == 30.0


def test_day_percentages_count_pages_done_never_the_page_number() -> None:
    """Pages land 1, 3, 4, 5 and then 2 (retried), one fetched twice, and the count grows from
    5 to 6 pages: the percentage is pages done of the day, never goes back, ends at 100."""
    clock = Clock()
    progress = Progress(clock=clock)
    progress.plan("acme", 1)
    seen: list[tuple[int, float, bool]] = []
    for page, pages in ((1, 5), (3, 5), (4, 5), (4, 5), (5, 5), (2, 6), (6, 6)):
        clock.now += 1
        done, finished = progress.page_done("acme", "d1", page, pages)
        line = progress.line("acme", "d1")
        assert line["pages_done"] == done
        seen.append((done, line["percent"], finished))
    assert seen == [(1, 20.0, False), (2, 40.0, False), (3, 60.0, False), (3, 60.0, False),
                    (4, 80.0, False), (5, 83.3, False), (6, 100.0, True)]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_accounts_progress_lines_tell_each_accounts_real_rate(make_simulator,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    """A 2-account run, one account throttled at 600 pages/min, the other held to ~200 by slow
    answers, a page of the first retried: every progress line gives its account's own rate
    within 10 % of the rate the simulator saw it fetch at; page percentages are pages done of
    the day and never go backwards."""
    accounts = [SimAccount(name="quick", key="general", secret="made-up-1"),  # pragma: allowlist secret
                SimAccount(name="slow", key="general", secret="made-up-2")]  # pragma: allowlist secret
    sim = make_simulator(accounts=accounts, records_per_day=2000, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="latency", account="slow", params={"seconds": 0.3}))
    sim.add_fault(Fault(kind="http_502", account="quick", date=DAYS[0].isoformat(), page=3,
                        attempts={1}))
    env = job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path), CLOUD_RUN_EXECUTION="e1",
                  REQUESTS_PER_MINUTE="600", REQUEST_DELAY="0", FETCH_CONCURRENCY="1",
                  INVOLVE_ASIA_ACCOUNTS=json.dumps([{"name": a.name, "key": a.key,
                                                     "secret": a.secret} for a in accounts]))
    run = run_job(env)
    assert run.code == 0, run.stderr[-2000:]
    assert len(run.named("page_retry")) == 1
    answered: dict[str, list[float]] = {}  # when the simulator answered each page, in order
    for account in ("quick", "slow"):
        answered[account] = sorted(e.finished for e in sim.ledger.snapshot()
                                   if e.account == account and e.endpoint == "range"
                                   and e.outcome == "ok")
        assert len(answered[account]) == 40

    def real_rate(account: str, pages: int) -> float:
        """Pages per minute the simulator saw the account fetch its first `pages` pages at."""
        times = answered[account][:pages]
        return 60 * (len(times) - 1) / (times[-1] - times[0])

    assert real_rate("quick", 40) > 2 * real_rate("slow", 40)  # the two paces really differ
    fetched = {"quick": 0, "slow": 0}
    by_day: dict[tuple[str, str], list[dict[str, Any]]] = {}
    lines = []
    for event in run.events():  # in the order logged: a line follows the pages it counts
        if event.get("event") == "page_fetched":
            fetched[event["account"]] += 1
        if event.get("event") != "progress":
            continue
        line, account = event, event["account"]
        real = real_rate(account, fetched[account])
        assert abs(line["rate"] - real) <= 0.1 * real, (line, real)
        assert line["run_rate"] >= line["rate"]
        assert line["percent"] == round(100 * line["pages_done"] / line["pages"], 1), line
        by_day.setdefault((account, line["date"]), []).append(line)
        lines.append(line)
    assert sorted(by_day) == [(a, d.isoformat()) for a in ("quick", "slow") for d in DAYS]
    for day_lines in by_day.values():
        assert [line["pages_done"] for line in day_lines] == [10, 20]
        assert [line["percent"] for line in day_lines] == [50.0, 100.0]
    run_percents = [line["run_percent"] for line in lines]
    assert run_percents == sorted(run_percents) and run_percents[-1] == 100.0


# -- retries and skips: the diagnosis, off the fetch workers -----------------------------------


class ThreadNotingProcess(psutil.Process):
    """psutil's handle on this process, noting which thread reads its memory: the first field
    of every resource snapshot."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def memory_info(self) -> Any:
        self.threads.append(threading.current_thread().name)
        return super().memory_info()


RETRY = {"account": "acme", "date": "2025-01-01", "page": 3, "attempt": 1,
         "error_class": "timeout", "error": "read timed out", "duration_ms": 2000,
         "pacing_ms": 0, "wait_ms": 0}  # fmt: skip


def test_retry_diagnoses_are_one_line_at_most_one_per_account_per_interval() -> None:
    """Many retries of two accounts at once: one INFO line each, with the resources; more
    retries within RESOURCE_REPORT_INTERVAL add none (the next line counts them); a skip always
    gets the full multi-line report at ERROR."""
    logs.configure_logging(fmt="json", language="en", labels={}, stream=io.StringIO())
    clock = Clock()
    monitor = ResourceMonitor(output_dir=None, api_url=None, clock=clock)
    dog = Watchdog(monitor=monitor, log=logs.get_logger(), stall_timeout=10_000,
                   report_interval=60, clock=clock)
    with capture_logs() as captured:
        for _ in range(5):
            dog.trouble("retry", "acme p3 retry", RETRY)
            dog.trouble("retry", "shop p3 retry", {**RETRY, "account": "shop"})
        dog.report_troubles()
        clock.now += 59
        dog.trouble("retry", "acme p3 retry", RETRY)
        dog.report_troubles()
        assert len(captured) == 2
        clock.now += 1
        dog.trouble("retry", "acme p4 retry", {**RETRY, "page": 4})
        dog.trouble("skip", "acme p3 skipped", {**RETRY, "attempt": 6})
        dog.trouble("skip", "acme p5 skipped", {**RETRY, "page": 5, "attempt": 6})
        dog.report_troubles()
    retries = [e for e in captured if e.get("kind") == "retry"]
    assert [(e["account"], e["retries_unreported"]) for e in retries] == [
        ("acme", 0), ("shop", 0), ("acme", 5)]
    for entry in retries:
        assert entry["event"] == "resource_report" and entry["log_level"] == "info"
        assert "\n" not in entry["message"] and entry["message"].startswith("📊 Resource report")
        assert {"memory", "cpu", "connections", "api_connectivity"} <= set(entry)
    assert retries[-1]["page"] == 4
    assert "5 more retries of this account" in retries[-1]["message"]
    skips = [e for e in captured if e.get("kind") == "skip"]
    assert [e["title"] for e in skips] == ["acme p3 skipped", "acme p5 skipped"]
    for entry in skips:
        assert entry["log_level"] == "error" and entry["message"].count("\n") >= 6


def test_a_retry_diagnosis_line_is_wholly_chinese_by_default() -> None:
    """The one-line diagnosis in Chinese: title, the four fields, the retries it stood for."""
    snap = ResourceMonitor(output_dir=None, api_url=None).snapshot()
    line = render_resource_line("[acme] 2025-01-01 第3页超时重试1", snap, "zh", 2)
    assert line.startswith("📊 资源报告 · [acme] 2025-01-01 第3页超时重试1：内存 RSS ")
    assert "CPU 进程 " in line and "网络连接 已建立 " in line and "API连通性 未配置" in line
    assert line.endswith("（该账户上次报告后另有2次重试）") and "\n" not in line


@pytest.mark.timeout(120)
def test_no_resource_snapshot_runs_on_a_fetch_worker(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A run with retries and a skipped page: every resource snapshot (retry diagnoses, the
    skip's report, the final one) is taken off the fetch workers, on the watchdog's thread or
    the main one; the retries give at most one line per account (RESOURCE_REPORT_INTERVAL 30 s),
    each skip (main pass, second pass) its full report, the summary its final resources."""
    sim = make_simulator(records_per_day=600, rate_limit_per_minute=None)
    for page in (2, 3, 4):
        sim.add_fault(Fault(kind="http_502", date=DAYS[0].isoformat(), page=page, attempts={1}))
    sim.add_fault(Fault(kind="http_500", date=DAYS[1].isoformat(), page=2,
                        attempts=set(range(1, 20))))
    settings = load_settings(job_env(sim.base_url, START, END, OUTPUT_DIR=str(tmp_path),
                                     CLOUD_RUN_EXECUTION="e1", RESOURCE_REPORT_INTERVAL="30"))
    process = ThreadNotingProcess()
    monitor = ResourceMonitor(output_dir=settings.output_dir, api_url=settings.base_url,
                              process=process)
    sink = make_sink(bucket=None, prefix="", output_dir=settings.output_dir)
    with capture_logs() as captured:
        result = Job(settings, sink=sink, monitor=monitor).run()
    assert result.summary["skipped_pages"] and result.summary["retries"]["http_status"] >= 3 + 12
    reports = [e for e in captured if e["event"] == "resource_report"]
    retry_lines = [e for e in reports if e.get("kind") == "retry"]
    assert len(retry_lines) == 1 and retry_lines[0]["log_level"] == "info"
    assert "\n" not in retry_lines[0]["message"]
    skip_reports = [e for e in reports if e.get("kind") == "skip"]
    skipped = [e for e in captured if e["event"] == "page_skipped"]  # in each pass
    assert len(skip_reports) == len(skipped) == 2
    assert all(e["log_level"] == "error" and e["message"].count("\n") >= 6 for e in skip_reports)
    assert result.summary["resources"]["memory"]["rss_bytes"] > 0
    assert process.threads and set(process.threads) <= {"stall-watchdog", "MainThread"}, (
        process.threads)
    assert "stall-watchdog" in process.threads
