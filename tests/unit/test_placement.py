"""Placement: nodes, DRA devices, constraints, topology and the bounded search."""

from __future__ import annotations

from controller.engine.cycle import Engine, Outcome
from controller.engine.model import (
    AllocationMode,
    ClaimSpec,
    DeviceRequest,
    DeviceSubRequest,
    MatchAttribute,
    Node,
    PodClaim,
    PodSet,
    Taint,
    Toleration,
    Topology,
    TopologyMode,
)
from tests.builders import DRIVER, GIB, GPU, cluster, gang, gpu_claim, gpu_slice, node, pod_set


def decide(state, **kw):
    result = Engine(state, **kw).cycle()
    result.ledger.commit_all()
    return {d.gang_uid: d for d in result.decisions}


def nodes_of(decision):
    return sorted({p.node for p in decision.reservation.pods})


def devices_of(decision):
    return [da for p in decision.reservation.pods for c in p.claims for da in c.devices]


def test_bin_pack_fills_a_partly_used_node_first():
    state = cluster(nodes=2)
    state.add_gang(gang("first", gpus=6, created=0))
    state.add_gang(gang("second", gpus=2, created=1))
    d = decide(state)
    assert nodes_of(d["second"]) == nodes_of(d["first"])


def test_devices_held_by_foreign_claims_are_never_handed_out():
    state = cluster(nodes=1)
    state.add_foreign_claim("other/claim", ((DRIVER, "n0", "gpu-0"), (DRIVER, "n0", "gpu-1")))
    state.add_gang(gang("g", gpus=6))
    d = decide(state)["g"]
    assert d.outcome is Outcome.ADMITTED
    assert {da.device[2] for da in devices_of(d)} == {f"gpu-{i}" for i in range(2, 8)}


def test_foreign_pods_count_against_node_capacity():
    state = cluster(nodes=1)
    state.add_foreign_pod("kube-system/big", "n0", {"cpu": 60_000})
    state.add_gang(gang("g", cpu=8))
    assert decide(state)["g"].outcome is Outcome.PENDING


def test_node_selector_limits_candidate_nodes():
    state = cluster(nodes=0)
    state.upsert_node(node("plain"))
    state.upsert_node(node("fast", accel="yes"))
    state.add_gang(gang("g", pod_sets=(pod_set(1, cpu=1, node_selector={"accel": "yes"}),)))
    assert nodes_of(decide(state)["g"]) == ["fast"]


def test_a_tainted_node_needs_a_toleration():
    state = cluster(nodes=0)
    tainted = Node("t", {"cpu": 8000, "memory": GIB * 8, "pods": 10}, taints=(Taint("gpu"),))
    state.upsert_node(tainted)
    state.add_gang(gang("plain"))
    state.add_gang(
        gang("tolerant", pod_sets=(pod_set(1, tolerations=(Toleration("gpu", "Exists"),)),))
    )
    d = decide(state)
    assert d["plain"].outcome is Outcome.PENDING
    assert d["tolerant"].outcome is Outcome.ADMITTED


def test_request_selectors_pick_matching_devices_only():
    state = cluster(nodes=0)
    state.upsert_node(node("small"))
    state.upsert_slice(gpu_slice("small", memory="40Gi"))
    state.upsert_node(node("large"))
    state.upsert_slice(gpu_slice("large", memory="80Gi"))
    selector = f'device.capacity["{DRIVER}"].memory.compareTo(quantity("80Gi")) >= 0'
    state.add_gang(gang("g", pod_sets=(pod_set(1, claims=(gpu_claim(2, (selector,)),)),)))
    assert nodes_of(decide(state)["g"]) == ["large"]


def test_match_attribute_keeps_a_claims_devices_in_one_domain():
    state = cluster(nodes=0)
    state.upsert_node(node("n"))
    mixed = gpu_slice("n", count=4, domain="d0")
    devices = tuple(
        d
        if i < 2
        else type(d)(
            d.driver,
            d.pool,
            d.name,
            d.node,
            {**d.attributes, f"{DRIVER}/nvlinkDomain": "d1"},
            d.capacity,
        )
        for i, d in enumerate(mixed.devices)
    )
    state.upsert_slice(type(mixed)(mixed.name, mixed.driver, mixed.pool, mixed.node, devices))
    spec = ClaimSpec(
        (DeviceRequest.exactly("a", GPU, 1), DeviceRequest.exactly("b", GPU, 1)),
        (MatchAttribute(f"{DRIVER}/nvlinkDomain"),),
    )
    state.add_foreign_claim("x", ((DRIVER, "n", "gpu-0"),))
    state.add_gang(gang("g", pod_sets=(pod_set(1, claims=(PodClaim("c", spec),)),)))
    picked = {da.device[2] for da in devices_of(decide(state)["g"])}
    assert picked == {"gpu-2", "gpu-3"}


def test_first_available_falls_back_to_the_next_alternative():
    state = cluster(nodes=1, gpus_per_node=2)
    request = DeviceRequest(
        "gpus",
        (DeviceSubRequest("eight", GPU, count=8), DeviceSubRequest("two", GPU, count=2)),
        first_available=True,
    )
    claim = PodClaim("c", ClaimSpec((request,)))
    state.add_gang(gang("g", pod_sets=(pod_set(1, claims=(claim,)),)))
    d = decide(state)["g"]
    assert {da.request for da in devices_of(d)} == {"gpus/two"}
    assert d.reservation.charge["devices/gpu"] == 2


