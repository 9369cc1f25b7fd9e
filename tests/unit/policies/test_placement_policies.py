"""Placement policies: bin-pack, spread, topology and fragmentation-aware, one behaviour each."""

from __future__ import annotations

import pytest

from controller.engine.cycle import Engine, Outcome
from controller.engine.model import Topology
from controller.engine.placement import Domain
from controller.engine.policy import BinPack
from policies import registry
from policies.placement import BinPackPolicy, FragmentationAware, Spread, TopologyPacking
from policies.registry import UnknownPolicy
from tests.builders import DRIVER, cluster, gang, gpu_slice, node

NVLINK = f"{DRIVER}/nvlinkDomain"


def decide(state, policy):
    result = Engine(state, placement=policy).cycle()
    result.ledger.commit_all()
    return {d.gang_uid: d for d in result.decisions}


def nodes_of(decision):
    return sorted({p.node for p in decision.reservation.pods})


def racks_of(state, decision):
    return sorted({state.nodes[n].node.labels["rack"] for n in nodes_of(decision)})


def add_node(state, name, gpus=8, held=0, **labels):
    """A node with `gpus` GPUs of which the first `held` are taken by someone else."""
    state.upsert_node(node(name, **labels))
    state.upsert_slice(gpu_slice(name, gpus, domain=f"nvl-{labels.get('rack', name)}"))
    if held:
        taken = tuple((DRIVER, name, f"gpu-{i}") for i in range(held))
        state.add_foreign_claim(f"other/{name}", taken)


def racks(state, per_rack, block="b0"):
    """Racks of empty 8-GPU nodes named `<i>-<rack>`, so name order interleaves racks."""
    for rack, count in per_rack.items():
        for i in range(count):
            add_node(state, f"{i}-{rack}", rack=rack, block=block)


def topology(**params):
    return registry.create("placement", {"name": "topology", "params": params})


# ---- bin-pack and spread ---------------------------------------------------------------


def test_bin_pack_is_the_engines_bin_pack_by_name():
    policy = registry.create("placement", "bin-pack")
    assert isinstance(policy, BinPack)
    assert policy.name == "bin-pack"


def test_bin_pack_puts_four_one_gpu_pods_on_one_node():
    state = cluster(nodes=4)
    state.add_gang(gang("g", pods=4, gpus=1))
    assert nodes_of(decide(state, BinPackPolicy())["g"]) == ["n0"]


def test_spread_puts_four_one_gpu_pods_on_four_nodes():
    state = cluster(nodes=4)
    state.add_gang(gang("g", pods=4, gpus=1))
    assert nodes_of(decide(state, Spread())["g"]) == ["n0", "n1", "n2", "n3"]


def test_spread_puts_a_pod_on_the_node_with_most_free_devices():
    state = cluster(nodes=0)
    add_node(state, "a", held=2)
    add_node(state, "b", held=5)
    add_node(state, "c", held=1)
    state.add_gang(gang("g", gpus=1))
    assert nodes_of(decide(state, Spread())["g"]) == ["c"]


def test_spread_tries_domains_with_most_room_first():
    domains = [Domain("r0", frozenset({"a"}), 2), Domain("r1", frozenset({"b"}), 5)]
    ordered = Spread().order_domains(gang("g", pods=2, gpus=8), domains, 2)
    assert [d.value for d in ordered] == ["r1", "r0"]


# ---- topology -----------------------------------------------------------------------------


def test_topology_keeps_a_gang_in_one_rack_when_one_has_room():
    state = cluster(nodes=0)
    racks(state, {"r0": 2, "r1": 3})
    state.add_gang(gang("g", pods=3, gpus=8))
    assert racks_of(state, decide(state, topology(key="rack"))["g"]) == ["r1"]


def test_topology_picks_the_tightest_rack_with_room():
    state = cluster(nodes=0)
    racks(state, {"r0": 4, "r1": 3, "r2": 2})
    state.add_gang(gang("g", pods=3, gpus=8))
    assert racks_of(state, decide(state, topology(key="rack"))["g"]) == ["r1"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"key": "rack"}, ["r1", "r3"]),
        ({"key": NVLINK, "device_attribute": True}, ["r1", "r3"]),
        ({}, ["r1", "r2", "r3"]),  # no topology: bin-pack by name spans three racks
    ],
)
def test_topology_spans_two_racks_rather_than_three_when_no_rack_has_room(params, expected):
    state = cluster(nodes=0)
    racks(state, {"r1": 3, "r2": 2, "r3": 1})
    state.add_gang(gang("g", pods=4, gpus=8))
    assert racks_of(state, decide(state, topology(**params))["g"]) == expected


def test_required_topology_fails_when_no_rack_has_room():
    state = cluster(nodes=0)
    racks(state, {"r0": 2, "r1": 2})
    state.add_gang(gang("g", pods=3, gpus=8))
    d = decide(state, topology(key="rack", mode="required"))["g"]
    assert d.outcome is Outcome.PENDING
    assert "needs 3 pods in one domain of node label rack" in d.reason


def test_gangs_own_topology_wins_over_the_policy_default():
    state = cluster(nodes=0)
    racks(state, {"r0": 2, "r1": 2}, block="b0")
    racks(state, {"r2": 2}, block="b1")
    state.add_gang(gang("g", pods=3, gpus=8, topology=Topology("block")))
    d = decide(state, topology(key="rack", mode="required"))["g"]
    assert racks_of(state, d) == ["r0", "r1"]


