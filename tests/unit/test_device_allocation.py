"""The DRA allocator finds an allocation whenever one exists (cases a greedy one refused)."""

from __future__ import annotations

from controller.engine.cycle import Engine, Outcome
from controller.engine.devices import DeviceInventory
from controller.engine.model import (
    AllocationMode,
    ClaimSpec,
    Device,
    DeviceClass,
    DeviceRequest,
    DeviceSubRequest,
    MatchAttribute,
    PodClaim,
    PodSet,
    Queue,
    QuotaLimit,
    ResourceSlice,
    Topology,
)
from controller.engine.placement import DeviceSearch
from tests.builders import DRIVER, GIB, GPU, cluster, gang, node, pod_set

NUMA = f"{DRIVER}/numa"
NUMA0 = f'device.attributes["{DRIVER}"].numa == 0'
NIC = "nic"
NET = "net.example.com"


def decide(state, **kw):
    result = Engine(state, **kw).cycle()
    result.ledger.commit_all()
    return {d.gang_uid: d for d in result.decisions}


def devices_of(decision):
    return [da for p in decision.reservation.pods for c in p.claims for da in c.devices]


def gpu(node_name: str, i: int, shareable: bool = False, **attrs: object) -> Device:
    return Device(
        DRIVER,
        node_name,
        f"gpu-{i}",
        node_name,
        {f"{DRIVER}/{k}": v for k, v in attrs.items()},  # type: ignore[misc]
        shareable=shareable,
    )


def one_node(*devices: Device):
    """Node n with the given GPUs (class gpu) and nothing else."""
    state = cluster(nodes=0)
    state.upsert_node(node("n"))
    state.upsert_slice(ResourceSlice("n-gpus", DRIVER, "n", "n", devices))
    return state


def numa_node():
    """gpu-0 on NUMA 0, gpu-1 on NUMA 1: 'any GPU' taken greedily is the NUMA-0 one."""
    return one_node(gpu("n", 0, numa=0), gpu("n", 1, numa=1))


def any_request(name: str = "any") -> DeviceRequest:
    return DeviceRequest.exactly(name, GPU, 1)


def numa0_request(name: str = "numa0") -> DeviceRequest:
    return DeviceRequest.exactly(name, GPU, 1, (NUMA0,))


def admit_one_pod(state, *claims: PodClaim, **kw: object):
    state.add_gang(gang("g", pod_sets=(pod_set(1, claims=claims),)))
    return decide(state, **kw)["g"]


def test_any_gpu_then_a_numa0_gpu_in_one_claim_is_admitted():
    claim = PodClaim("c", ClaimSpec((any_request(), numa0_request())))
    d = admit_one_pod(numa_node(), claim)
    assert d.outcome is Outcome.ADMITTED
    picked = {da.request: da.device[2] for da in devices_of(d)}
    assert picked == {"any": "gpu-1", "numa0": "gpu-0"}


def test_any_gpu_then_a_numa0_gpu_in_two_claims_of_one_pod_is_admitted():
    first = PodClaim("first", ClaimSpec((any_request(),)))
    second = PodClaim("second", ClaimSpec((numa0_request(),)))
    d = admit_one_pod(numa_node(), first, second)
    assert d.outcome is Outcome.ADMITTED
    claims = {c.claim: c.devices[0].device[2] for p in d.reservation.pods for c in p.claims}
    assert claims == {"first": "gpu-1", "second": "gpu-0"}


def test_first_available_backtracks_when_its_first_choice_starves_a_later_request():
    request = DeviceRequest(
        "r",
        (DeviceSubRequest("numa0", GPU, (NUMA0,)), DeviceSubRequest("any", GPU)),
        first_available=True,
    )
    claim = PodClaim("c", ClaimSpec((request, numa0_request("later"))))
    d = admit_one_pod(numa_node(), claim)
    assert {da.request for da in devices_of(d)} == {"r/any", "later"}


def test_match_attribute_treats_bool_true_and_int_1_as_different_values():
    state = one_node(gpu("n", 0, flag=True), gpu("n", 1, flag=1))
    spec = ClaimSpec((any_request("a"), any_request("b")), (MatchAttribute(f"{DRIVER}/flag"),))
    assert admit_one_pod(state, PodClaim("c", spec)).outcome is Outcome.PENDING


