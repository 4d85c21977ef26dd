"""Every fault kind, driven by a plain `requests` call (or a raw socket) and observed."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from urllib.parse import urlencode

import pytest
import requests

from app.simulator import FAULT_KINDS, Fault, Simulator
from tests.support.simulator_fixtures import DAY, post_range, sim_token

SimFactory = Callable[..., Simulator]


@pytest.fixture
def sim(make_simulator: SimFactory) -> Simulator:
    """25 records a day, hangs capped at 5 s (stop() ends them sooner)."""
    return make_simulator(records_per_day=25, hang_seconds=5.0)


def _raw_request(simulator: Simulator, token: str, page: int = 1) -> socket.socket:
    """Send one keep-alive POST /conversions/range over a raw socket; return the socket."""
    host, port = simulator.address
    body = urlencode({"start_date": DAY, "end_date": DAY, "page": page, "limit": 10})
    request = (f"POST /api/conversions/range HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Authorization: Bearer {token}\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    connection = socket.create_connection((host, port), timeout=5)
    connection.sendall(request)
    return connection


def _read_head(connection: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the end of the response head; return (head, body bytes already read)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        assert chunk, f"connection closed before the head ended: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _last_outcome(simulator: Simulator) -> str:
    return simulator.ledger.snapshot()[-1].outcome


@pytest.mark.timeout(10)
def test_every_fault_kind_has_a_test_here() -> None:
    """This file drives each of FAULT_KINDS (names listed so a new kind needs a new test)."""
    covered = {"reset", "no_answer", "headers_then_silence", "drip", "endless_body", "truncated",
               "malformed_json", "http_500", "http_502", "http_503", "rate_limit",
               "rate_limit_no_header", "envelope_error", "token_revoked", "empty_page",
               "short_page", "zero_count", "latency", "insert", "huge_error_body"}
    assert set(FAULT_KINDS) == covered


@pytest.mark.timeout(10)
def test_reset_aborts_the_connection_with_rst(sim: Simulator) -> None:
    """reset: requests raises ConnectionError; a raw socket sees ECONNRESET, not a clean EOF."""
    sim.add_fault(Fault(kind="reset", page=2))
    token = sim_token(sim)
    with pytest.raises(requests.exceptions.ConnectionError):
        post_range(sim, token, page=2, limit=10)
    entry = sim.ledger.snapshot()[-1]
    assert (entry.outcome, entry.status, entry.ids) == ("reset", None, ())
    with closing(_raw_request(sim, token, page=2)) as connection, \
            pytest.raises(ConnectionResetError):
        connection.recv(1024)


@pytest.mark.timeout(10)
def test_no_answer_keeps_the_socket_open_and_silent(sim: Simulator) -> None:
    """no_answer: no byte arrives within 0.5 s, the socket stays open; requests times out."""
    sim.add_fault(Fault(kind="no_answer", page=3))
    token = sim_token(sim)
    with closing(_raw_request(sim, token, page=3)) as connection:
        connection.settimeout(0.5)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.recv(1)  # b"" would mean closed; a timeout means open and silent
        assert time.monotonic() - began >= 0.45
    with pytest.raises(requests.exceptions.ReadTimeout):
        post_range(sim, token, page=3, limit=10, timeout=0.3)
    assert sim.ledger.outcomes("range")["no_answer"] == 2


@pytest.mark.timeout(10)
def test_headers_then_silence_sends_a_head_and_nothing_more(sim: Simulator) -> None:
    """headers_then_silence: a 200 head with Content-Length arrives, then no body byte."""
    sim.add_fault(Fault(kind="headers_then_silence", page=1))
    token = sim_token(sim)
    with closing(_raw_request(sim, token)) as connection:
        head, rest = _read_head(connection)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: 4096" in head
        assert rest == b""
        connection.settimeout(0.5)
        with pytest.raises(TimeoutError):
            connection.recv(1)
    with requests.post(f"{sim.base_url}/conversions/range", stream=True, timeout=0.3,
                       data={"start_date": DAY, "end_date": DAY},
                       headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError, match="timed out"):
            response.content  # noqa: B018 - reading the body is the point


@pytest.mark.timeout(10)
def test_drip_sends_the_body_at_the_configured_byte_rate(sim: Simulator) -> None:
    """drip at 40 B/s: the head comes at once, then the body arrives at 40 +- 10 bytes/s."""
    sim.add_fault(Fault(kind="drip", page=1, params={"bytes_per_second": 40}))
    token = sim_token(sim)
    with post_range(sim, token, limit=10, timeout=2.0, stream=True) as response:
        assert response.status_code == 200
        received, began = 0, time.monotonic()
        while time.monotonic() - began < 1.0:
            received += len(response.raw.read(1))
        rate = received / (time.monotonic() - began)
    assert 30 <= rate <= 50, rate
    assert _last_outcome(sim) == "drip"


@pytest.mark.timeout(10)
def test_drip_delivers_a_valid_body_in_the_end(make_simulator: SimFactory) -> None:
    """drip with the simulator's default rate still sends the whole, valid answer."""
    sim = make_simulator(records_per_day=0, drip_bytes_per_second=400)
    sim.add_fault(Fault(kind="drip"))
    began = time.monotonic()
    response = post_range(sim, sim_token(sim))
    assert response.json()["data"]["count"] == 0
    assert time.monotonic() - began >= len(response.content) / 400 * 0.7


