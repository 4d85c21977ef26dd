"""The simulator as a server: start/stop hygiene, concurrency, keep-alive speed, the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path

import psutil
import pytest
import requests

from app.simulator import Fault, SimAccount, Simulator
from tests.support.simulator_fixtures import DAY, post_range, sim_token

SimFactory = Callable[..., Simulator]
REPO = Path(__file__).resolve().parent.parent


def _sockets_on(port: int) -> list[str]:
    """This process's sockets with `port` at either end."""
    return [f"{c.laddr} -> {c.raddr} {c.status}" for c in psutil.Process().net_connections("tcp")
            if c.laddr and (c.laddr.port == port or (c.raddr and c.raddr.port == port))]


def _server_sockets(port: int) -> list[str]:
    """This process's sockets listening on or accepted by `port` (the simulator's side)."""
    return [f"{c.laddr} -> {c.raddr} {c.status}" for c in psutil.Process().net_connections("tcp")
            if c.laddr and c.laddr.port == port]


@pytest.mark.timeout(20)
def test_stop_leaves_no_thread_and_no_socket_behind() -> None:
    """stop() ends idle, hung, dripping and endless connections within a second, leaving nothing."""
    threads_before = set(threading.enumerate())
    sim = Simulator(records_per_day=30, drip_bytes_per_second=2.0).start()
    port = sim.address[1]
    assert _server_sockets(port)  # the listener
    sim.add_fault(Fault(kind="no_answer", page=2))
    sim.add_fault(Fault(kind="headers_then_silence", page=3))
    sim.add_fault(Fault(kind="drip", page=4))
    sim.add_fault(Fault(kind="endless_body", page=5))
    with ExitStack() as stack:
        token = sim_token(sim)
        idle = stack.enter_context(requests.Session())
        assert post_range(sim, token, session=idle, limit=10).status_code == 200
        with pytest.raises(requests.exceptions.ReadTimeout):
            post_range(sim, token, page=2, limit=10, timeout=0.2)
        for page in (3, 4, 5):
            stack.enter_context(post_range(sim, token, page=page, limit=10, stream=True))
        silent = stack.enter_context(closing(socket.create_connection(sim.address)))
        time.sleep(0.2)
        assert len(threading.enumerate()) >= len(threads_before) + 5
        began = time.monotonic()
        sim.stop()
        assert time.monotonic() - began < 1.0
        assert _server_sockets(port) == []
        assert set(threading.enumerate()) == threads_before
        silent.settimeout(1.0)
        assert silent.recv(1) == b""
    assert _sockets_on(port) == []
    sim.stop()  # idempotent


@pytest.mark.timeout(10)
def test_context_manager_starts_and_stops() -> None:
    """`with Simulator() as sim` serves inside the block and frees the port after it."""
    with Simulator(records_per_day=1) as sim:
        port = sim.address[1]
        assert sim.base_url == f"http://127.0.0.1:{port}/api"
        assert post_range(sim, sim_token(sim)).status_code == 200
    assert _server_sockets(port) == []
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"http://127.0.0.1:{port}/api/authenticate", timeout=1)


@pytest.mark.timeout(20)
def test_concurrent_clients_each_get_their_pages(make_simulator: SimFactory) -> None:
    """Sixteen threads paging two accounts at once all get 200s and exactly the dataset."""
    accounts = [SimAccount("a", "general", "x"), SimAccount("b", "general", "y")]
    sim = make_simulator(accounts=accounts, records_per_day=200, rate_limit_per_minute=None)
    tokens = [sim_token(sim, 0), sim_token(sim, 1)]
    days = [f"2025-03-{day:02d}" for day in range(1, 9)]

    def fetch(job: tuple[int, str]) -> set[int]:
        index, day = job
        ids: set[int] = set()
        with requests.Session() as session:
            for page in (1, 2):
                response = post_range(sim, tokens[index], start=day, page=page, session=session)
                assert response.status_code == 200
                ids |= {r["conversion_id"] for r in response.json()["data"]["data"]}
        return ids

    jobs = [(index, day) for index in (0, 1) for day in days]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(fetch, jobs))
    for (index, day), ids in zip(jobs, results, strict=True):
        assert ids == sim.expected_ids(accounts[index].name, day, day)
    assert sim.request_count() == 32