def test_match_attribute_accepts_two_devices_with_the_same_typed_value():
    state = one_node(gpu("n", 0, flag=1), gpu("n", 1, flag=True), gpu("n", 2, flag=1))
    spec = ClaimSpec((any_request("a"), any_request("b")), (MatchAttribute(f"{DRIVER}/flag"),))
    d = admit_one_pod(state, PodClaim("c", spec))
    assert {da.device[2] for da in devices_of(d)} == {"gpu-0", "gpu-2"}


def test_two_constraints_on_one_attribute_over_different_requests_bind_separately():
    state = one_node(*(gpu("n", i, numa=i // 2) for i in range(4)))
    requests = tuple(any_request(r) for r in "abcd")
    constraints = (MatchAttribute(NUMA, ("a", "b")), MatchAttribute(NUMA, ("c", "d")))
    d = admit_one_pod(state, PodClaim("c", ClaimSpec(requests, constraints)))
    assert d.outcome is Outcome.ADMITTED


def test_allocation_mode_all_leaves_no_matching_device_to_a_later_request():
    state = numa_node()
    every = DeviceRequest.exactly("all", GPU, mode=AllocationMode.ALL)
    claim = PodClaim("c", ClaimSpec((every, any_request())))
    assert admit_one_pod(state, claim).outcome is Outcome.PENDING


def network_cluster():
    """Node n with one GPU; one network-attached device of the same class reachable from
    every node, and one network-attached NIC (class nic)."""
    state = one_node(gpu("n", 0))
    state.upsert_device_class(DeviceClass(NIC, (f'device.driver == "{NET}"',)))
    shared_gpu = Device(DRIVER, "fabric", "gpu-x", None)
    state.upsert_slice(ResourceSlice("fabric-gpus", DRIVER, "fabric", None, (shared_gpu,)))
    nic = Device(NET, "fabric", "nic-0", None)
    state.upsert_slice(ResourceSlice("fabric-nics", NET, "fabric", None, (nic,)))
    return state


def test_a_pod_combines_a_node_local_gpu_with_a_network_attached_one_of_its_class():
    d = admit_one_pod(
        network_cluster(), PodClaim("c", ClaimSpec((DeviceRequest.exactly("g", GPU, 2),)))
    )
    assert d.outcome is Outcome.ADMITTED
    assert {da.device[2] for da in devices_of(d)} == {"gpu-0", "gpu-x"}


def test_a_pod_needing_a_node_local_gpu_and_a_network_attached_nic_is_admitted():
    spec = ClaimSpec((DeviceRequest.exactly("g", GPU, 1), DeviceRequest.exactly("nic", NIC, 1)))
    state = network_cluster()
    state.add_foreign_claim("x", ((DRIVER, "fabric", "gpu-x"),))
    d = admit_one_pod(state, PodClaim("c", spec))
    assert {da.device[2] for da in devices_of(d)} == {"gpu-0", "nic-0"}


def two_nodes_and_a_fabric():
    """Nodes n1 and n2 with one exclusive GPU each, and two network-attached GPUs of the
    same class (their pool sorts before the nodes', so by name they would come first)."""
    state = cluster(nodes=0)
    for name in ("n1", "n2"):
        state.upsert_node(node(name))
        state.upsert_slice(ResourceSlice(f"{name}-gpus", DRIVER, name, name, (gpu(name, 0),)))
    fabric = tuple(Device(DRIVER, "fabric", f"gpu-x{i}", None) for i in range(2))
    state.upsert_slice(ResourceSlice("fabric-gpus", DRIVER, "fabric", None, fabric))
    return state


def test_a_pod_leaves_network_attached_devices_to_pods_that_cannot_reach_its_node_local_ones():
    state = two_nodes_and_a_fabric()
    claim = PodClaim("c", ClaimSpec((any_request("a"), any_request("b"))))
    state.add_gang(gang("g", pod_sets=(pod_set(2, claims=(claim,)),)))
    d = decide(state)["g"]
    assert d.outcome is Outcome.ADMITTED
    held = sorted(
        (p.node, da.device[1]) for p in d.reservation.pods for c in p.claims for da in c.devices
    )
    assert held == [("n1", "fabric"), ("n1", "n1"), ("n2", "fabric"), ("n2", "n2")]


def h100_quota_cluster():
    """Class h100 (model h100 GPUs) next to class gpu (all GPUs); the queue may use no
    h100 devices and four gpu devices."""
    state = cluster(
        nodes=1,
        queues=(
            Queue("team-a", quota={"devices/h100": QuotaLimit(0), "devices/gpu": QuotaLimit(4)}),
        ),
    )
    state.upsert_device_class(
        DeviceClass("h100", (f'device.attributes["{DRIVER}"].model == "h100"',))
    )
    return state


def first_h100_then_gpu(count: int = 1) -> PodClaim:
    request = DeviceRequest(
        "r",
        (DeviceSubRequest("h100", "h100", count=count), DeviceSubRequest("gpu", GPU, count=count)),
        first_available=True,
    )
    return PodClaim("c", ClaimSpec((request,)))


def test_first_available_takes_the_alternative_the_queue_has_quota_for():
    d = admit_one_pod(h100_quota_cluster(), first_h100_then_gpu())
    assert d.outcome is Outcome.ADMITTED
    assert {da.request for da in devices_of(d)} == {"r/gpu"}
    assert d.reservation.charge["devices/gpu"] == 1


def test_quota_headroom_is_shared_by_every_pod_of_a_gang():
    state = h100_quota_cluster()
    state.upsert_queue(
        Queue("team-a", quota={"devices/h100": QuotaLimit(2), "devices/gpu": QuotaLimit(4)})
    )
    state.add_gang(gang("g", pod_sets=(pod_set(3, claims=(first_h100_then_gpu(),)),)))
    d = decide(state)["g"]
    assert sorted(da.request for da in devices_of(d)) == ["r/gpu", "r/h100", "r/h100"]
    assert dict(d.reservation.charge)["devices/h100"] == 2


def shareable_racks():
    """Racks r0 (one node, two shareable GPUs) and r1 (one node, four exclusive GPUs)."""
    state = cluster(nodes=0)
    state.upsert_node(node("a", rack="r0"))
    state.upsert_slice(
        ResourceSlice(
            "a-gpus", DRIVER, "a", "a", tuple(gpu("a", i, shareable=True) for i in range(2))
        )
    )
    state.upsert_node(node("b", rack="r1"))
    state.upsert_slice(
        ResourceSlice("b-gpus", DRIVER, "b", "b", tuple(gpu("b", i) for i in range(4)))
    )
    return state


def test_required_topology_counts_a_shareable_device_for_every_pod_it_can_serve():
    state = shareable_racks()
    state.add_gang(gang("g", pods=3, gpus=2, topology=Topology("rack")))
    d = decide(state)["g"]
    assert d.outcome is Outcome.ADMITTED
    assert {p.node for p in d.reservation.pods} == {"a"}


def test_the_device_search_reports_its_step_budget_when_it_runs_out():
    devices = tuple(gpu("n", i, numa=i % 4) for i in range(8))
    state = one_node(*devices)
    requests = tuple(any_request(f"r{i}") for i in range(5))
    spec = ClaimSpec(requests, (MatchAttribute(NUMA),))
    search = DeviceSearch(state.inventory, steps=3)
    assert search.allocate("n", (PodClaim("c", spec),)) is None
    assert search.exhausted == "device search budget of 3 steps exhausted on node n"


def test_a_pod_set_taking_any_gpu_leaves_the_numa0_one_another_pod_set_needs():
    state = cluster(nodes=0)
    state.upsert_node(node("x", cpu=4))
    state.upsert_slice(
        ResourceSlice("x-gpus", DRIVER, "x", "x", (gpu("x", 0, numa=0), gpu("x", 1, numa=1)))
    )
    sets = (
        PodSet(
            "any",
            1,
            {"cpu": 1000, "memory": GIB},
            claims=(PodClaim("c", ClaimSpec((any_request(),))),),
        ),
        PodSet(
            "numa",
            1,
            {"cpu": 1000, "memory": GIB},
            claims=(PodClaim("c", ClaimSpec((numa0_request(),))),),
        ),
    )
    state.add_gang(gang("g", pod_sets=sets))
    assert decide(state, search_bound=1)["g"].outcome is Outcome.ADMITTED


def test_inventory_is_only_read_by_the_search():
    inv = DeviceInventory()
    inv.upsert_class(DeviceClass(GPU))
    inv.upsert_slice(ResourceSlice("s", DRIVER, "n", "n", (gpu("n", 0),)))
    found = DeviceSearch(inv).allocate("n", (PodClaim("c", ClaimSpec((any_request(),))),))
    assert found is not None
    assert inv.owners == {}