def test_allocation_mode_all_takes_every_matching_device_on_the_node():
    state = cluster(nodes=1, gpus_per_node=3)
    request = DeviceRequest.exactly("all", GPU, mode=AllocationMode.ALL)
    state.add_gang(
        gang("g", pod_sets=(pod_set(1, claims=(PodClaim("c", ClaimSpec((request,))),)),))
    )
    assert len(devices_of(decide(state)["g"])) == 3


def test_allocation_mode_all_fails_when_one_matching_device_is_taken():
    state = cluster(nodes=1, gpus_per_node=3)
    state.add_foreign_claim("x", ((DRIVER, "n0", "gpu-1"),))
    request = DeviceRequest.exactly("all", GPU, mode=AllocationMode.ALL)
    state.add_gang(
        gang("g", pod_sets=(pod_set(1, claims=(PodClaim("c", ClaimSpec((request,))),)),))
    )
    assert decide(state)["g"].outcome is Outcome.PENDING


def test_missing_device_class_is_named_in_the_reason():
    state = cluster(nodes=1)
    claim = PodClaim("c", ClaimSpec((DeviceRequest.exactly("r", "tpu", 1),)))
    state.add_gang(gang("g", pod_sets=(pod_set(1, claims=(claim,)),)))
    assert "DeviceClass tpu does not exist" in decide(state)["g"].reason


def racks(state, per_rack: dict[str, int]) -> None:
    for rack, count in per_rack.items():
        for i in range(count):
            name = f"{rack}-{i}"
            state.upsert_node(node(name, rack=rack))
            state.upsert_slice(gpu_slice(name, domain=f"nvl-{rack}"))


def test_required_topology_keeps_the_gang_in_one_rack():
    state = cluster(nodes=0)
    racks(state, {"r0": 1, "r1": 3})
    state.add_gang(gang("g", pods=3, gpus=8, topology=Topology("rack")))
    assert nodes_of(decide(state)["g"]) == ["r1-0", "r1-1", "r1-2"]


def test_required_topology_explains_the_best_domain_when_none_is_big_enough():
    state = cluster(nodes=0)
    racks(state, {"r0": 2, "r1": 2})
    state.add_gang(gang("g", pods=3, gpus=8, topology=Topology("rack")))
    d = decide(state)["g"]
    assert d.outcome is Outcome.PENDING
    assert "needs 3 pods in one domain of node label rack" in d.reason
    assert "best domain rack=r0 has room for 2" in d.reason


def test_preferred_topology_falls_back_to_spanning_domains():
    state = cluster(nodes=0)
    racks(state, {"r0": 2, "r1": 2})
    state.add_gang(gang("g", pods=3, gpus=8, topology=Topology("rack", TopologyMode.PREFERRED)))
    assert len(nodes_of(decide(state)["g"])) == 3


def test_device_attribute_topology_uses_devices_of_one_domain():
    state = cluster(nodes=0)
    racks(state, {"r0": 1, "r1": 2})
    topo = Topology(f"{DRIVER}/nvlinkDomain", device_attribute=True)
    state.add_gang(gang("g", pods=2, gpus=8, topology=topo))
    d = decide(state)["g"]
    assert nodes_of(d) == ["r1-0", "r1-1"]
    assert d.attempts == 1


def greedy_trap():
    """Bin-packing puts pod set a on the 4-GPU node, which b (needing 60 cpu) also needs."""
    state = cluster(nodes=0)
    state.upsert_node(node("roomy-cpu", cpu=64))
    state.upsert_slice(gpu_slice("roomy-cpu", count=4))
    state.upsert_node(node("roomy-gpu", cpu=4))
    state.upsert_slice(gpu_slice("roomy-gpu", count=6))
    sets = (
        PodSet("a", 1, {"cpu": 1000}, claims=(gpu_claim(4),)),
        PodSet("b", 1, {"cpu": 60_000}, claims=(gpu_claim(2),)),
    )
    state.add_gang(gang("g", pod_sets=sets))
    return state


def test_search_finds_an_assignment_the_first_greedy_pass_misses():
    d = decide(greedy_trap(), search_bound=4)["g"]
    assert d.outcome is Outcome.ADMITTED
    assert d.attempts == 2


def test_search_bound_is_reported_when_it_stops_the_search():
    d = decide(greedy_trap(), search_bound=1)["g"]
    assert d.outcome is Outcome.PENDING
    assert "pod set b: placed 0 of 1 pods" in d.reason


def test_first_available_skips_an_alternative_whose_class_does_not_exist():
    state = cluster(nodes=1, gpus_per_node=2)
    request = DeviceRequest(
        "gpus",
        (DeviceSubRequest("tpu", "tpu", count=1), DeviceSubRequest("gpu", GPU, count=1)),
        first_available=True,
    )
    claim = PodClaim("c", ClaimSpec((request,)))
    state.add_gang(gang("g", pod_sets=(pod_set(1, claims=(claim,)),)))
    assert {da.request for da in devices_of(decide(state)["g"])} == {"gpus/gpu"}
