"""The original module, drop-in, tested as its host program uses it.

`tests/host_program` is a small host in WeeklyReporter's shape: a `config.py` of module
constants, `modules/involve_asia_api.py` holding only `from app.involve_asia import *`, an async
sibling importing `ResourceMonitor`, and a `main.py` in the original calling style with its own
logging format and a `--limit N` flag. Each test copies it, appends its own values to the copied
`config.py` (as a user edits it), and runs `main.py` in a subprocess (cwd = the host folder)
against the simulator. Nothing in the host's environment names the API or the account: what
the client gets, it gets from the host's config. Only the back-off waits and the client-side
throttle come from the environment (the original had neither as a config constant), which also
shows the environment filling what the config lacks.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.config import InvalidSetting
from app.involve_asia import InvolveAsiaAPI, ResourceMonitor, load_host_settings
from app.reports import render_original_resource_report
from app.simulator import Fault, SimAccount, Simulator

REPO = Path(__file__).resolve().parents[1]
HOST = Path(__file__).resolve().parent / "host_program"
RULE = "=" * 60

ENV = {"RETRY_BACKOFF": "0.01,0.02,0.03,0.04,0.06", "REQUESTS_PER_MINUTE": "100000"}
"""Not in the original's config: from the environment."""
FAST = {"REQUEST_DELAY": 0, "RATE_LIMIT_DELAY": 0.05, "REQUEST_TIMEOUT": 5}
"""The host's config made quick for a test (its own values are 0.5 s, 30 s, 30 s)."""


@dataclass
class HostRun:
    code: int
    stdout: list[str]
    stderr: list[str]

    def tag(self, name: str) -> Any:
        """The value main.py tagged `@@NAME` (exactly one such line)."""
        found = [line for line in self.stdout if line.startswith(f"@@{name} ")]
        assert len(found) == 1, (name, self.stdout, self.stderr)
        return json.loads(found[0].split(" ", 1)[1])

    @property
    def lines(self) -> list[str]:
        return self.stdout + self.stderr


def make_host(tmp_path: Path, url: str | None, **config: object) -> Path:
    """A copy of the host program whose config.py points at `url` and holds `config`."""
    host = tmp_path / "host"
    shutil.copytree(HOST, host, ignore=shutil.ignore_patterns("__pycache__"))
    lines = ["", "# the test's values"]
    if url is not None:
        lines += [f"INVOLVE_ASIA_BASE_URL = {url!r}",
                  'INVOLVE_ASIA_AUTH_URL = f"{INVOLVE_ASIA_BASE_URL}/authenticate"',
                  'INVOLVE_ASIA_CONVERSIONS_URL = f"{INVOLVE_ASIA_BASE_URL}/conversions/range"']
    lines += [f"{name} = {value!r}" for name, value in {**FAST, **config}.items()]
    with (host / "config.py").open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return host


def run_host(host: Path, *args: str, timeout: float = 90, **env: str) -> HostRun:
    """`python main.py ARGS` in `host`, with a clean environment (the repo on PYTHONPATH)."""
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1", **ENV}
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=host, env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)
    run = HostRun(proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines())
    assert run.code == 0, "\n".join(run.lines)
    return run


def range_requests(sim: Simulator) -> list[Any]:
    return [e for e in sim.ledger.snapshot() if e.endpoint == "range"]


# -- 1. the host's config is read ---------------------------------------------------------------