def test_required_topology_offers_only_single_domains_tightest_first():
    domains = [Domain(v, frozenset({v}), n) for v, n in [("r0", 5), ("r1", 3), ("r2", 2)]]
    policy = TopologyPacking(key="rack", mode="required")
    ordered = policy.order_domains(gang("g", pods=3, gpus=8), domains, 3)
    assert [d.value for d in ordered] == ["r1", "r0", "r2"]


def test_preferred_topology_offers_the_fewest_domains_largest_first_then_bigger_unions():
    fits = [("r0", 2), ("r1", 1), ("r2", 2), ("r3", 1)]
    domains = [Domain(v, frozenset({v}), n) for v, n in fits]
    ordered = TopologyPacking(key="rack").order_domains(gang("g", pods=3, gpus=8), domains, 3)
    assert [(d.value, d.pods_fitting) for d in ordered] == [
        ("r0", 2),
        ("r2", 2),
        ("r1", 1),
        ("r3", 1),
        ("r0+r1", 3),
        ("r0+r1+r2", 5),
        ("r0+r1+r2+r3", 6),
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bogus": 1}, "unknown parameter 'bogus'"),
        ({"mode": "sometimes"}, "mode"),
        ({"device_attribute": True}, "needs a key"),
        ({"key": "nvlink", "device_attribute": True}, "qualified domain/name"),
    ],
)
def test_a_bad_topology_parameter_is_a_clear_error(params, message):
    with pytest.raises(UnknownPolicy, match=message) as err:
        registry.create("placement", {"name": "topology", "params": params})
    assert "topology" in str(err.value)


# ---- fragmentation-aware ------------------------------------------------------------------


def mixed_sizes(state):
    """a: whole 8-GPU node; b: 16-GPU node with 10 free; c: whole 16-GPU node."""
    add_node(state, "a", gpus=8)
    add_node(state, "b", gpus=16, held=6)
    add_node(state, "c", gpus=16)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(BinPackPolicy(), ["a"]), (Spread(), ["c"]), (FragmentationAware(), ["b"])],
)
def test_only_fragmentation_aware_puts_a_small_pod_on_the_partly_used_node(policy, expected):
    state = cluster(nodes=0)
    mixed_sizes(state)
    state.add_gang(gang("small", gpus=2))
    assert nodes_of(decide(state, policy)["small"]) == expected


@pytest.mark.parametrize(
    ("policy", "outcome"),
    [
        (BinPackPolicy(), Outcome.PENDING),
        (Spread(), Outcome.PENDING),
        (FragmentationAware(), Outcome.ADMITTED),
    ],
)
def test_fragmentation_aware_keeps_a_whole_8_gpu_node_for_a_later_8_gpu_pod(policy, outcome):
    state = cluster(nodes=0)
    mixed_sizes(state)
    state.add_gang(gang("small", gpus=2, created=0))
    state.add_gang(gang("large", pods=4, gpus=8, created=1))
    d = decide(state, policy)
    assert d["small"].outcome is Outcome.ADMITTED
    assert d["large"].outcome is outcome


def test_fragmentation_aware_takes_the_tightest_partly_used_node():
    state = cluster(nodes=0)
    add_node(state, "a")
    add_node(state, "b", held=3)
    add_node(state, "c", held=5)
    state.add_gang(gang("g", gpus=2))
    assert nodes_of(decide(state, FragmentationAware())["g"]) == ["c"]


def test_fragmentation_aware_breaks_the_smallest_whole_node_when_no_partly_used_one_fits():
    state = cluster(nodes=0)
    add_node(state, "a", gpus=16)
    add_node(state, "b", gpus=8)
    add_node(state, "c", gpus=8, held=7)
    state.add_gang(gang("g", gpus=2))
    assert nodes_of(decide(state, FragmentationAware())["g"]) == ["b"]


@pytest.mark.parametrize(
    ("policy", "expected"), [(BinPackPolicy(), ["x"]), (FragmentationAware(), ["y"])]
)
def test_fragmentation_aware_puts_a_cpu_only_pod_on_a_partly_used_node(policy, expected):
    state = cluster(nodes=0, gpus_per_node=0)
    state.upsert_node(node("x", cpu=32))
    state.upsert_node(node("y", cpu=64))
    state.add_foreign_pod("other/pod", "y", {"cpu": 16_000})
    state.add_gang(gang("g", cpu=8))
    assert nodes_of(decide(state, policy)["g"]) == expected


def test_fragmentation_aware_fills_equal_nodes_one_at_a_time():
    state = cluster(nodes=3)
    for i in range(3):
        state.add_gang(gang(f"g{i}", pods=2, gpus=2, created=i))
    d = decide(state, FragmentationAware())
    assert [nodes_of(d[f"g{i}"]) for i in range(3)] == [["n0"], ["n0"], ["n1"]]


@pytest.mark.parametrize(
    ("policy", "expected"), [(BinPackPolicy(), ["r0"]), (FragmentationAware(), ["r1"])]
)
def test_fragmentation_aware_prefers_a_partly_used_rack_to_a_tighter_empty_one(policy, expected):
    state = cluster(nodes=0)
    add_node(state, "0-r0", rack="r0")
    for i in range(3):
        add_node(state, f"{i}-r1", held=4, rack="r1")
    state.add_gang(gang("g", pods=2, gpus=4, topology=Topology("rack")))
    assert racks_of(state, decide(state, policy)["g"]) == expected
