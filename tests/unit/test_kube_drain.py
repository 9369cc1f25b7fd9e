"""Whether an admitted gang may take its nodes and devices yet: not while others (the
victims it preempted, as the caches count them once evicted) still hold them."""

from __future__ import annotations

from controller.engine.state import ClusterState
from controller.kube.drain import still_held
from tests.builders import GIB, cluster, engine, gang


def admitted_on_one_node(gpus: int = 8) -> ClusterState:
    """Gang `g`: two pods of 30 cpus and gpus/2 GPUs each, on the one 64-cpu node n0."""
    state = cluster(nodes=1, gpus_per_node=8)
    state.add_gang(gang("g", pods=2, gpus=gpus // 2, cpu=30))
    engine(state).cycle().ledger.commit_all()
    return state


def test_a_gang_nobody_else_holds_anything_of_may_go_ahead() -> None:
    assert still_held(admitted_on_one_node(), "g") is None


def test_a_device_a_foreign_claim_still_holds_holds_the_gang_back() -> None:
    state = admitted_on_one_node()
    device = state.admitted["g"].pods[0].claims[0].devices[0].device
    state.add_foreign_claim("default/victim-gpu", (device,))
    assert still_held(state, "g") == (
        f"device {'/'.join(device)} is still held by ResourceClaim default/victim-gpu"
    )
    state.remove_foreign_claim("default/victim-gpu")
    assert still_held(state, "g") is None


def test_a_node_over_its_allocatable_on_what_the_gang_asks_for_holds_it_back() -> None:
    state = admitted_on_one_node(gpus=0)
    state.add_foreign_pod("default/victim", "n0", {"cpu": 8000})
    assert still_held(state, "g") == "node n0 still has pods of others on it: cpu 68 used of 64"


def test_a_node_over_on_something_the_gang_does_not_ask_for_does_not() -> None:
    state = admitted_on_one_node(gpus=0)
    state.add_foreign_pod("default/big", "n0", {"hugepages-2Mi": GIB})
    assert still_held(state, "g") is None