@pytest.mark.timeout(10)
def test_keep_alive_requests_do_not_stall(make_simulator: SimFactory) -> None:
    """Fifty full pages over one keep-alive connection take well under a second (no Nagle stall)."""
    sim = make_simulator(records_per_day=1000, rate_limit_per_minute=None)
    token = sim_token(sim)
    with requests.Session() as session:
        post_range(sim, token, session=session)
        began = time.monotonic()
        for page in range(1, 51):
            assert post_range(sim, token, page=page % 10 + 1, session=session).status_code == 200
        elapsed = time.monotonic() - began
    assert elapsed < 1.0, f"50 requests took {elapsed:.2f}s"
    assert threading.active_count() < 10  # one connection, not fifty


@pytest.mark.timeout(15)
def test_cli_help_documents_every_flag() -> None:
    """`python -m app.simulator --help` exits 0 and lists every flag."""
    result = subprocess.run([sys.executable, "-m", "app.simulator", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--key", "--secret", "--accounts", "--records-per-day",
                 "--fault-rate", "--fault-kinds", "--seed", "--token-ttl", "--rate-limit",
                 "--retry-after", "--latency", "--hang-seconds", "--drip-bytes-per-second",
                 "--currency", "--validation-rate", "--validation-interval", "--expect",
                 "--records", "--preferred-currency", "--validation-steps"):
        assert flag in result.stdout


@pytest.mark.timeout(20)
def test_cli_serves_until_sigterm() -> None:
    """The CLI prints its base URL, serves the configured accounts, and exits 0 on SIGTERM."""
    accounts = json.dumps([{"name": "shop", "key": "general", "secret": "cli-secret"}])
    command = [sys.executable, "-m", "app.simulator", "--port", "0", "--accounts", accounts,
               "--records-per-day", "7", "--seed", "3"]
    env = {**os.environ, "LOG_LANGUAGE": "en"}
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api")
            auth = requests.post(f"{base_url}/authenticate",
                                 data={"key": "general", "secret": "cli-secret"}, timeout=5)
            token = auth.json()["data"]["token"]
            page = requests.post(f"{base_url}/conversions/range",
                                 data={"start_date": DAY, "end_date": DAY},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=5)
            assert page.json()["data"]["count"] == 7
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)
        finally:
            process.kill()
    assert process.returncode == 0
    assert "Simulator stopped" in stderr


@pytest.mark.timeout(20)
def test_cli_sets_local_currency_and_moves_statuses() -> None:
    """--currency is the account's local currency; --validation-interval moves statuses on."""
    command = [sys.executable, "-m", "app.simulator", "--port", "0", "--currency", "SGD",
               "--records-per-day", "60", "--validation-rate", "1", "--validation-interval",
               "0.1"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            token = requests.post(f"{base_url}/authenticate",
                                  data={"key": "general", "secret": "demo-secret"},
                                  timeout=5).json()["data"]["token"]

            def page(**extra: str) -> list[dict[str, object]]:
                form = {"start_date": DAY, "end_date": DAY, **extra}
                response = requests.post(f"{base_url}/conversions/range", data=form,
                                         headers={"Authorization": f"Bearer {token}"},
                                         timeout=5)
                records: list[dict[str, object]] = response.json()["data"]["data"]
                return records

            assert {record["currency"] for record in page()} == {"SGD"}
            assert {record["currency"] for record in page(**{
                "filters[preferred_currency]": "USD"})} == {"USD"}
            deadline = time.monotonic() + 10
            while any(r["conversion_status"] == "pending" for r in page()):
                assert time.monotonic() < deadline, "statuses never moved"
                time.sleep(0.1)
            assert any("datetime_conversion_updated" in record for record in page())
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=10)
        finally:
            process.kill()
    assert process.returncode == 0


