"""Property 5: the same inputs give the same decisions."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.property.harness import Driver, Snapshot, build_state, property_settings
from tests.property.strategies import Scenario, scenarios


def run(sc: Scenario, driver: Driver) -> Driver:
    """Apply every operation; engine errors are logged (and compared), not raised."""
    driver.record_errors = True
    for op in sc.ops:
        driver.apply(op)
    return driver


@property_settings(100)
@given(scenarios())
def test_same_inputs_give_same_decisions(sc: Scenario) -> None:
    """Two fresh states built from the same inputs, driven by the same operations, make
    identical decisions (uids, outcomes, reasons, reservations, victims) and end equal."""
    a = run(sc, Driver.of(sc.spec, sc.preempt, ordering=sc.ordering))
    b = run(sc, Driver.of(sc.spec, sc.preempt, ordering=sc.ordering))
    assert a.log == b.log
    assert Snapshot.of(a.state) == Snapshot.of(b.state)


@property_settings(100)
@given(scenarios(), st.data())
def test_decisions_do_not_depend_on_insertion_order(sc: Scenario, data: st.DataObject) -> None:
    """The same cluster published in another order (nodes, slices, queues) is the same
    state, so it gets the same decisions."""
    spec = sc.spec
    nodes = data.draw(st.permutations(range(len(spec.nodes))), label="node order")
    slices = data.draw(st.permutations(range(len(spec.slices))), label="slice order")
    queues = data.draw(st.permutations(range(len(spec.queues))), label="queue order")
    a = run(sc, Driver.of(spec, sc.preempt, ordering=sc.ordering))
    b = run(sc, Driver.of(spec, sc.preempt, build_state(spec, nodes, slices, queues), sc.ordering))
    assert a.log == b.log
    assert Snapshot.of(a.state) == Snapshot.of(b.state)


def replay_in_subprocess(scenarios: list[Scenario], hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.property.replay"],
        input=pickle.dumps(scenarios),
        capture_output=True,
        env=env,
        cwd=root,
        check=True,
    )
    return proc.stdout.decode().splitlines()


@property_settings(3)
@given(st.lists(scenarios(), min_size=12, max_size=12))
def test_decisions_do_not_depend_on_hash_seed(batch: list[Scenario]) -> None:
    """The same scenarios replayed in processes with different string hashing give the
    same decisions: no set or dict order leaks into a decision."""
    first = replay_in_subprocess(batch, "1")
    second = replay_in_subprocess(batch, "2024")
    assert len(first) == len(batch)
    for sc, a, b in zip(batch, first, second, strict=True):
        assert a == b, f"decisions differ across hash seeds for {sc}"
