"""The Involve Asia API simulator: real HTTP on 127.0.0.1, a seeded dataset, faults, a ledger.

It is the only API the tests, the demo and the benchmarks see. Use it in-process::

    with Simulator(records_per_day=1000, seed=1) as sim:
        sim.add_fault(Fault(kind="reset", date="2025-01-02", page=3, attempts={1}))
        ...  # point a client at sim.base_url, then compare with sim.expected_ids(...)
        sim.advance_validation()  # pending records move on; sim.statuses(account, day) tells

or from a shell: ``python -m app.simulator --help``. See ``app/simulator/README.md``.
"""

from app.simulator.auth import SimAccount
from app.simulator.currency import LOCAL_CURRENCIES, PREFERRED_CURRENCIES, RATES, convert
from app.simulator.dataset import Dataset
from app.simulator.faults import DEFAULT_RANDOM_FAULTS, FAULT_KINDS, LYING_FAULTS, Fault
from app.simulator.ledger import Ledger, LedgerEntry
from app.simulator.server import Simulator

__all__ = [
    "DEFAULT_RANDOM_FAULTS",
    "FAULT_KINDS",
    "LOCAL_CURRENCIES",
    "LYING_FAULTS",
    "PREFERRED_CURRENCIES",
    "RATES",
    "Dataset",
    "Fault",
    "Ledger",
    "LedgerEntry",
    "SimAccount",
    "Simulator",
    "convert",
]
