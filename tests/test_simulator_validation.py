"""The simulator's validation clock: pending statuses move on, seeded, and never move back."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from app.simulator import Simulator
from tests.support.simulator_fixtures import DAY, post_range, sim_token

SimFactory = Callable[..., Simulator]


def _served(sim: Simulator, token: str, **extra: str) -> list[dict[str, Any]]:
    """Every record of DAY, paged through over the socket at limit 100."""
    records: list[dict[str, Any]] = []
    page: int | None = 1
    while page is not None:
        response = post_range(sim, token, page=page, limit=100, **extra)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        records += data["data"]
        page = data["nextPage"]
    return records


@pytest.mark.timeout(10)
def test_advance_validation_resolves_some_pending_and_never_back(
        make_simulator: SimFactory) -> None:
    """Each step resolves some pending records to approved or rejected; none ever changes back."""
    sim = make_simulator(records_per_day=600, seed=3)
    history = [sim.statuses("default", DAY)]
    for _ in range(4):
        sim.advance_validation()
        history.append(sim.statuses("default", DAY))
    assert sim.validation_epoch == 4
    pending = [Counter(statuses.values())["pending"] for statuses in history]
    assert pending[0] > 100
    assert all(later < earlier for earlier, later in pairwise(pending))
    moves: Counter[tuple[str, str]] = Counter()
    for before, after in pairwise(history):
        assert before.keys() == after.keys()
        for conversion_id, status in before.items():
            if status != "pending":
                assert after[conversion_id] == status, conversion_id
            elif after[conversion_id] != "pending":
                moves[(status, after[conversion_id])] += 1
    assert set(moves) == {("pending", "approved"), ("pending", "rejected")}
    assert moves[("pending", "approved")] > moves[("pending", "rejected")]


@pytest.mark.timeout(10)
def test_validation_is_deterministic_for_a_seed(make_simulator: SimFactory) -> None:
    """Same seed, same steps: same statuses and pages; 1 + 1 steps equal 2; another seed differs."""
    first, second, other = (make_simulator(records_per_day=300, seed=seed) for seed in (5, 5, 6))
    first.advance_validation(2)
    second.advance_validation()
    second.advance_validation()
    other.advance_validation(2)
    assert first.statuses("default", DAY) == second.statuses("default", DAY)
    pages = [post_range(sim, sim_token(sim), page=2, limit=100).json()
             for sim in (first, second, other)]
    assert pages[0] == pages[1]
    assert pages[0]["data"]["data"] != pages[2]["data"]["data"]
    with pytest.raises(ValueError, match="forward"):
        first.advance_validation(-1)


@pytest.mark.timeout(10)
def test_statuses_agree_with_what_pages_serve(make_simulator: SimFactory) -> None:
    """After steps, the pages, records() and statuses() agree; only moved records carry an update."""
    sim = make_simulator(records_per_day=250, seed=2)
    token = sim_token(sim)
    initial = sim.statuses("default", DAY)
    sim.advance_validation(3)
    served = _served(sim, token)
    assert served == sim.records("default", DAY)
    assert {r["conversion_id"]: r["conversion_status"] for r in served} == sim.statuses(
        "default", DAY)
    moved = [r for r in served if r["conversion_status"] != initial[r["conversion_id"]]]
    assert moved
    for record in served:
        if record in moved:
            assert record["datetime_conversion_updated"] > record["datetime_conversion"]
        else:
            assert "datetime_conversion_updated" not in record


@pytest.mark.timeout(10)
def test_status_filter_follows_the_moving_statuses(make_simulator: SimFactory) -> None:
    """filters[conversion_status]=pending counts the records still pending now, not at start."""
    sim = make_simulator(records_per_day=300, seed=4)
    token = sim_token(sim)
    before = post_range(sim, token, **{"filters[conversion_status]": "pending"}).json()
    sim.advance_validation(2)
    after = post_range(sim, token, **{"filters[conversion_status]": "pending"}).json()
    pending_now = Counter(sim.statuses("default", DAY).values())["pending"]
    assert after["data"]["count"] == pending_now < before["data"]["count"]
    assert {r["conversion_status"] for r in after["data"]["data"]} == {"pending"}


@pytest.mark.timeout(10)
def test_validation_rate_zero_and_one(make_simulator: SimFactory) -> None:
    """validation_rate=0 never moves a status; 1 resolves every pending record at the first step."""
    frozen = make_simulator(records_per_day=200, validation_rate=0.0)
    start = frozen.statuses("default", DAY)
    frozen.advance_validation(10)
    assert frozen.statuses("default", DAY) == start
    eager = make_simulator(records_per_day=200, validation_rate=1.0)
    assert "pending" in eager.statuses("default", DAY).values()
    eager.advance_validation()
    assert "pending" not in eager.statuses("default", DAY).values()
    with pytest.raises(ValueError, match="validation_rate"):
        Simulator(validation_rate=1.5)


@pytest.mark.timeout(10)
def test_late_conversions_still_arrive_while_statuses_move(make_simulator: SimFactory) -> None:
    """insert_records after a step adds new ids to statuses() and pages; old statuses stay put."""
    sim = make_simulator(records_per_day=40, seed=7)
    sim.advance_validation()
    before = sim.statuses("default", DAY)
    new = sim.insert_records("default", DAY, 3)
    after = sim.statuses("default", DAY)
    assert set(after) == set(before) | set(new) and not set(before) & set(new)
    assert {i: after[i] for i in before} == before
    assert {after[i] for i in new} <= {"approved", "pending", "rejected"}
    served = _served(sim, sim_token(sim))
    assert [r["conversion_id"] for r in served[:3]] == new[::-1]


@pytest.mark.timeout(10)
def test_advance_validation_is_thread_safe() -> None:
    """Eight threads taking 25 steps each leave the clock at exactly 200."""
    sim = Simulator(records_per_day=1)
    threads = [threading.Thread(target=lambda: [sim.advance_validation() for _ in range(25)])
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sim.validation_epoch == 200
