"""Fixtures around the Involve Asia simulator: started on 127.0.0.1, stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from app.simulator import Simulator


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """Factory: `make_simulator(**kwargs)` returns a started Simulator; all stop at teardown."""
    started: list[Simulator] = []

    def factory(**kwargs: Any) -> Simulator:
        simulator = Simulator(**kwargs).start()
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        simulator.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    """A started Simulator with every default (stopped at teardown)."""
    return make_simulator()


DAY = "2025-01-02"
"""A closed past day most simulator tests page through."""


def sim_token(simulator: Simulator, account: int = 0, timeout: float = 5.0) -> str:
    """Authenticate as the simulator's `account`-th account and return the bearer token."""
    creds = simulator.accounts[account]
    response = requests.post(f"{simulator.base_url}/authenticate",
                             data={"key": creds.key, "secret": creds.secret}, timeout=timeout)
    response.raise_for_status()
    token = response.json()["data"]["token"]
    assert isinstance(token, str)
    return token


def post_range(simulator: Simulator, token: str | None, *, start: str = DAY,
               end: str | None = None, page: int | str = 1, limit: int | str = 100,
               timeout: float = 5.0, session: requests.Session | None = None,
               stream: bool = False, **extra: str) -> requests.Response:
    """POST /conversions/range with a plain `requests` call (or on `session`); `extra` are
    more form fields (e.g. filters)."""
    form = {"start_date": start, "end_date": end or start, "page": page, "limit": limit, **extra}
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    poster = session.post if session is not None else requests.post
    return poster(f"{simulator.base_url}/conversions/range", data=form, headers=headers,
                  timeout=timeout, stream=stream)
