"""The simulator speaks the Involve Asia API: auth, tokens, pagination, data, throttle, ledger."""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Callable

import pytest
import requests

from app.simulator import Fault, SimAccount, Simulator
from tests.support.simulator_fixtures import DAY, post_range, sim_token

RECORD_FIELDS = {
    "conversion_id", "offer_id", "offer_name", "merchant_id", "sale_amount", "payout",
    "base_payout", "bonus_payout", "currency", "conversion_status", "datetime_conversion",
    "aff_sub1", "aff_sub2", "aff_sub3", "aff_sub4", "aff_sub5",
    "adv_sub1", "adv_sub2", "adv_sub3", "adv_sub4", "adv_sub5",
}
AMOUNT = re.compile(r"^\d+\.\d{2}$")
SimFactory = Callable[..., Simulator]


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _authenticate(sim: Simulator, key: str, secret: str) -> requests.Response:
    return requests.post(f"{sim.base_url}/authenticate", data={"key": key, "secret": secret},
                         timeout=5)


def _ids(response: requests.Response) -> list[int]:
    return [record["conversion_id"] for record in response.json()["data"]["data"]]


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_authenticate_returns_jwt_looking_token(simulator: Simulator) -> None:
    """A right key/secret gets 200 with the success envelope and a three-segment base64url token."""
    response = _authenticate(simulator, "general", "demo-secret")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["message"] == "Success"
    token = body["data"]["token"]
    segments = token.split(".")
    assert len(segments) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", segment) for segment in segments)
    header = base64.urlsafe_b64decode(segments[0] + "==")
    assert b'"JWT"' in header
    assert simulator.issued_tokens == [token]
    assert _authenticate(simulator, "general", "demo-secret").json()["data"]["token"] != token


@pytest.mark.timeout(10)
def test_wrong_secret_is_401_invalid_credentials(simulator: Simulator) -> None:
    """A wrong secret gets 401 with the error envelope "Invalid Credentials" and no token."""
    response = _authenticate(simulator, "general", "not-the-secret")
    assert response.status_code == 401
    assert response.json() == {"status": "error", "message": "Invalid Credentials", "data": []}
    assert simulator.issued_tokens == []
    assert simulator.ledger.snapshot()[-1].outcome == "invalid_credentials"


@pytest.mark.timeout(10)
def test_secret_with_plus_slash_equals_must_be_form_encoded(make_simulator: SimFactory) -> None:
    """A secret containing + / = works form-encoded; pasted raw, its + turns into a space."""
    secret = "s3cr+t/with=signs"
    sim = make_simulator(accounts=[SimAccount(name="shop", key="general", secret=secret)])
    assert _authenticate(sim, "general", secret).status_code == 200
    raw = requests.post(f"{sim.base_url}/authenticate", data=f"key=general&secret={secret}",
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                        timeout=5)
    assert raw.status_code == 401
    assert raw.json()["message"] == "Invalid Credentials"


@pytest.mark.timeout(10)
def test_missing_key_or_secret_is_validation_401(simulator: Simulator) -> None:
    """Authenticate without a secret is a 401 "Incorrect arguments" envelope."""
    response = requests.post(f"{simulator.base_url}/authenticate", data={"key": "general"},
                             timeout=5)
    assert response.status_code == 401
    assert response.json()["message"].startswith("Incorrect arguments")
    assert simulator.ledger.snapshot()[-1].outcome == "validation"


@pytest.mark.timeout(10)
def test_malformed_token_breaks_the_envelope(simulator: Simulator) -> None:
    """A token without three segments gets 401 {"message":"Wrong number of segments",...}."""
    response = post_range(simulator, "not-a-jwt")
    assert response.status_code == 401
    assert response.json() == {"message": "Wrong number of segments", "status_code": 401}


@pytest.mark.timeout(10)
def test_unknown_or_missing_token_is_unauthenticated(simulator: Simulator) -> None:
    """A well-formed unknown token, or none at all, gets 401 {"error":"Unauthenticated."}."""
    for token in ("aaa.bbb.ccc", None):
        response = post_range(simulator, token)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthenticated."}
    assert simulator.ledger.outcomes() == Counter({"unauthorized": 2})