@pytest.mark.timeout(10)
def test_endless_body_never_ends(sim: Simulator) -> None:
    """endless_body: a chunked 200 that keeps sending megabytes, fast, without ending."""
    sim.add_fault(Fault(kind="endless_body"))
    token = sim_token(sim)
    with post_range(sim, token, timeout=2.0, stream=True) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        received, began = 0, time.monotonic()
        for chunk in response.iter_content(65536):
            received += len(chunk)
            if received > 4_000_000:
                break
        else:
            pytest.fail("the endless body ended")
    assert time.monotonic() - began < 2.0
    assert _last_outcome(sim) == "endless_body"


@pytest.mark.timeout(10)
def test_truncated_body_is_shorter_than_its_content_length(sim: Simulator) -> None:
    """truncated: requests raises ChunkedEncodingError; raw bytes stop short of Content-Length."""
    sim.add_fault(Fault(kind="truncated"))
    token = sim_token(sim)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        post_range(sim, token, limit=10)
    with closing(_raw_request(sim, token)) as connection:
        head, body = _read_head(connection)
        while chunk := connection.recv(65536):
            body += chunk
    promised = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert 0 < len(body) < promised


@pytest.mark.timeout(10)
def test_malformed_json_is_200_with_a_body_that_is_not_json(sim: Simulator) -> None:
    """malformed_json: HTTP 200, application/json, and json() fails."""
    sim.add_fault(Fault(kind="malformed_json"))
    response = post_range(sim, sim_token(sim))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_faults_answer_with_a_proxy_html_page(sim: Simulator, status: int) -> None:
    """http_500/502/503: that status with an HTML body, not JSON."""
    sim.add_fault(Fault(kind=f"http_{status}"))
    response = post_range(sim, sim_token(sim))
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<html>") and str(status) in response.text
    assert _last_outcome(sim) == f"http_{status}"


@pytest.mark.timeout(10)
def test_rate_limit_fault_carries_retry_after(sim: Simulator) -> None:
    """rate_limit: 429 Too Many Requests with the Retry-After given in params."""
    sim.add_fault(Fault(kind="rate_limit", params={"retry_after": 7}))
    response = post_range(sim, sim_token(sim))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["message"] == "Too Many Requests"


@pytest.mark.timeout(10)
def test_rate_limit_no_header_fault_has_no_retry_after(sim: Simulator) -> None:
    """rate_limit_no_header: 429 without a Retry-After header."""
    sim.add_fault(Fault(kind="rate_limit_no_header"))
    response = post_range(sim, sim_token(sim))
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


@pytest.mark.timeout(10)
def test_envelope_error_is_http_200_with_status_error(sim: Simulator) -> None:
    """envelope_error: HTTP 200 whose JSON says "status":"error" and carries no data."""
    sim.add_fault(Fault(kind="envelope_error"))
    response = post_range(sim, sim_token(sim))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "error" and body["data"] == [] and body["message"]


@pytest.mark.timeout(10)
def test_token_revoked_invalidates_the_token_mid_run(sim: Simulator) -> None:
    """token_revoked: 401 Unauthenticated now and for that token later; a new token works."""
    sim.add_fault(Fault(kind="token_revoked", page=2, attempts={1}))
    token = sim_token(sim)
    assert post_range(sim, token, page=1, limit=10).status_code == 200
    revoked = post_range(sim, token, page=2, limit=10)
    assert revoked.status_code == 401
    assert revoked.json() == {"error": "Unauthenticated."}
    assert post_range(sim, token, page=3, limit=10).status_code == 401
    assert post_range(sim, sim_token(sim), page=2, limit=10).status_code == 200


@pytest.mark.timeout(10)
def test_empty_page_before_the_last_keeps_the_envelope(sim: Simulator) -> None:
    """empty_page: page 1 of 3 comes back 200 with count and nextPage but data []."""
    sim.add_fault(Fault(kind="empty_page", page=1, attempts={1}))
    token = sim_token(sim)
    data = post_range(sim, token, limit=10).json()["data"]
    assert (data["page"], data["count"], data["nextPage"], data["data"]) == (1, 25, 2, [])
    assert len(post_range(sim, token, limit=10).json()["data"]["data"]) == 10
    assert [e.outcome for e in sim.ledger.snapshot()[-2:]] == ["empty_page", "ok"]


