"""Replay pickled scenarios and print a canonical record of every decision and end state.

Run as `python -m tests.property.replay < scenarios.pickle`; the determinism property runs
it under different PYTHONHASHSEED values, so set and dict iteration order cannot leak into
decisions unnoticed.
"""

from __future__ import annotations

import pickle
import sys

from tests.property.harness import Driver, Snapshot
from tests.property.strategies import Scenario


def canonical(driver: Driver) -> str:
    snap = Snapshot.of(driver.state)
    owners = sorted((dk, sorted(o)) for dk, o in snap.owners.items())
    return repr((driver.log, snap.node_usage, owners, snap.pool_usage, sorted(snap.pending)))


def replay(scenarios: list[Scenario]) -> list[str]:
    out = []
    for sc in scenarios:
        driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
        driver.record_errors = True
        for op in sc.ops:
            driver.apply(op)
        out.append(canonical(driver))
    return out


def main() -> None:
    scenarios = pickle.load(sys.stdin.buffer)
    for line in replay(scenarios):
        print(line)


if __name__ == "__main__":
    main()