@pytest.mark.timeout(10)
def test_token_expires_after_its_ttl_in_real_time(make_simulator: SimFactory) -> None:
    """With token_ttl=0.5 a token works at once and gets 401 Unauthenticated 0.6 s later."""
    sim = make_simulator(token_ttl=0.5, records_per_day=3)
    token = sim_token(sim)
    assert post_range(sim, token).status_code == 200
    time.sleep(0.6)
    expired = post_range(sim, token)
    assert expired.status_code == 401
    assert expired.json() == {"error": "Unauthenticated."}
    assert post_range(sim, sim_token(sim)).status_code == 200


@pytest.mark.timeout(10)
def test_token_expiry_follows_the_injected_clock(make_simulator: SimFactory) -> None:
    """Tokens expire exactly when the injected clock passes issue time + TTL."""
    clock = FakeClock()
    sim = make_simulator(token_ttl=100.0, clock=clock, records_per_day=3)
    token = sim_token(sim)
    clock.now += 99.9
    assert post_range(sim, token).status_code == 200
    clock.now += 0.1
    assert post_range(sim, token).status_code == 401


@pytest.mark.timeout(10)
def test_revoke_tokens_invalidates_every_issued_token(make_simulator: SimFactory) -> None:
    """revoke_tokens() turns issued tokens into 401s; tokens issued afterwards work."""
    sim = make_simulator(records_per_day=3)
    old = sim_token(sim)
    assert sim.revoke_tokens() == 1
    assert post_range(sim, old).json() == {"error": "Unauthenticated."}
    assert post_range(sim, sim_token(sim)).status_code == 200


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("form", "words"), [
    ({"start_date": ""}, "start_date"),
    ({"start_date": "2025-13-01"}, "start_date"),
    ({"end_date": "yesterday"}, "end_date"),
    ({"start_date": "2025-01-03", "end_date": "2025-01-02"}, "before"),
    ({"page": "0"}, "page"),
    ({"page": "two"}, "page"),
    ({"limit": "101"}, "limit"),
    ({"limit": "0"}, "limit"),
])
def test_invalid_arguments_are_401_incorrect_arguments(
        simulator: Simulator, form: dict[str, str], words: str) -> None:
    """Bad dates, end before start, page < 1 and limit outside 1..100 are 401 validation errors."""
    token = sim_token(simulator)
    full = {"start_date": DAY, "end_date": DAY, "page": "1", "limit": "10", **form}
    response = requests.post(f"{simulator.base_url}/conversions/range", data=full,
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error" and body["data"] == []
    assert body["message"].startswith("Incorrect arguments") and words in body["message"]
    assert simulator.ledger.snapshot()[-1].outcome == "validation"


# -- pagination and data ----------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_pagination_fields_follow_count_and_limit(make_simulator: SimFactory) -> None:
    """25 records at limit 10: pages 1-2 full with nextPage, page 3 has 5 and null, page 4 is []."""
    sim = make_simulator(records_per_day=25)
    token = sim_token(sim)
    expected = [(1, 10, 2), (2, 10, 3), (3, 5, None), (4, 0, None)]
    for page, size, next_page in expected:
        body = post_range(sim, token, page=page, limit=10).json()
        assert body["status"] == "success" and body["message"] == "Success"
        data = body["data"]
        assert (data["page"], data["limit"], data["count"]) == (page, 10, 25)
        assert len(data["data"]) == size
        assert data["nextPage"] == next_page


@pytest.mark.timeout(10)
def test_pages_serve_the_day_once_in_dataset_order(make_simulator: SimFactory) -> None:
    """Paging through a day yields each record once, in the order records() reports."""
    sim = make_simulator(records_per_day=95)
    token = sim_token(sim)
    served: list[int] = []
    for page in range(1, 5):
        served += _ids(post_range(sim, token, page=page, limit=30))
    assert served == [record["conversion_id"] for record in sim.records("default", DAY)]
    assert set(served) == sim.expected_ids("default", DAY, DAY)
    assert len(served) == 95


@pytest.mark.timeout(10)
def test_records_are_realistic(make_simulator: SimFactory) -> None:
    """Every field is present, amounts are numeric strings, times are in the day, newest first."""
    sim = make_simulator(records_per_day=300)
    token = sim_token(sim)
    records = post_range(sim, token, limit=100).json()["data"]["data"]
    assert len(records) == 100
    for record in records:
        assert set(record) == RECORD_FIELDS
        assert isinstance(record["conversion_id"], int)
        for field in ("sale_amount", "payout", "base_payout", "bonus_payout"):
            assert AMOUNT.match(record[field]), record[field]
        assert float(record["payout"]) == pytest.approx(
            float(record["base_payout"]) + float(record["bonus_payout"]))
        assert record["conversion_status"] in ("approved", "pending", "rejected")
        assert record["datetime_conversion"].startswith(DAY + " ")
        dt.datetime.strptime(record["datetime_conversion"], "%Y-%m-%d %H:%M:%S")
    times = [record["datetime_conversion"] for record in records]
    assert times == sorted(times, reverse=True)
    assert len({record["conversion_status"] for record in records}) == 3
    assert len({record["aff_sub1"] for record in records}) > 3


@pytest.mark.timeout(10)
def test_range_of_days_is_served_newest_day_first(make_simulator: SimFactory) -> None:
    """A three-day range counts every day and serves 2025-01-03, then 01-02, then 01-01."""
    sim = make_simulator(records_per_day=4)
    token = sim_token(sim)
    body = post_range(sim, token, start="2025-01-01", end="2025-01-03").json()["data"]
    assert body["count"] == 12
    days = [record["datetime_conversion"][:10] for record in body["data"]]
    assert days == ["2025-01-03"] * 4 + ["2025-01-02"] * 4 + ["2025-01-01"] * 4
    assert {r["conversion_id"] for r in body["data"]} == sim.expected_ids(
        "default", "2025-01-01", "2025-01-03")


@pytest.mark.timeout(10)
def test_same_seed_serves_identical_data(make_simulator: SimFactory) -> None:
    """Two simulators with the same seed serve byte-identical pages; another seed differs."""
    first, second = make_simulator(seed=5), make_simulator(seed=5)
    other = make_simulator(seed=6)
    pages = [post_range(sim, sim_token(sim), page=2, limit=50).json()
             for sim in (first, second, other)]
    assert pages[0] == pages[1]
    assert pages[0]["data"]["data"] != pages[2]["data"]["data"]


@pytest.mark.timeout(10)
def test_each_account_has_its_own_conversions(make_simulator: SimFactory) -> None:
    """Two accounts sharing key "general" get different tokens and disjoint records."""
    sim = make_simulator(accounts=[SimAccount("shop-a", "general", "alpha"),
                                   SimAccount("shop-b", "general", "beta")],
                         records_per_day=20)
    ids_a = set(_ids(post_range(sim, sim_token(sim, 0))))
    ids_b = set(_ids(post_range(sim, sim_token(sim, 1))))
    assert ids_a == sim.expected_ids("shop-a", DAY, DAY)
    assert ids_b == sim.expected_ids("shop-b", DAY, DAY)
    assert len(ids_a) == len(ids_b) == 20
    assert not ids_a & ids_b
    assert {entry.account for entry in sim.ledger.snapshot()} == {"shop-a", "shop-b"}


@pytest.mark.timeout(10)
def test_huge_day_is_generated_lazily_and_served_fast(make_simulator: SimFactory) -> None:
    """A 5,000-page day only generates that day, and its last page comes back fast."""
    calls: list[tuple[str, dt.date]] = []

    def per_day(account: str, day: dt.date) -> int:
        calls.append((account, day))
        return 500_000 if day == dt.date(2025, 1, 2) else 10

    sim = make_simulator(records_per_day=per_day)
    token = sim_token(sim)
    began = time.perf_counter()
    body = post_range(sim, token, page=5000, limit=100).json()["data"]
    elapsed = time.perf_counter() - began
    assert body["count"] == 500_000 and len(body["data"]) == 100 and body["nextPage"] is None
    assert calls == [("default", dt.date(2025, 1, 2))]
    assert elapsed < 0.5


@pytest.mark.timeout(10)
def test_conversion_status_filter_is_applied(make_simulator: SimFactory) -> None:
    """filters[conversion_status]=rejected|pending serves only those statuses, counted."""
    sim = make_simulator(records_per_day=200)
    token = sim_token(sim)
    body = post_range(sim, token, **{"filters[conversion_status]": "rejected|pending"}).json()
    statuses = Counter(r["conversion_status"] for r in sim.records("default", DAY))
    assert body["data"]["count"] == statuses["rejected"] + statuses["pending"]
    assert {r["conversion_status"] for r in body["data"]["data"]} == {"rejected", "pending"}


@pytest.mark.timeout(10)
def test_data_range_bounds_by_time_of_day(make_simulator: SimFactory) -> None:
    """/conversions/data-range serves exactly the records between its two instants."""
    sim = make_simulator(records_per_day=500)
    token = sim_token(sim)
    form = {"start_date": f"{DAY} 06:00:00", "end_date": f"{DAY} 11:59:59", "limit": 100}
    response = requests.post(f"{sim.base_url}/conversions/data-range", data=form,
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
    data = response.json()["data"]
    wanted = [r["conversion_id"] for r in sim.records("default", DAY)
              if "06:00:00" <= r["datetime_conversion"][11:] <= "11:59:59"]
    assert 100 < data["count"] == len(wanted) < 500
    assert [r["conversion_id"] for r in data["data"]] == wanted[:100]


@pytest.mark.timeout(10)
def test_live_insert_makes_a_naive_pager_duplicate_and_miss(make_simulator: SimFactory) -> None:
    """A record inserted mid-paging shifts the rest: a naive pager sees one twice, misses one."""
    sim = make_simulator(records_per_day=30)
    sim.add_fault(Fault(kind="insert", date=DAY, page=2, attempts={1}, params={"count": 1}))
    token = sim_token(sim)
    before = sim.expected_ids("default", DAY, DAY)
    seen: list[int] = []
    page: int | None = 1
    while page is not None:
        data = post_range(sim, token, page=page, limit=10).json()["data"]
        seen += [record["conversion_id"] for record in data["data"]]
        page = data["nextPage"]
    after = sim.expected_ids("default", DAY, DAY)
    (inserted,) = after - before
    duplicates = [i for i, n in Counter(seen).items() if n > 1]
    assert duplicates == [seen[9]] and seen[10] == seen[9]  # last of page 1 is first of page 2
    assert set(seen) == before and after - set(seen) == {inserted}
    assert sim.records("default", DAY)[0]["conversion_id"] == inserted


@pytest.mark.timeout(10)
def test_insert_records_puts_new_ones_in_front(make_simulator: SimFactory) -> None:
    """insert_records(account, day, n) adds n newest records at the front of the served order."""
    sim = make_simulator(records_per_day=5)
    old = [r["conversion_id"] for r in sim.records("default", DAY)]
    new = sim.insert_records("default", DAY, 2)
    served = _ids(post_range(sim, sim_token(sim)))
    assert served == new[::-1] + old
    assert sim.records("default", DAY)[0]["datetime_conversion"] > f"{DAY} 22:59:59"


# -- throttle -----------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_throttle_answers_429_with_retry_after(make_simulator: SimFactory) -> None:
    """Over the per-minute limit: 429 Too Many Requests with Retry-After until the window slides."""
    clock = FakeClock()
    sim = make_simulator(rate_limit_per_minute=3, clock=clock, records_per_day=3)
    token = sim_token(sim)  # the authenticate call counts too
    assert [post_range(sim, token).status_code for _ in range(2)] == [200, 200]
    limited = post_range(sim, token)
    assert limited.status_code == 429
    assert limited.json() == {"status": "error", "message": "Too Many Requests", "data": []}
    assert limited.headers["Retry-After"] == "60"
    clock.now += 45
    assert post_range(sim, token).headers["Retry-After"] == "15"
    clock.now += 15
    assert post_range(sim, token).status_code == 200
    assert sim.ledger.outcomes("range")["rate_limited"] == 2


@pytest.mark.timeout(10)
def test_throttle_of_20_in_any_1s_window_slides(make_simulator: SimFactory) -> None:
    """20 per 1 s window: the 21st inside a second is 429; slots free one by one as time slides."""
    clock = FakeClock()
    sim = make_simulator(rate_limit_per_minute=20, rate_window=1.0, clock=clock,
                         records_per_day=3)
    token = sim_token(sim)
    clock.now += 1.0  # the authenticate call leaves the window
    start = clock.now
    statuses = []
    for index in range(20):
        clock.now = start + index * 0.05
        statuses.append(post_range(sim, token).status_code)
    assert statuses == [200] * 20
    clock.now = start + 0.99
    limited = post_range(sim, token)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert [post_range(sim, token).status_code for _ in range(5)] == [429] * 5  # not counted
    clock.now = start + 1.0  # the first admitted request is now exactly 1 s old: out
    assert [post_range(sim, token).status_code for _ in range(2)] == [200, 429]
    clock.now = start + 1.05
    assert [post_range(sim, token).status_code for _ in range(2)] == [200, 429]
    assert sim.ledger.outcomes("range") == Counter({"ok": 22, "rate_limited": 8})


@pytest.mark.timeout(10)
def test_throttle_of_20_per_second_on_the_real_clock(make_simulator: SimFactory) -> None:
    """On the real clock, 20 calls within a second are admitted and the 21st gets 429."""
    sim = make_simulator(rate_limit_per_minute=20, rate_window=1.0, records_per_day=1)
    with requests.Session() as session:
        began = time.monotonic()
        token = sim_token(sim)  # admitted call 1 of the window
        statuses = [post_range(sim, token, session=session).status_code for _ in range(20)]
        elapsed = time.monotonic() - began
    if elapsed >= 0.9:
        pytest.skip(f"21 calls took {elapsed:.2f} s here: too slow to fit in one window")
    assert statuses == [200] * 19 + [429]


@pytest.mark.timeout(10)
def test_throttle_429_without_retry_after(make_simulator: SimFactory) -> None:
    """With retry_after="no" the throttle's 429 carries no Retry-After header."""
    sim = make_simulator(rate_limit_per_minute=1, retry_after="no", clock=FakeClock())
    token = sim_token(sim)
    limited = post_range(sim, token)
    assert limited.status_code == 429
    assert "Retry-After" not in limited.headers


@pytest.mark.timeout(10)
def test_throttle_random_retry_after_is_seeded(make_simulator: SimFactory) -> None:
    """retry_after="random" mixes 429s with and without the header, the same way per seed."""
    patterns = []
    for _ in range(2):
        sim = make_simulator(rate_limit_per_minute=1, retry_after="random", clock=FakeClock())
        token = sim_token(sim)
        patterns.append(["Retry-After" in post_range(sim, token).headers for _ in range(16)])
    assert patterns[0] == patterns[1]
    assert set(patterns[0]) == {True, False}


@pytest.mark.timeout(10)
def test_throttle_is_per_account_and_can_be_off(make_simulator: SimFactory) -> None:
    """One account's exhausted limit does not throttle another; None disables the throttle."""
    sim = make_simulator(accounts=[SimAccount("a", "general", "x"), SimAccount("b", "general", "y")],
                         rate_limit_per_minute=1, clock=FakeClock(), records_per_day=1)
    token_a = sim_token(sim, 0)
    assert post_range(sim, token_a).status_code == 429
    assert _authenticate(sim, "general", "y").status_code == 200
    free = make_simulator(rate_limit_per_minute=None, clock=FakeClock(), records_per_day=1)
    token = sim_token(free)
    assert {post_range(free, token).status_code for _ in range(70)} == {200}


# -- ledger and rules ---------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_ledger_records_each_request_with_outcome_and_ids(make_simulator: SimFactory) -> None:
    """The ledger lists every request: endpoint, account, range, page, attempt, status, ids."""
    clock = FakeClock()
    sim = make_simulator(records_per_day=15, clock=clock)
    token = sim_token(sim)
    first = _ids(post_range(sim, token, page=1, limit=10))
    again = _ids(post_range(sim, token, page=1, limit=10))
    entries = sim.ledger.snapshot()
    assert [e.endpoint for e in entries] == ["authenticate", "range", "range"]
    assert entries[0].token == token and entries[0].outcome == "ok"
    page_entry = entries[1]
    assert (page_entry.account, page_entry.start_date, page_entry.end_date) == ("default", DAY, DAY)
    assert (page_entry.page, page_entry.limit, page_entry.status) == (1, 10, 200)
    assert [e.attempt for e in entries[1:]] == [1, 2]
    assert list(page_entry.ids) == first == again
    assert page_entry.token == token and page_entry.started == page_entry.finished == 1000.0
    assert sim.request_count() == 2 and sim.request_count("default", "authenticate") == 1
    assert sim.ledger.served_ids() == set(first)


@pytest.mark.timeout(10)
def test_fault_rule_hits_only_the_listed_attempts(make_simulator: SimFactory) -> None:
    """attempts={1, 2} fails the first two tries of that exact request and lets the third pass."""
    sim = make_simulator(records_per_day=30)
    sim.add_fault(Fault(kind="http_500", account="default", date=DAY, page=2, attempts={1, 2}))
    token = sim_token(sim)
    statuses = [post_range(sim, token, page=2, limit=10).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert post_range(sim, token, page=3, limit=10).status_code == 200
    assert [e.attempt for e in sim.ledger.snapshot() if e.page == 2] == [1, 2, 3]


@pytest.mark.timeout(10)
def test_fault_rule_matches_account_date_and_page(make_simulator: SimFactory) -> None:
    """A rule for (account b, 2025-01-02, page 1) spares account a, other days and other pages."""
    sim = make_simulator(accounts=[SimAccount("a", "general", "x"), SimAccount("b", "general", "y")],
                         records_per_day=30)
    sim.add_fault(Fault(kind="http_503", account="b", date=DAY, page=1))
    token_a, token_b = sim_token(sim, 0), sim_token(sim, 1)
    assert post_range(sim, token_a, page=1).status_code == 200
    assert post_range(sim, token_b, start="2025-01-03", page=1).status_code == 200
    assert post_range(sim, token_b, page=2, limit=10).status_code == 200
    assert post_range(sim, token_b, start="2025-01-01", end="2025-01-03").status_code == 503
    sim.clear_faults()
    assert post_range(sim, token_b, page=1).status_code == 200


@pytest.mark.timeout(10)
def test_random_faults_are_seeded_and_reproducible(make_simulator: SimFactory) -> None:
    """fault_rate draws the same faults for the same requests in two same-seed simulators."""
    outcomes = []
    for _ in range(2):
        sim = make_simulator(fault_rate=0.5, fault_kinds=("http_502", "envelope_error"),
                             rate_limit_per_minute=None, records_per_day=10)
        token = sim_token(sim)
        for page in range(1, 31):
            post_range(sim, token, page=page, limit=1)
        outcomes.append([e.outcome for e in sim.ledger.snapshot() if e.endpoint == "range"])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {"ok", "http_502", "envelope_error"}


@pytest.mark.timeout(10)
def test_fault_rate_one_faults_every_conversions_request(make_simulator: SimFactory) -> None:
    """fault_rate=1 with one kind faults every range request but never authenticate."""
    sim = make_simulator(fault_rate=1.0, fault_kinds=("http_503",), records_per_day=5)
    token = sim_token(sim)
    assert {post_range(sim, token, page=p).status_code for p in range(1, 6)} == {503}


@pytest.mark.timeout(10)
def test_fault_on_the_authenticate_endpoint(make_simulator: SimFactory) -> None:
    """endpoint="authenticate" rules fault the token call: a 503 first, then a token."""
    sim = make_simulator()
    sim.add_fault(Fault(kind="http_503", endpoint="authenticate", attempts={1}))
    assert _authenticate(sim, "general", "demo-secret").status_code == 503
    assert _authenticate(sim, "general", "demo-secret").status_code == 200


@pytest.mark.timeout(10)
def test_unknown_fault_kind_is_rejected() -> None:
    """Fault(kind=...) refuses names outside FAULT_KINDS and unknown endpoints."""
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault(kind="gremlins")
    with pytest.raises(ValueError, match="unknown endpoint"):
        Fault(kind="reset", endpoint="nowhere")


@pytest.mark.timeout(10)
def test_unknown_path_is_404_and_get_is_405(simulator: Simulator) -> None:
    """Paths outside the API get 404; a GET on an API path gets 405."""
    assert requests.post(f"{simulator.base_url}/nope", timeout=5).status_code == 404
    assert requests.get(f"{simulator.base_url}/authenticate", timeout=5).status_code == 405
