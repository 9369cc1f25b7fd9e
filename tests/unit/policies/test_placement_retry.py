"""The engine's retry (its second greedy pass) asks the placement policy for its order."""

from __future__ import annotations

import pytest

from controller.engine.cycle import Engine, Outcome
from controller.engine.model import ClaimSpec, DeviceRequest, PodClaim, PodSet, Topology
from controller.engine.placement import PodDemand
from policies.placement import BinPackPolicy, FragmentationAware, TopologyPacking
from tests.builders import DRIVER, GIB, GPU, cluster, gang, gpu_slice, node


def add_node(state, name, cpu=64, held=0, **labels):
    """An 8-GPU node of which the first `held` GPUs are taken by someone else."""
    state.upsert_node(node(name, cpu=cpu, **labels))
    state.upsert_slice(gpu_slice(name, 8))
    if held:
        state.add_foreign_claim(
            f"other/{name}", tuple((DRIVER, name, f"gpu-{i}") for i in range(held))
        )


def pods(name, gpus, cpu):
    claim = PodClaim("gpu", ClaimSpec((DeviceRequest.exactly("gpus", GPU, gpus),)))
    return PodSet(name, 1, {"cpu": cpu * 1000, "memory": GIB}, claims=(claim,))


def retry_trap():
    """The first pass puts `a` (4 GPUs) on the tightest node, cpu-roomy, which `b` (60 cpu)
    needs; the retry must move `a`: to the other partly used node, or to the whole one."""
    state = cluster(nodes=0)
    add_node(state, "cpu-roomy", held=4)
    add_node(state, "partly", cpu=4, held=2)
    add_node(state, "whole", cpu=4)
    state.add_gang(gang("g", pod_sets=(pods("a", 4, 1), pods("b", 2, 60))))
    return state


@pytest.mark.parametrize(
    ("policy", "nodes"),
    [
        (FragmentationAware(), {"cpu-roomy", "partly"}),
        (BinPackPolicy(), {"cpu-roomy", "whole"}),
    ],
)
def test_the_retry_keeps_a_whole_node_only_under_fragmentation_aware(policy, nodes):
    result = Engine(retry_trap(), placement=policy).cycle()
    d = {d.gang_uid: d for d in result.decisions}["g"]
    assert d.outcome is Outcome.ADMITTED
    assert d.attempts == 2
    assert {p.node for p in d.reservation.pods} == nodes


def test_topology_retry_walks_one_rack_at_a_time_roomiest_first():
    state = cluster(nodes=0)
    for name, rack in [("0-r0", "r0"), ("0-r1", "r1"), ("0-r2", "r2"), ("1-r1", "r1"),
                       ("1-r2", "r2"), ("2-r1", "r1")]:  # fmt: skip
        add_node(state, name, rack=rack)
    g = gang("g", pods=6, gpus=8, topology=Topology("rack"))
    demand = PodDemand.of(g.pod_sets[0])
    eligible = frozenset(state.nodes)
    order = TopologyPacking().retry_candidates(state, g, demand, eligible)
    racks = [state.nodes[n].node.labels["rack"] for n in order]
    assert racks == ["r1", "r1", "r1", "r2", "r2", "r0"]


def test_topology_retry_without_a_topology_is_most_free_first():
    state = cluster(nodes=0)
    add_node(state, "busy", held=6)
    add_node(state, "idle")
    g = gang("g", gpus=1)
    demand = PodDemand.of(g.pod_sets[0])
    order = TopologyPacking().retry_candidates(state, g, demand, frozenset(state.nodes))
    assert order == ["idle", "busy"]