@pytest.mark.timeout(15)
def test_cli_rejects_a_bad_accounts_value() -> None:
    """--accounts that is not a JSON list of accounts exits 2 with a message."""
    result = subprocess.run([sys.executable, "-m", "app.simulator", "--accounts", "[{}]"],
                            cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 2
    assert "--accounts" in result.stderr


def _expect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.simulator", "--expect", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cli_expect_prints_what_a_run_against_the_same_options_stored(tmp_path: Path) -> None:
    """`--expect ACCOUNT START END` with the serving options prints exactly the ids a job run
    against the served simulator stored in its day store, ascending; with --records (and the
    job's preferred currency) exactly the records, as served."""
    from tests.support.jobrun import job_env, read_day, run_job

    start, end = "2025-01-02", "2025-01-04"
    days = ["2025-01-02", "2025-01-03", "2025-01-04"]
    accounts = [{"name": "shop", "key": "general", "secret": "cli-secret"},
                {"name": "mall", "key": "k2", "secret": "cli-secret-2",  # pragma: allowlist secret
                 "currency": "SGD"}]
    options = ["--accounts", json.dumps(accounts), "--records-per-day", "130", "--seed", "5"]
    command = [sys.executable, "-m", "app.simulator", "--port", "0", "--rate-limit", "0",
               *options]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            run = run_job(job_env(base_url, start, end, OUTPUT_DIR=str(tmp_path),
                                  INVOLVE_ASIA_ACCOUNTS=json.dumps(
                                      [{k: a[k] for k in ("name", "key", "secret")}
                                       for a in accounts])))
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=10)
        finally:
            process.kill()
    assert run.code == 0, run.stderr[-3000:]
    for account in ("shop", "mall"):
        stored = [r for day in days for r in read_day(tmp_path, account, day)]
        printed = _expect(account, start, end, *options)
        assert printed.returncode == 0, printed.stderr
        ids = [int(line) for line in printed.stdout.splitlines()]
        assert ids == sorted(r["conversion_id"] for r in stored) and len(ids) == 3 * 130
    printed = _expect("mall", start, end, *options, "--records", "--preferred-currency", "USD")
    assert printed.returncode == 0, printed.stderr
    truth = {r["conversion_id"]: r for r in map(json.loads, printed.stdout.splitlines())}
    stored_mall = {r["conversion_id"]: {k: v for k, v in r.items() if k != "_account"}
                   for day in days for r in read_day(tmp_path, "mall", day)}
    assert truth == stored_mall
    assert {r["currency"] for r in truth.values()} == {"USD"}


@pytest.mark.timeout(30)
def test_cli_expect_refuses_an_unknown_account_or_a_bad_range() -> None:
    """--expect with an account the options do not define, a date that is not YYYY-MM-DD, or
    END before START: exit 2 naming the problem, nothing printed on stdout."""
    for args, problem in ((["nobody", "2025-01-01", "2025-01-02"], "unknown account"),
                          (["default", "2025-01-01", "20250102"], "not a date"),
                          (["default", "2025-01-03", "2025-01-02"], "before START")):
        result = _expect(*args)
        assert result.returncode == 2 and result.stdout == ""
        assert problem in result.stderr


@pytest.mark.timeout(30)
def test_cli_expect_records_follow_the_validation_clock() -> None:
    """--records with --validation-steps N prints the statuses the server serves after N
    validation steps (the same dataset options), in id order."""
    simulator = Simulator(records_per_day=40, seed=3, validation_rate=0.5)
    for steps in (0, 2):
        printed = _expect("default", DAY, DAY, "--records-per-day", "40", "--seed", "3",
                          "--validation-rate", "0.5", "--records", "--validation-steps",
                          str(steps))
        assert printed.returncode == 0, printed.stderr
        records = [json.loads(line) for line in printed.stdout.splitlines()]
        assert records == sorted(simulator.records("default", DAY),
                                 key=lambda r: int(r["conversion_id"]))
        simulator.advance_validation(2)
    assert any("datetime_conversion_updated" in r for r in records)
