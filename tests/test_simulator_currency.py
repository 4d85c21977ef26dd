"""The simulator's currencies: local per account, converted by filters[preferred_currency]."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from app.simulator import LOCAL_CURRENCIES, RATES, SimAccount, Simulator, convert
from app.simulator.currency import AMOUNT_FIELDS
from tests.support.simulator_fixtures import DAY, post_range, sim_token

SimFactory = Callable[..., Simulator]
CURRENCY = "filters[preferred_currency]"


def _records(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    records = body["data"]["data"]
    assert isinstance(records, list)
    return records


def _by_hand(amount: str, target: str, local: str) -> str:
    """One amount converted the way the API notes say: times the rate, half up to cents."""
    value = Decimal(amount) * RATES[target][local]
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):.2f}"


def _two_currency_sim(make_simulator: SimFactory, **kwargs: Any) -> Simulator:
    return make_simulator(accounts=[SimAccount("my-shop", "general", "alpha"),
                                    SimAccount("sg-shop", "general", "beta", currency="SGD")],
                          **kwargs)


@pytest.mark.timeout(10)
def test_records_carry_the_account_local_currency_without_a_filter(
        make_simulator: SimFactory) -> None:
    """Without preferred_currency every record is in its account's local currency (MYR, SGD)."""
    sim = _two_currency_sim(make_simulator, records_per_day=40)
    for index, (name, currency) in enumerate((("my-shop", "MYR"), ("sg-shop", "SGD"))):
        served = _records(post_range(sim, sim_token(sim, index)))
        assert sim.local_currency(name) == currency
        assert {record["currency"] for record in served} == {currency}
        assert served == sim.records(name, DAY)[:len(served)]


@pytest.mark.timeout(10)
def test_preferred_currency_usd_converts_every_amount(make_simulator: SimFactory) -> None:
    """filters[preferred_currency]=USD serves the same records, amounts times the MYR->USD rate."""
    sim = make_simulator(records_per_day=150)
    token = sim_token(sim)
    local = _records(post_range(sim, token, page=2, limit=50))
    served = _records(post_range(sim, token, page=2, limit=50, **{CURRENCY: "USD"}))
    assert [r["conversion_id"] for r in served] == [r["conversion_id"] for r in local]
    assert served == [Simulator.expected_record(record, "USD") for record in local]
    assert served == sim.records("default", DAY, currency="USD")[50:100]
    for before, after in zip(local, served, strict=True):
        assert before["currency"] == "MYR" and after["currency"] == "USD"
        for field in AMOUNT_FIELDS:
            assert after[field] == _by_hand(before[field], "USD", "MYR")
            assert isinstance(after[field], str)
        untouched = set(before) - set(AMOUNT_FIELDS) - {"currency"}
        assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}
    assert sum(float(r["sale_amount"]) for r in served) < 0.3 * sum(
        float(r["sale_amount"]) for r in local)


@pytest.mark.timeout(10)
def test_preferred_currency_myr_converts_another_local_currency(
        make_simulator: SimFactory) -> None:
    """An SGD account asked for MYR gets amounts times the SGD->MYR rate and currency MYR."""
    sim = _two_currency_sim(make_simulator, records_per_day=30)
    token = sim_token(sim, 1)
    local = _records(post_range(sim, token))
    served = _records(post_range(sim, token, **{CURRENCY: "MYR"}))
    assert {record["currency"] for record in served} == {"MYR"}
    assert served == [convert(record, "MYR") for record in local]
    assert all(after["payout"] == _by_hand(before["payout"], "MYR", "SGD")
               for before, after in zip(local, served, strict=True))
    assert any(after["sale_amount"] != before["sale_amount"]
               for before, after in zip(local, served, strict=True))