@pytest.mark.timeout(90)
def test_host_config_points_the_client_at_its_api_account_dates_currency_and_files(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The host's config alone names the API (its endpoint URLs win over its base URL, as in
    the original), the key and secret, the request settings (the client's attributes), the
    currency (over the environment's), the page size, the default dates (the range fetched is
    the range the host names its files by) and OUTPUT_DIR, created only when saving."""
    sim = make_simulator(accounts=[SimAccount("shop", "cfg-key", "cfg-secret", currency="SGD")],
                         records_per_day=90, rate_limit_per_minute=None)
    host = make_host(tmp_path, None,
                     INVOLVE_ASIA_API_KEY="cfg-key", INVOLVE_ASIA_API_SECRET="cfg-secret",
                     INVOLVE_ASIA_AUTH_URL=f"{sim.base_url}/authenticate",
                     INVOLVE_ASIA_CONVERSIONS_URL=f"{sim.base_url}/conversions/range",
                     PREFERRED_CURRENCY="MYR", DEFAULT_PAGE_LIMIT=40,
                     DEFAULT_START_DATE="2025-01-02", DEFAULT_END_DATE="2025-01-02",
                     OUTPUT_DIR="reports", REQUEST_TIMEOUT=7, MAX_RETRY_ATTEMPTS=3,
                     REQUEST_DELAY=0.01)
    run = run_host(host, "--default-range", PREFERRED_CURRENCY="USD")
    assert run.tag("VALUES") == {
        "auth_url": f"{sim.base_url}/authenticate",
        "conversions_url": f"{sim.base_url}/conversions/range",
        "api_key": "cfg-key", "token": None, "request_timeout": 7.0, "max_retries": 3,
        "request_delay": 0.01, "skipped_pages": []}
    assert run.tag("AUTH") is True and run.tag("TOKEN_SET") is True
    sent = range_requests(sim)
    assert {(e.start_date, e.end_date, e.limit, e.preferred_currency) for e in sent} == {
        ("2025-01-02", "2025-01-02", 40, "MYR")}
    assert len(sent) == 3
    assert run.tag("RESULT") == {"limit": 40, "count": 90, "total_pages": 3, "pages_fetched": 3,
                                 "skipped_pages": [], "current_page_count": 90}
    assert set(run.tag("IDS")) == sim.expected_ids("shop", "2025-01-02", "2025-01-02")
    assert run.tag("CURRENCIES") == ["MYR"]
    assert run.tag("OUTPUT_BEFORE_SAVE") is False
    saved = run.tag("SAVED")
    assert saved.startswith("reports/") and (host / saved).is_file()
    assert not (host / "output").exists()  # the job's default folder was never made
    assert "cfg-secret" not in "\n".join(run.lines)


@pytest.mark.timeout(90)
def test_host_config_sets_retries_waits_timeout_spacing_and_the_skip_cap(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """MAX_RETRY_ATTEMPTS=2: a dead page is tried 3 times; MAX_SKIPPED_PAGES=0: its skip stops
    the fetch (no later page, no second pass); RATE_LIMIT_DELAY: the wait after a 429 without
    Retry-After; REQUEST_TIMEOUT=1: a silent page is abandoned after 1 s; REQUEST_DELAY: the
    spacing of requests. skipped_pages holds page numbers."""
    sim = make_simulator(records_per_day=500, rate_limit_per_minute=None)
    day = "2025-01-02"
    sim.add_fault(Fault(kind="rate_limit_no_header", date=day, page=2, attempts={1}))
    sim.add_fault(Fault(kind="no_answer", date=day, page=3, attempts={1}))
    sim.add_fault(Fault(kind="http_500", date=day, page=4))
    host = make_host(tmp_path, sim.base_url, MAX_RETRY_ATTEMPTS=2, MAX_SKIPPED_PAGES=0,
                     RATE_LIMIT_DELAY=0.6, REQUEST_TIMEOUT=1, REQUEST_DELAY=0.15)
    run = run_host(host, "--start", day, "--end", day)
    sent = range_requests(sim)
    by_page: dict[int, list[Any]] = {}
    for entry in sent:
        by_page.setdefault(entry.page, []).append(entry)
    assert len(by_page[4]) == 3  # 1 try + MAX_RETRY_ATTEMPTS, and no second pass
    assert 5 not in by_page  # the skip cap stopped the fetch
    assert run.tag("RESULT")["skipped_pages"] == [4]
    assert run.tag("RESULT")["current_page_count"] == 300
    assert run.tag("SKIPPED") == [4]
    first, second = by_page[2]
    # server-side times: a few ms of scheduling either way; the test's own defaults would
    # give 0.05 s after the 429 and 5 s for the silent page
    assert 0.55 <= second.started - first.started < 4.0  # RATE_LIMIT_DELAY (+ jitter)
    silent, again = by_page[3]
    assert silent.outcome == "no_answer"
    assert 0.9 <= again.started - silent.started < 4.0  # REQUEST_TIMEOUT
    starts = sorted(e.started for e in sim.ledger.snapshot())
    assert statistics.median(b - a for a, b in itertools.pairwise(starts)) >= 0.13  # REQUEST_DELAY
    assert any("skip_cap" in line or "超过上限 0" in line for line in run.lines)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("where", ["flag", "environment"])
def test_max_records_limit_stops_at_150_records_from_2_pages(make_simulator, tmp_path: Path,
                                                            where: str) -> None:  # type: ignore[no-untyped-def]
    """MAX_RECORDS_LIMIT=150, set by the host's --limit after its imports or from the
    environment when the config has none: 150 records of 6,000, from 2 page requests."""
    sim = make_simulator(records_per_day=3000, rate_limit_per_minute=None)
    host = make_host(tmp_path, sim.base_url)
    args = ["--start", "2025-01-01", "--end", "2025-01-02"]
    run = (run_host(host, *args, "--limit", "150") if where == "flag"
           else run_host(host, *args, MAX_RECORDS_LIMIT="150"))
    result = run.tag("RESULT")
    assert (result["count"], result["current_page_count"], result["pages_fetched"]) == (6000, 150, 2)
    ids = run.tag("IDS")
    assert len(ids) == len(set(ids)) == 150
    assert len(range_requests(sim)) == 2


@pytest.mark.timeout(180)
def test_host_under_10_percent_faults_gets_every_record(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """10 % transient faults (and an empty page, where the original stopped): the host still
    gets all 6,000 records, each once, no page skipped."""
    sim = make_simulator(records_per_day=3000, fault_rate=0.1, seed=7, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="empty_page", date="2025-01-01", page=7, attempts={1}))
    host = make_host(tmp_path, sim.base_url)
    run = run_host(host, "--start", "2025-01-01", "--end", "2025-01-02", timeout=150)
    ids = run.tag("IDS")
    assert len(ids) == len(set(ids)) == 6000
    assert set(ids) == sim.expected_ids("default", "2025-01-01", "2025-01-02")
    assert run.tag("RESULT")["skipped_pages"] == [] and run.tag("SKIPPED") == []
    faults = [e for e in range_requests(sim) if e.outcome != "ok"]
    assert len(faults) >= 3 and "empty_page" in {e.outcome for e in faults}


# -- 3. no credentials --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_client_without_credentials_is_built_and_authenticate_says_why(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No secret anywhere (config None, no environment): InvolveAsiaAPI() is built, as the host
    does to test its other parts; authenticate() is False with a line saying why;
    get_conversions gives None; nothing is sent."""
    sim = make_simulator(rate_limit_per_minute=None)
    host = make_host(tmp_path, sim.base_url, INVOLVE_ASIA_API_SECRET=None)
    run = run_host(host, "--start", "2025-01-02", "--end", "2025-01-02", LOG_LANGUAGE="en")
    assert run.tag("AUTH") is False
    assert run.tag("RESULT") is None
    assert len(sim.ledger) == 0
    why = [line for line in run.lines if "has no API secret" in line]
    assert len(why) == 1 and why[0].startswith("HOST|ERROR|app|")


@pytest.mark.timeout(90)
def test_constructor_credentials_win_over_the_config(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """api_secret / api_key given to the constructor win over the config's (then the config,
    then the environment)."""
    sim = make_simulator(records_per_day=20, rate_limit_per_minute=None)
    host = make_host(tmp_path, sim.base_url, INVOLVE_ASIA_API_SECRET="not-the-secret",
                     INVOLVE_ASIA_API_KEY="not-the-key")
    run = run_host(host, "--start", "2025-01-02", "--end", "2025-01-02",
                   "--secret", "demo-secret", "--key", "general",
                   INVOLVE_ASIA_API_SECRET="also-wrong")
    assert run.tag("AUTH") is True and run.tag("RESULT")["current_page_count"] == 20


# -- 4. ResourceMonitor -------------------------------------------------------------------------


ZH_REPORT = [
    "", RULE, "🔍 第15页超时重试2 系统资源监控报告", RULE,
    r"⏱️  运行时间: \d+h \d+m \d+s",
    r"💾 内存使用: \d+\.\dMB \(RSS\), \d+\.\dMB \(VMS\), \d+\.\d%",
    r"⚡ CPU使用: 进程 \d+\.\d%, 系统 \d+\.\d% \(共\d+核\)",
    r"🌐 网络连接: \d+/\d+ \(已建立/总数\)",
    "🌐 网络连通性: ✅ 正常",
    r"💿 磁盘使用: \d+\.\dGB/\d+\.\dGB \(\d+\.\d%\)",
    r"📄 JSON文件: 1 个文件, 总大小 0\.1MB",
    "   详细信息:",
    r"     - conversions_20250101_143022\.json: 0\.1MB",
    RULE, "",
]
EN_REPORT = [
    "", RULE, "🔍 第15页超时重试2 System resource report", RULE,
    r"⏱️  Runtime: \d+h \d+m \d+s",
    r"💾 Memory: \d+\.\dMB \(RSS\), \d+\.\dMB \(VMS\), \d+\.\d%",
    r"⚡ CPU: process \d+\.\d%, system \d+\.\d% \(\d+ cores\)",
    r"🌐 Network connections: \d+/\d+ \(established/total\)",
    "🌐 Connectivity: ✅ OK",
    r"💿 Disk: \d+\.\dGB/\d+\.\dGB \(\d+\.\d%\)",
    r"📄 JSON files: 1 files, 0\.1MB in total",
    "   Details:",
    r"     - conversions_20250101_143022\.json: 0\.1MB",
    RULE, "",
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("language", "expected"), [("zh", ZH_REPORT), ("en", EN_REPORT)])
def test_the_async_sibling_imports_resource_monitor_and_prints_the_original_report(
        make_simulator, tmp_path: Path, language: str, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    """`from modules.involve_asia_api import ResourceMonitor` works: the host's async module
    loads (its --performance-test runs), print_resource_status("第15页超时重试2") prints the
    original's report, in Chinese by default and English with LOG_LANGUAGE=en, connectivity
    checked against the host config's API, and get_runtime_info() answers."""
    sim = make_simulator(rate_limit_per_minute=None)
    host = make_host(tmp_path, sim.base_url)
    (host / "output").mkdir()
    (host / "output" / "conversions_20250101_143022.json").write_bytes(b"[]" + b" " * 120_000)
    (host / "output" / "notes.txt").write_text("not JSON")
    env = {"LOG_LANGUAGE": "en"} if language == "en" else {}
    run = run_host(host, "--performance-test", **env)
    assert "async module not installed" not in run.lines
    start = run.stdout.index(RULE) - 1
    block = run.stdout[start:start + len(expected)]
    assert len(block) == len(expected)
    for line, pattern in zip(block, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    runtime = run.tag("RUNTIME")
    assert re.fullmatch(r"0h 0m \d+s", runtime["runtime_formatted"])
    assert 0 <= runtime["runtime_seconds"] < 60


def test_the_original_report_renders_as_the_original_printed_it() -> None:
    """The documented report, line for line, from the original monitor's readings; a reading
    that failed says so in its line."""
    status = {
        "runtime": {"runtime_seconds": 1530.0, "runtime_formatted": "0h 25m 30s"},
        "memory": {"rss": 1024.5, "vms": 1536.2, "percent": 15.2},
        "cpu": {"process_cpu": 25.3, "system_cpu": 45.1, "cpu_count": 8},
        "network": {"total_connections": 25, "established_connections": 12},
        "connectivity": True,
        "disk": {"total": 10.0, "used": 2.1, "free": 7.9, "percent": 21.0},
        "json_files": {"count": 2, "total_size_mb": 45.2, "files": [
            {"name": "conversions_20241231_101010.json", "size_mb": 22.1},
            {"name": "conversions_20250101_143022.json", "size_mb": 23.1}]},
    }
    assert render_original_resource_report("第15页超时重试2", status, "zh") == textwrap.dedent("""\
        ============================================================
        🔍 第15页超时重试2 系统资源监控报告
        ============================================================
        ⏱️  运行时间: 0h 25m 30s
        💾 内存使用: 1024.5MB (RSS), 1536.2MB (VMS), 15.2%
        ⚡ CPU使用: 进程 25.3%, 系统 45.1% (共8核)
        🌐 网络连接: 12/25 (已建立/总数)
        🌐 网络连通性: ✅ 正常
        💿 磁盘使用: 2.1GB/10.0GB (21.0%)
        📄 JSON文件: 2 个文件, 总大小 45.2MB
           详细信息:
             - conversions_20241231_101010.json: 22.1MB
             - conversions_20250101_143022.json: 23.1MB
        ============================================================""")
    broken = {**status, "memory": {"error": "AccessDenied: pid 1"}, "network": {"error": "nope"},
              "cpu": {"process_cpu": "?"}}
    text = render_original_resource_report("x", broken, "zh", show_details=False).splitlines()
    assert "💾 内存使用: 获取失败 - AccessDenied: pid 1" in text
    assert "🌐 网络信息: 获取失败 - nope" in text
    assert any(line.startswith("⚡ CPU使用: 获取失败 - ") for line in text)
    assert "   详细信息:" not in text and "💿 磁盘使用: 2.1GB/10.0GB (21.0%)" in text


@pytest.mark.timeout(30)
def test_resource_monitor_checks_the_apis_own_host_by_default(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """check_connectivity() tries the API's host and port (not a public DNS server); an
    explicit host and port are tried as given. The get_* methods keep the original's shapes."""
    sim = make_simulator(rate_limit_per_minute=None)
    monitor = ResourceMonitor(api_url=sim.base_url, output_dir=tmp_path)
    assert monitor.check_connectivity() is True
    port = int(sim.base_url.split(":")[2].split("/")[0])
    assert monitor.check_connectivity("127.0.0.1", port, timeout=1) is True
    sim.stop()
    assert monitor.check_connectivity(timeout=1) is False
    assert set(monitor.get_memory_usage()) == {"rss", "vms", "percent"}
    assert set(monitor.get_cpu_usage()) == {"process_cpu", "system_cpu", "cpu_count"}
    assert {"total_connections", "established_connections", "network_io"} <= set(
        monitor.get_network_info())
    assert set(monitor.get_disk_usage()) == {"total", "used", "free", "percent"}
    (tmp_path / "a.json").write_text("{}")
    info = monitor.get_json_files_info()
    assert info["count"] == 1 and info["files"][0]["name"] == "a.json"
    assert isinstance(info["files"][0]["modified"], dt.datetime)
    assert monitor.get_json_files_info(tmp_path / "missing") == {
        "files": [], "total_size_mb": 0, "count": 0}


# -- 5. no side effects on the host -------------------------------------------------------------


def _page_lines(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if line.startswith(prefix) and " 第" in line and "页：" in line]


@pytest.mark.timeout(90)
def test_the_hosts_logging_keeps_its_format_and_nothing_is_printed_twice(
        make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With the host's logging.basicConfig: its own lines keep its format, once each; the
    library's lines come through the host's handler in the host's format (logger `app`), once
    per event, naming the api_name given; no JSON line anywhere; nothing of the library on
    stdout."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_503", date="2025-01-02", page=2, attempts={1}))
    host = make_host(tmp_path, sim.base_url)
    run = run_host(host, "--start", "2025-01-02", "--end", "2025-01-02", "--api-name", "shop-sg")
    assert run.lines.count("HOST|INFO|weekly|weekly report starting") == 1
    assert run.lines.count("HOST|INFO|weekly|weekly report done: 250 records") == 1
    assert not [line for line in run.lines if line.lstrip().startswith("{")]
    assert all(line.startswith("@@") for line in run.stdout)
    pages = _page_lines(run.stderr, "HOST|INFO|app|📄 ")
    assert len(pages) == sum(1 for e in range_requests(sim) if e.outcome == "ok") == 3
    assert all(line.startswith("HOST|INFO|app|📄 shop-sg 2025-01-02 第") for line in pages)
    assert len(_page_lines(run.lines, "📄 ")) == 0  # not again outside the host's format
    retries = [line for line in run.lines if "第2页HTTP错误重试1" in line]
    assert len(retries) == 1 and retries[0].startswith("HOST|WARNING|app|🔁 shop-sg ")
    reports = [line for line in run.lines if line.endswith("数据获取开始 系统资源监控报告")]
    assert reports == ["🔍 [shop-sg] 数据获取开始 系统资源监控报告"]


@pytest.mark.timeout(90)
def test_a_host_without_logging_sees_each_line_once_as_plain_text(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A host that configured no logging: the library prints its lines on stdout like the
    original did, human-readable, once each (no JSON, nothing on stderr, no second copy from
    Python's last-resort handler); RESOURCE_MONITOR_ENABLED=False leaves out the reports."""
    sim = make_simulator(records_per_day=250, rate_limit_per_minute=None)
    sim.add_fault(Fault(kind="http_503", date="2025-01-02", page=2, attempts={1}))
    host = make_host(tmp_path, sim.base_url, RESOURCE_MONITOR_ENABLED=False)
    run = run_host(host, "--start", "2025-01-02", "--end", "2025-01-02", "--no-logging")
    assert run.stderr == []
    assert not [line for line in run.stdout if line.startswith("{")]
    pages = _page_lines(run.stdout, "📄 ")
    assert len(pages) == 3 and len(set(pages)) == 3
    assert len([line for line in run.stdout if "第2页HTTP错误重试1" in line]) == 1
    assert not [line for line in run.stdout if "系统资源监控报告" in line]


@pytest.mark.timeout(90)
def test_nothing_before_authenticate_and_nothing_saved_for_none(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """get_conversions before authenticate() is None and sends nothing; save_to_json(None) is
    None and writes nothing (no folder either); after authenticate() the same call works."""
    sim = make_simulator(records_per_day=30, rate_limit_per_minute=None)
    host = make_host(tmp_path, sim.base_url)
    run = run_host(host, "--start", "2025-01-02", "--end", "2025-01-02", "--no-auth",
                   "--save-none")
    assert run.tag("SAVE_NONE") is None
    assert run.tag("EARLY") is None
    assert sim.ledger.snapshot()[0].endpoint == "authenticate"  # nothing before authenticate
    assert run.tag("RESULT")["current_page_count"] == 30
    saved = sorted(p.name for p in (host / "output").iterdir())
    assert saved == [Path(run.tag("SAVED")).name]  # the one real save, no file of `null`


IMPORT_SIDE_EFFECTS = """
    import json, logging, os, sys
    import structlog

    def shows(logger):  # a handler that writes somewhere (libraries add NullHandlers)
        return [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]

    def state():
        return {"root": [type(h).__name__ for h in logging.root.handlers],
                "root_level": logging.root.level,
                "handlers": sorted(name for name, lg in logging.root.manager.loggerDict.items()
                                   if isinstance(lg, logging.Logger) and shows(lg)),
                "app_level": logging.getLogger("app").level,
                "structlog": structlog.is_configured()}

    before = state()
    from app.involve_asia import InvolveAsiaAPI, ResourceMonitor
    api = InvolveAsiaAPI()
    ResourceMonitor()
    after = state()
    print(json.dumps({"before": before, "after": after, "dirs": sorted(os.listdir("."))}))
"""


@pytest.mark.timeout(60)
def test_importing_and_building_configure_no_logging_and_create_nothing(tmp_path: Path) -> None:
    """Importing app.involve_asia and building a client (no config module, no credentials):
    no root handler, no handler that writes on any logger, no structlog configuration, no level
    set, no folder, no exception, nothing printed."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(IMPORT_SIDE_EFFECTS), encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout.splitlines()
    assert len(out) == 1
    seen = json.loads(out[0])
    assert seen["after"] == seen["before"] == {"root": [], "root_level": logging.WARNING,
                                               "handlers": [], "app_level": 0,
                                               "structlog": False}
    assert seen["dirs"] == ["script.py"]


# -- 6. the original's attributes ---------------------------------------------------------------


@pytest.mark.timeout(90)
def test_the_original_attributes_are_there(make_simulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """api_secret, api_key, auth_url, conversions_url, token, resource_monitor,
    request_timeout, max_retries, request_delay and skipped_pages, as the host reads them; the
    token is set by authenticate()."""
    sim = make_simulator(records_per_day=10, rate_limit_per_minute=None)
    host = make_host(tmp_path, sim.base_url)
    run = run_host(host, "--start", "2025-01-02", "--end", "2025-01-02")
    assert run.tag("ATTRS") == dict.fromkeys(
        ("api_secret", "api_key", "auth_url", "conversions_url", "resource_monitor",
         "request_timeout", "max_retries", "request_delay", "skipped_pages"), True)
    assert run.tag("VALUES")["token"] is None and run.tag("TOKEN_SET") is True


# -- in process: the `app` logger is the host's to route ----------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app_logger() -> Iterator[tuple[logging.Logger, _Collect]]:
    logger = logging.getLogger("app")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


@pytest.mark.timeout(60)
def test_a_host_routes_and_silences_the_library_through_the_app_logger(
        make_simulator, tmp_path: Path, app_logger: tuple[logging.Logger, _Collect],
        monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The library's records are the `app` logger's, with `event` and `fields` for structured
    handlers; INFO shows until the host sets a level on `app`, which then decides."""
    logger, handler = app_logger
    sim = make_simulator(records_per_day=10, rate_limit_per_minute=None)
    monkeypatch.chdir(tmp_path)
    for name, value in {"INVOLVE_ASIA_BASE_URL": sim.base_url,
                        "INVOLVE_ASIA_API_SECRET": "demo-secret", "LOG_LANGUAGE": "en",
                        "RESOURCE_MONITOR_ENABLED": "false", "REQUEST_DELAY": "0",
                        "REQUESTS_PER_MINUTE": "100000"}.items():
        monkeypatch.setenv(name, value)
    api = InvolveAsiaAPI()
    assert api.authenticate()
    assert api.get_conversions("2025-01-02", "2025-01-02", api_name="shop") is not None
    fetched = [r for r in handler.records if getattr(r, "event", None) == "page_fetched"]
    assert len(fetched) == 1 and fetched[0].levelno == logging.INFO
    assert fetched[0].fields["account"] == "shop"  # type: ignore[attr-defined]
    assert fetched[0].getMessage().startswith("📄 shop 2025-01-02 page 1/1: 10 records")
    handler.records.clear()
    logger.setLevel(logging.WARNING)
    assert api.get_conversions("2025-01-02", "2025-01-02") is not None
    assert handler.records == []
    assert not (tmp_path / "output").exists()


# -- in process: the settings' order, with a `config` module of the test's -----------------------


@pytest.fixture
def host_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    """A `config` module the library imports (as a host's), and a clean environment."""
    module = types.ModuleType("config")
    monkeypatch.setitem(sys.modules, "config", module)
    for name in list(os.environ):
        if name.startswith(("INVOLVE_ASIA_", "START_", "END_", "DEFAULT_", "MAX_", "PREFERRED_",
                            "REQUEST", "RATE_", "OUTPUT_", "RESOURCE_", "RETRY_", "LOG_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return module


def test_settings_order_is_arguments_then_config_then_environment_then_defaults(
        host_config: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Constructor arguments win over the config, the config over the environment (None counts
    as unset), the environment over the defaults; call-time constants are read again at each
    call; the default range is read only for get_conversions_default_range."""
    host_config.INVOLVE_ASIA_API_SECRET = "config-secret"  # type: ignore[attr-defined]
    host_config.PREFERRED_CURRENCY = "MYR"  # type: ignore[attr-defined]
    host_config.MAX_SKIPPED_PAGES = None  # type: ignore[attr-defined]
    host_config.DEFAULT_END_DATE = "2999-01-01"  # type: ignore[attr-defined]
    monkeypatch.setenv("INVOLVE_ASIA_API_SECRET", "env-secret")
    monkeypatch.setenv("PREFERRED_CURRENCY", "USD")
    monkeypatch.setenv("MAX_SKIPPED_PAGES", "4")
    assert InvolveAsiaAPI("arg-secret").api_secret == "arg-secret"
    api = InvolveAsiaAPI()
    assert api.api_secret == "config-secret" and api.api_key == "general"  # key: the default
    now = load_host_settings()
    assert (now.preferred_currency, now.max_skipped_pages, now.max_records) == ("MYR", 4, None)
    host_config.MAX_RECORDS_LIMIT = 150  # type: ignore[attr-defined]
    assert load_host_settings().max_records == 150
    with pytest.raises(InvalidSetting) as bad_date:
        load_host_settings(dates=True)  # only the default range cares about the dates
    assert bad_date.value.variable == "config.DEFAULT_END_DATE"
    assert not (Path.cwd() / "output").exists()


def test_invalid_config_values_are_named_as_the_hosts_constants(host_config: types.ModuleType) -> None:
    """A config constant the job refuses is named `config.NAME` with what is expected; the
    endpoint URLs must end in their paths and share a base."""
    host_config.REQUEST_TIMEOUT = "soon"  # type: ignore[attr-defined]
    with pytest.raises(InvalidSetting) as bad:
        InvolveAsiaAPI()
    assert bad.value.variable == "config.REQUEST_TIMEOUT"
    del host_config.REQUEST_TIMEOUT  # type: ignore[attr-defined]
    host_config.INVOLVE_ASIA_AUTH_URL = "http://127.0.0.1:9/api/login"  # type: ignore[attr-defined]
    with pytest.raises(InvalidSetting) as bad:
        InvolveAsiaAPI()
    assert bad.value.variable == "config.INVOLVE_ASIA_AUTH_URL"
    host_config.INVOLVE_ASIA_AUTH_URL = "http://127.0.0.1:9/a/authenticate"  # type: ignore[attr-defined]
    host_config.INVOLVE_ASIA_CONVERSIONS_URL = "http://127.0.0.1:9/b/conversions/range"  # type: ignore[attr-defined]
    with pytest.raises(InvalidSetting) as bad:
        InvolveAsiaAPI()
    assert bad.value.variable == "config.INVOLVE_ASIA_AUTH_URL"
    host_config.INVOLVE_ASIA_AUTH_URL = "http://127.0.0.1:9/b/authenticate"  # type: ignore[attr-defined]
    assert InvolveAsiaAPI().base_url == "http://127.0.0.1:9/b"
