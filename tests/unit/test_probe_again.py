"""A kept what-if probe places the gang again from its last placement: the pods a change
elsewhere cannot have moved stay, the rest is placed as from scratch."""

from __future__ import annotations

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.ledger import Ledger
from controller.engine.model import DeviceClass, Gang, Queue, Topology, TopologyMode
from controller.engine.placement import Placer
from controller.engine.policy import BinPack
from controller.engine.reservation import PodPlacement
from controller.engine.state import ClusterState
from tests.builders import DRIVER, GPU, gang, gpu_slice, node, pod_set

RACK = Topology("rack", TopologyMode.REQUIRED)


def racks(**gpus: tuple[str, int]) -> ClusterState:
    """Nodes by name: (rack, GPUs), each labelled with its rack and its own name."""
    state = ClusterState()
    state.upsert_device_class(DeviceClass(GPU, (f'device.driver == "{DRIVER}"',)))
    for name, (rack, count) in gpus.items():
        state.upsert_node(node(name, rack=rack, host=name))
        state.upsert_slice(gpu_slice(name, count))
    state.upsert_queue(Queue("team-a"))
    return state


def run_on(state: ClusterState, host: str, uid: str, gpus: int) -> None:
    """Admit a one-pod gang of `gpus` GPUs on node `host`."""
    state.add_gang(gang(uid, pod_sets=(pod_set(1, gpus, node_selector={"host": host}),)))
    Engine(state).cycle().ledger.commit_all()
    assert uid in state.admitted


def probe(state: ClusterState) -> CycleContext:
    return CycleContext(state, Ledger(state), Placer(state, BinPack()), Engine(state).plan)


def nodes(pods: tuple[PodPlacement, ...] | None) -> list[str]:
    assert pods is not None
    return [p.node for p in pods]


def waiting(state: ClusterState, pods: int, topology: Topology | None = None) -> Gang:
    g = gang("w", pods=pods, gpus=1, topology=topology)
    state.add_gang(g)
    return g


def test_pods_before_the_first_on_a_changed_node_stay_and_the_rest_is_placed_again():
    state = racks(n0=("r0", 4), n1=("r0", 4), n2=("r0", 4))
    run_on(state, "n0", "u", 2)
    run_on(state, "n1", "v", 4)
    w = waiting(state, 3)
    ctx = probe(state)
    assert ctx.fits(w, ["v"], keep=True)
    assert nodes(ctx.placed) == ["n0", "n0", "n1"]
    assert ctx.fits(w, [], keep=True)  # v back on n1: the third pod moves
    assert nodes(ctx.placed) == ["n0", "n0", "n2"]
    ctx.settle()


def test_a_node_the_change_made_fit_first_is_taken_from_the_first_pod_it_fits():
    state = racks(n0=("r0", 4), n1=("r0", 4), n2=("r0", 4))
    run_on(state, "n0", "u", 2)
    run_on(state, "n2", "v", 3)
    run_on(state, "n2", "x", 1)
    w = waiting(state, 2)
    ctx = probe(state)
    assert ctx.fits(w, [], keep=True)
    assert nodes(ctx.placed) == ["n0", "n0"]
    assert ctx.fits(w, ["x"], keep=True)  # n2 has 1 GPU free: bin-pack takes it first
    assert nodes(ctx.placed) == ["n2", "n0"]
    ctx.settle()


def test_a_domain_that_lost_its_room_is_left_for_the_one_that_comes_first_now():
    state = racks(a0=("r0", 2), a1=("r0", 2), b0=("r1", 2), b1=("r1", 2))
    run_on(state, "a1", "v", 2)
    w = waiting(state, 3, RACK)
    ctx = probe(state)
    assert ctx.fits(w, ["v"], keep=True)
    assert nodes(ctx.placed) == ["a0", "a0", "a1"]
    assert ctx.fits(w, [], keep=True)  # v back: r0 has room for 2 pods, not 3
    assert nodes(ctx.placed) == ["b0", "b0", "b1"]
    ctx.settle()


def test_domains_are_ranked_without_the_gangs_own_pods():
    state = racks(
        a0=("r0", 2), a1=("r0", 2), a2=("r0", 2), b0=("r1", 2), b1=("r1", 4), b2=("r1", 1)
    )
    run_on(state, "a1", "u", 2)
    run_on(state, "b1", "v", 4)
    w = waiting(state, 2, RACK)
    ctx = probe(state)
    assert ctx.fits(w, ["u", "v"], keep=True)  # room for 6 pods in r0, 7 in r1
    assert nodes(ctx.placed) == ["a0", "a0"]
    assert ctx.fits(w, [], keep=True)  # 4 in r0 (2 of them where the gang was), 3 in r1
    assert nodes(ctx.placed) == ["b2", "b0"]
    ctx.settle()