@pytest.mark.timeout(10)
def test_data_range_honours_preferred_currency(make_simulator: SimFactory) -> None:
    """/conversions/data-range converts the same way as /conversions/range."""
    sim = make_simulator(records_per_day=60)
    token = sim_token(sim)
    form = {"start_date": f"{DAY} 00:00:00", "end_date": f"{DAY} 23:59:59", CURRENCY: "USD"}
    response = requests.post(f"{sim.base_url}/conversions/data-range", data=form,
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert _records(response) == sim.records("default", DAY, currency="USD")


@pytest.mark.timeout(10)
def test_empty_preferred_currency_keeps_the_local_currency(make_simulator: SimFactory) -> None:
    """An empty filters[preferred_currency] is the same as none: local amounts, local currency."""
    sim = make_simulator(records_per_day=20)
    token = sim_token(sim)
    assert _records(post_range(sim, token, **{CURRENCY: ""})) == _records(post_range(sim, token))
    assert {r["currency"] for r in sim.records("default", DAY)} == {"MYR"}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("asked", ["EURO", "EUR", "SGD", "usd"])
def test_unknown_preferred_currency_is_401_incorrect_arguments(
        make_simulator: SimFactory, asked: str) -> None:
    """Anything but USD or MYR is the API's bad-argument 401, naming preferred_currency."""
    sim = make_simulator(records_per_day=5)
    response = post_range(sim, sim_token(sim), **{CURRENCY: asked})
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error" and body["data"] == []
    assert body["message"].startswith("Incorrect arguments: preferred_currency")
    assert repr(asked) in body["message"]
    entry = sim.ledger.snapshot()[-1]
    assert (entry.outcome, entry.ids, entry.preferred_currency) == ("validation", (), asked)


@pytest.mark.timeout(10)
def test_ledger_shows_the_form_and_currency_of_each_request(make_simulator: SimFactory) -> None:
    """Each conversions entry keeps its form and preferred_currency; authenticate's keeps none."""
    sim = make_simulator(records_per_day=5)
    token = sim_token(sim)
    for extra in ({CURRENCY: "USD"}, {CURRENCY: "MYR"}, {}, {CURRENCY: ""}):
        post_range(sim, token, **extra)
    entries = sim.ledger.snapshot()
    assert [e.endpoint for e in entries] == ["authenticate"] + ["range"] * 4
    assert entries[0].form == {} and entries[0].preferred_currency is None
    assert [e.preferred_currency for e in entries[1:]] == ["USD", "MYR", None, ""]
    assert entries[1].form == {"start_date": DAY, "end_date": DAY, "page": "1", "limit": "100",
                               CURRENCY: "USD"}
    assert CURRENCY not in entries[3].form


def test_convert_rounds_each_amount_half_up_and_keeps_its_form() -> None:
    """convert() multiplies each amount by RATES, rounds half up to cents, keeps str or number."""
    record = {"conversion_id": 7, "currency": "MYR", "sale_amount": "0.20", "payout": 100,
              "base_payout": "0.02", "bonus_payout": 2.5, "extra": "kept"}
    assert RATES["USD"]["MYR"] == Decimal("0.2250")
    converted = convert(record, "USD")
    assert converted == {"conversion_id": 7, "currency": "USD", "sale_amount": "0.05",
                         "payout": 22.5, "base_payout": "0.00", "bonus_payout": 0.56,
                         "extra": "kept"}
    assert record["currency"] == "MYR"  # the input is left alone
    assert convert(record, None) == record and convert(record, None) is not record
    assert convert(record, "") == record
    assert convert({**record, "currency": "USD"}, "USD")["sale_amount"] == "0.20"


def test_convert_and_accounts_refuse_unknown_currencies() -> None:
    """convert() refuses a target other than USD/MYR; SimAccount refuses an unknown local one."""
    record = {"currency": "MYR", "sale_amount": "1.00"}
    with pytest.raises(ValueError, match="preferred_currency"):
        convert(record, "EURO")
    with pytest.raises(ValueError, match="no rate"):
        convert({**record, "currency": "EUR"}, "USD")
    with pytest.raises(ValueError, match="local currency"):
        SimAccount(currency="EUR")
    with pytest.raises(TypeError):
        RATES["USD"]["MYR"] = Decimal(1)  # type: ignore[index]


def test_readme_rate_table_matches_rates() -> None:
    """The rate table in app/simulator/README.md is RATES, row by row."""
    readme = (Path(__file__).resolve().parent.parent / "app" / "simulator" / "README.md")
    rows = re.findall(r"^\| ([A-Z]{3}) \| ([\d.]+) \| ([\d.]+) \|$", readme.read_text("utf-8"),
                      re.MULTILINE)
    table = {local: (Decimal(usd), Decimal(myr)) for local, usd, myr in rows}
    assert table == {local: (RATES["USD"][local], RATES["MYR"][local])
                     for local in LOCAL_CURRENCIES}