@pytest.mark.timeout(10)
def test_empty_page_can_hit_the_last_page(sim: Simulator) -> None:
    """empty_page on the last page: 200 with count 25 and nextPage null, but data []."""
    sim.add_fault(Fault(kind="empty_page", page=3, attempts={1}))
    token = sim_token(sim)
    data = post_range(sim, token, page=3, limit=10).json()["data"]
    assert (data["page"], data["count"], data["nextPage"], data["data"]) == (3, 25, None, [])
    assert len(post_range(sim, token, page=3, limit=10).json()["data"]["data"]) == 5


@pytest.mark.timeout(10)
def test_short_page_sends_part_of_the_records_with_the_right_count(sim: Simulator) -> None:
    """short_page: 200, right page/count/nextPage, 4 of 10 records (default keep 0.4); keep=0.9
    on the last page of 5 records still sends at least one fewer; the ledger has the ids sent."""
    sim.add_fault(Fault(kind="short_page", page=1, attempts={1}))
    sim.add_fault(Fault(kind="short_page", page=3, params={"keep": 0.9}))
    token = sim_token(sim)
    data = post_range(sim, token, limit=10).json()["data"]
    assert (data["page"], data["count"], data["nextPage"], len(data["data"])) == (1, 25, 2, 4)
    full = post_range(sim, token, limit=10).json()["data"]["data"]
    assert [r["conversion_id"] for r in data["data"]] == [r["conversion_id"] for r in full[:4]]
    last = post_range(sim, token, page=3, limit=10).json()["data"]
    assert (last["count"], last["nextPage"], len(last["data"])) == (25, None, 4)
    entries = sim.ledger.snapshot()
    assert [e.outcome for e in entries[-3:]] == ["short_page", "ok", "short_page"]
    assert len(entries[-3].ids) == 4


@pytest.mark.timeout(10)
def test_zero_count_denies_the_day(sim: Simulator) -> None:
    """zero_count: 200 with count 0, nextPage null, data [] for a day of 25; then the truth."""
    sim.add_fault(Fault(kind="zero_count", date=DAY, attempts={1}))
    token = sim_token(sim)
    data = post_range(sim, token, limit=10).json()["data"]
    assert (data["page"], data["count"], data["nextPage"], data["data"]) == (1, 0, None, [])
    assert post_range(sim, token, limit=10).json()["data"]["count"] == 25
    assert [e.outcome for e in sim.ledger.snapshot()[-2:]] == ["zero_count", "ok"]


@pytest.mark.timeout(10)
def test_latency_fault_and_global_latency_delay_the_answer(make_simulator: SimFactory) -> None:
    """latency params seconds=0.3 delays that answer; latency=0.1 delays every answer."""
    sim = make_simulator(records_per_day=5, latency=0.1)
    sim.add_fault(Fault(kind="latency", page=1, params={"seconds": 0.3}))
    token = sim_token(sim)
    began = time.monotonic()
    response = post_range(sim, token)
    slow = time.monotonic() - began
    began = time.monotonic()
    post_range(sim, token, page=2)
    normal = time.monotonic() - began
    assert response.status_code == 200 and len(response.json()["data"]["data"]) == 5
    assert slow >= 0.4 and 0.1 <= normal < 0.35
    assert sim.ledger.snapshot()[-2].fault == "latency"


@pytest.mark.timeout(10)
def test_insert_fault_adds_records_before_serving(sim: Simulator) -> None:
    """insert count=3: the day grows to 28 and the three new ids lead the page."""
    before = sim.expected_ids("default", DAY, DAY)
    sim.add_fault(Fault(kind="insert", date=DAY, attempts={1}, params={"count": 3}))
    data = post_range(sim, sim_token(sim), limit=10).json()["data"]
    new = sim.expected_ids("default", DAY, DAY) - before
    assert data["count"] == 28 and len(new) == 3
    assert {r["conversion_id"] for r in data["data"][:3]} == new
    assert _last_outcome(sim) == "ok" and sim.ledger.snapshot()[-1].fault == "insert"


@pytest.mark.timeout(10)
def test_huge_error_body_is_a_5mb_html_500(sim: Simulator) -> None:
    """huge_error_body: 500 with an HTML body of about 5 MB."""
    sim.add_fault(Fault(kind="huge_error_body"))
    response = post_range(sim, sim_token(sim))
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/html")
    assert 5_000_000 <= len(response.content) <= 5_500_000


@pytest.fixture
def hung(make_simulator: SimFactory) -> Iterator[tuple[Simulator, socket.socket]]:
    """A simulator holding one no_answer connection open (default hang_seconds: an hour)."""
    simulator = make_simulator(records_per_day=5)
    simulator.add_fault(Fault(kind="no_answer"))
    with closing(_raw_request(simulator, sim_token(simulator))) as connection:
        yield simulator, connection


@pytest.mark.timeout(10)
def test_stop_ends_an_hour_long_silence_at_once(hung: tuple[Simulator, socket.socket]) -> None:
    """stop() ends a no_answer that would last an hour: the client sees EOF within a second."""
    simulator, connection = hung
    time.sleep(0.1)
    began = time.monotonic()
    simulator.stop()
    connection.settimeout(2.0)
    assert connection.recv(1) == b""
    assert time.monotonic() - began < 1.0
