"""What-if probes that place again from the last kept placement (and the engine taking a
search's last probe as its admission) answer, place and decide exactly as placing from
scratch: drawn clusters (network-attached and shareable devices, device quota, topology
gangs) under every shipped placement policy, drawn sequences of probes."""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from unittest import mock

from hypothesis import given, target
from hypothesis import strategies as st

from controller.engine import cycle
from controller.engine.cel import SelectorError
from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.devices import MatchKey
from controller.engine.ledger import Ledger
from controller.engine.model import (
    ClaimSpec,
    DeviceClass,
    DeviceRequest,
    DeviceSubRequest,
    Gang,
    Node,
    PodClaim,
    PodSet,
    Queue,
    QuotaLimit,
    ResourceSlice,
    Topology,
    TopologyMode,
)
from controller.engine.placement import Placer, device_budget, reservation_charge
from controller.engine.policy import PlacementPolicy
from controller.engine.reservation import PodPlacement, Reservation
from controller.engine.state import ClusterState
from policies.registry import PolicyRef, create_placement
from tests.builders import DRIVER, GIB, GPU
from tests.property.harness import (
    REAL_PREEMPTION,
    Driver,
    Snapshot,
    build_state,
    property_settings,
)
from tests.property.strategies import (
    H100,
    NVLINK,
    RACK,
    ClusterSpec,
    Scenario,
    cluster_specs,
    gangs,
    gpu_devices,
    operations,
    queue_trees,
    topologies,
)

PLACEMENTS = (
    PolicyRef("bin-pack"),
    PolicyRef("spread"),
    PolicyRef("fragmentation-aware"),
    PolicyRef("topology", {"key": RACK}),
    PolicyRef("topology", {"key": NVLINK, "device_attribute": True}),
    PolicyRef("topology", {"key": NVLINK, "device_attribute": True, "mode": "required"}),
)


@dataclass(frozen=True)
class ProbeRun:
    spec: ClusterSpec
    placement: PolicyRef
    running: tuple[Gang, ...]
    waiting: Gang
    probes: tuple[tuple[tuple[int, ...], bool], ...]
    """Each probe in order: (the admitted gangs to toggle, by index, in the set of
    victims of the probe before; keep), as a search's sets differ by a few gangs."""
    taken: tuple[int, ...]


H100_CLASS = DeviceClass("h100", (f'device.driver == "{DRIVER}"', H100))
"""A second DeviceClass (the h100s of GPU_CLASS), with quota of its own: a device budget
on one class and not the other steers firstAvailable."""


# Strategies drawn from many times per example are built once (building and validating
# them per draw cost more than drawing).
_WIDE_CPUS = st.sampled_from([16, 32, 64])
_RACK_LABELS = st.sampled_from([{}, {RACK: "r0"}, {RACK: "r1"}])


@st.composite
def wide_specs(draw: st.DrawFn) -> ClusterSpec:
    """3-10 nodes of 0-8 GPUs (shareable ones in a quarter of the clusters), sometimes
    network-attached GPUs: room for a gang's pods on several nodes."""
    shareable = draw(st.integers(0, 3)) == 0
    nodes = []
    slices = []
    for i in range(draw(st.integers(4, 10))):
        name = f"n{i}"
        cpu = draw(_WIDE_CPUS) * 1000
        labels = draw(_RACK_LABELS)
        nodes.append(Node(name, {"cpu": cpu, "memory": 512 * GIB, "pods": 110}, labels))
        devices = draw(gpu_devices(name, shareable))
        if devices:
            slices.append(ResourceSlice(f"{name}-gpus", DRIVER, name, name, devices))
    if draw(st.integers(0, 3)) == 0:
        fabric = draw(gpu_devices("fabric", shareable).filter(bool))
        moved = tuple(replace(d, node=None) for d in fabric[:3])
        slices.append(ResourceSlice("fabric-gpus", DRIVER, "fabric", None, moved))
    queues, leaves = draw(queue_trees())
    return ClusterSpec(tuple(nodes), tuple(slices), queues, leaves)


_SMALL_GPUS = st.integers(1, 3)
_SMALL_CPUS = st.sampled_from([1, 2, 4, 8])
_SMALL_SELECTORS = st.sampled_from([{}, {}, {RACK: "r0"}])


@st.composite
def small_pod_sets(draw: st.DrawFn, index: int, most: int) -> PodSet:
    """1-`most` pods of 1-3 GPUs (any, or an h100 first), small cpu: gangs of several
    pods on few nodes, whose placements a change of one node can move."""
    count = draw(st.integers(1, most))
    gpus = draw(_SMALL_GPUS)
    if draw(st.booleans()):
        request = DeviceRequest.exactly("gpus", GPU, gpus)
    else:
        request = DeviceRequest(
            "gpus",
            (
                DeviceSubRequest("h100", H100_CLASS.name, count=gpus),
                DeviceSubRequest("any", GPU, count=gpus),
            ),
            first_available=True,
        )
    return PodSet(
        f"ps{index}",
        count,
        {"cpu": draw(_SMALL_CPUS) * 1000, "memory": GIB},
        claims=(PodClaim("gpu", ClaimSpec((request,))),),
        node_selector=draw(_SMALL_SELECTORS),
    )


_small_pod_sets = functools.cache(small_pod_sets)
_ONE_OR_TWO = st.integers(1, 2)
_PRIORITIES = st.integers(0, 2)


@st.composite
def small_gangs(draw: st.DrawFn, leaves: tuple[str, ...], uid: str = "g", most: int = 2) -> Gang:
    return Gang(
        uid=uid,
        name=uid,
        namespace="default",
        queue=draw(st.sampled_from(leaves)),
        pod_sets=tuple(draw(_small_pod_sets(i, most)) for i in range(draw(_ONE_OR_TWO))),
        priority=draw(_PRIORITIES),
        topology=draw(topologies),
    )


_H100_NOMINAL = st.integers(0, 8)
_H100_BORROWING = st.none() | st.integers(0, 4)


@st.composite
def h100_quota(draw: st.DrawFn, queue: Queue) -> Queue:
    """The queue, sometimes with a quota of h100s too."""
    if draw(st.booleans()):
        return queue
    limit = QuotaLimit(draw(_H100_NOMINAL), draw(_H100_BORROWING))
    return replace(queue, quota={**queue.quota, f"devices/{H100_CLASS.name}": limit})


@st.composite
def probe_runs(draw: st.DrawFn) -> ProbeRun:
    spec = draw(st.one_of(cluster_specs(network=draw(st.booleans())), wide_specs()))
    spec = replace(spec, queues=tuple(draw(h100_quota(q)) for q in spec.queues))
    leaves = spec.leaves
    single = small_gangs(leaves, most=1)  # a victim on one node
    running = draw(st.lists(st.one_of(gangs(leaves), single, single), min_size=1, max_size=20))
    index = st.integers(0, 63)
    return ProbeRun(
        spec,
        draw(st.sampled_from(PLACEMENTS)),
        tuple(
            replace(g, uid=f"r{i:02d}", name=f"r{i:02d}", created=float(i))
            for i, g in enumerate(running)
        ),
        draw(st.one_of(gangs(leaves, uid="waiting"), small_gangs(leaves, "waiting", 8))),
        tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.lists(index, max_size=draw(st.sampled_from([2, 2, 2, 6]))).map(tuple),
                        st.sampled_from([True, True, True, False]),
                    ),
                    min_size=1,
                    max_size=16,
                )
            )
        ),
        tuple(draw(st.lists(index, max_size=6))),
    )


def running_state(run: ProbeRun) -> tuple[ClusterState, Engine, PlacementPolicy]:
    """The drawn gangs admitted as far as they fit (two cycles), the waiting one pending."""
    state = build_state(run.spec)
    state.upsert_device_class(H100_CLASS)
    policy = create_placement(run.placement)
    engine = Engine(state, placement=policy)
    for g in run.running:
        state.add_gang(g)
    for now in (1.0, 2.0):
        engine.cycle(now=now).ledger.commit_all()
    state.add_gang(run.waiting)
    return state, engine, policy


def picked(admitted: list[str], picks: tuple[int, ...]) -> set[str]:
    return {admitted[i % len(admitted)] for i in picks} if admitted else set()


def put_back(
    state: ClusterState,
    released: list[tuple[Gang, Reservation]],
    stamp: tuple[int, int],
) -> None:
    """Restore released gangs, last first, and the state's change counters as they were."""
    for g, res in reversed(released):
        state.restore(g, res)
    state.capacity_epoch, state.admission_generation = stamp


def undo_take(
    state: ClusterState,
    gang: Gang,
    taken: tuple[tuple[PodPlacement, ...], list[tuple[Gang, Reservation]]],
    chosen: list[str],
    stamp: tuple[int, int],
) -> tuple[PodPlacement, ...]:
    """Check that `take` released exactly `chosen`, each release moving both counters
    once; put everything back and return the pods it placed."""
    pods, released = taken
    assert [g.uid for g, _ in released] == chosen
    assert (state.capacity_epoch, state.admission_generation) == (
        stamp[0] + len(chosen),
        stamp[1] + len(chosen),
    )
    for pod in reversed(pods):
        state.release_pod(gang.uid, pod)
    put_back(state, released, stamp)
    return pods


def from_scratch(
    state: ClusterState, placer: Placer, engine: Engine, gang: Gang, without: list[str]
) -> tuple[PodPlacement, ...] | None:
    """The gang's pods placing from scratch finds with `without` released, if it fits
    (queue, quota and placement); everything is put back."""
    stamp = (state.capacity_epoch, state.admission_generation)
    released = [(state.admitted_gangs[uid], state.release(uid)) for uid in without]
    try:
        plan = engine.plan(gang)
        if state.queue_blocker(gang) is not None:
            return None
        if state.quota.check(gang.queue, plan.minimum_charge) is not None:
            return None
        try:
            outcome = placer.place(plan, device_budget(state.quota, gang.queue, plan))
        except SelectorError:
            return None
        if outcome.pods is None:
            return None
        for pod in reversed(outcome.pods):
            state.release_pod(gang.uid, pod)
        if state.quota.check(gang.queue, reservation_charge(outcome.pods)) is not None:
            return None
        return outcome.pods
    finally:
        put_back(state, released, stamp)


@st.composite
def rack_runs(draw: st.DrawFn) -> ProbeRun:
    """Two racks of 2-4 nodes with 1-4 GPUs each (h100 or a100), one queue with a quota
    of h100s; gangs of one pod running, and a waiting gang of 2-6 pods asking for an
    h100 first, often kept in one rack: victims released or put back in the other rack
    reorder the racks, and those of the queue change its h100 budget."""
    nodes = []
    slices = []
    for rack in ("r0", "r1"):
        for i in range(draw(st.integers(2, 4))):
            name = f"{rack}n{i}"
            nodes.append(Node(name, {"cpu": 64000, "memory": 512 * GIB, "pods": 110}, {RACK: rack}))
            devices = tuple(
                replace(d, shareable=False) for d in draw(gpu_devices(name)) if d.name < "gpu-4"
            )
            if devices:
                slices.append(ResourceSlice(f"{name}-gpus", DRIVER, name, name, devices))
    quota = {
        f"devices/{GPU}": QuotaLimit(64),
        f"devices/{H100_CLASS.name}": QuotaLimit(draw(st.integers(0, 6))),
    }
    spec = ClusterSpec(tuple(nodes), tuple(slices), (Queue("q0", quota=quota),), ("q0",))
    running = draw(st.lists(small_gangs(spec.leaves, most=1), min_size=2, max_size=16))
    waiting = draw(small_gangs(spec.leaves, "waiting", 6))
    topology = draw(st.sampled_from([None, *(Topology(RACK, m) for m in TopologyMode)]))
    placement = draw(st.sampled_from(PLACEMENTS[:4]))
    index = st.integers(0, 63)
    probes = draw(
        st.lists(
            st.tuples(st.lists(index, max_size=2).map(tuple), st.just(True)),
            min_size=2,
            max_size=16,
        )
    )
    return ProbeRun(
        spec,
        placement,
        tuple(
            replace(g, uid=f"r{i:02d}", name=f"r{i:02d}", created=float(i))
            for i, g in enumerate(running)
        ),
        replace(waiting, topology=topology, priority=3),
        tuple(probes),
        tuple(draw(st.lists(index, max_size=2))),
    )


@property_settings(300)
@given(probe_runs())
def test_probes_placing_again_answer_and_place_as_from_scratch(run: ProbeRun) -> None:
    """Every probe of a drawn sequence (kept or not) answers as placing from scratch
    with its victims released, and a placement it keeps is the one placing from scratch
    finds; `take` hands over that placement with exactly its victims released and the
    change counters as after releasing them; `settle` puts everything back."""
    check_probes(run)


@property_settings(200)
@given(rack_runs())
def test_probes_placing_again_follow_topology_domains_and_device_budgets(
    run: ProbeRun,
) -> None:
    """As above, where the change between probes reorders a gang's topology domains (two
    racks) and changes its queue's budget of h100s (which its pods ask for first)."""
    check_probes(run)


def check_probes(run: ProbeRun) -> None:
    state, engine, policy = running_state(run)
    gang = run.waiting
    before = Snapshot.of(state)
    stamp = (state.capacity_epoch, state.admission_generation)
    ctx = CycleContext(state, Ledger(state), Placer(state, policy), engine.plan)
    asked: list[tuple[list[str], bool, tuple[PodPlacement, ...] | None]] = []
    admitted = sorted(state.admitted)
    current: set[str] = set()
    for toggles, keep in run.probes:
        current ^= picked(admitted, toggles)
        without = sorted(current)
        fits = ctx.fits(gang, without, keep=keep)
        asked.append((without, fits, ctx.placed if fits else None))
    moved = sum(
        1
        for (_, _, a), (_, _, b) in itertools.pairwise(asked)
        if a and b and a[0] == b[0] and a != b
    )
    target(float(moved), label="placements kept in part")
    chosen = sorted(current ^ picked(admitted, run.taken))
    taken = ctx.take(gang, chosen)
    if taken is not None:
        undo_take(state, gang, taken, chosen, stamp)
    ctx.settle()
    assert Snapshot.of(state) == before
    assert (state.capacity_epoch, state.admission_generation) == stamp
    placer = Placer(state, policy)
    for without, fits, placed in asked:
        want = from_scratch(state, placer, engine, gang, without)
        assert fits == (want is not None), without
        if placed is not None:
            assert placed == want, without
    want = from_scratch(state, placer, engine, gang, chosen) if chosen else None
    if taken is not None:
        assert taken[0] == want
    assert Snapshot.of(state) == before


class FromScratch(CycleContext):
    """The engine's probe with placing again from kept placements turned off (so the
    engine never takes a search's last probe either)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **{**kwargs, "reuse": False})  # type: ignore[arg-type]


@st.composite
def placed_scenarios(draw: st.DrawFn) -> tuple[Scenario, PolicyRef]:
    spec = draw(cluster_specs(network=draw(st.booleans())))
    ops = draw(operations(spec, max_ops=24, copies=4))
    preempt = draw(st.sampled_from([*REAL_PREEMPTION, "reclaim-lower"]))
    return Scenario(spec, tuple(ops), preempt), draw(st.sampled_from(PLACEMENTS))


def drive(sc: Scenario, placement: PolicyRef, context: type[CycleContext]) -> Driver:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    driver.engine.placement = create_placement(placement)
    driver.record_errors = True
    with mock.patch.object(cycle, "CycleContext", context):
        for op in sc.ops:
            driver.apply(op)
    return driver


@property_settings(150)
@given(placed_scenarios())
def test_engine_placing_again_decides_as_placing_from_scratch(
    drawn: tuple[Scenario, PolicyRef],
) -> None:
    """Random runs under each shipped preemption and placement policy: the engine whose
    probes place again from kept placements, and which takes a search's last probe as
    the admission, decides exactly as one whose every probe places from scratch (the
    same decisions, reasons, victims and reservations), and ends in the same state."""
    sc, placement = drawn
    fast = drive(sc, placement, CycleContext)
    reference = drive(sc, placement, FromScratch)
    assert fast.log == reference.log
    assert Snapshot.of(fast.state) == Snapshot.of(reference.state)


def counted_out_after_releasing(
    state: ClusterState, engine: Engine, gang: Gang, without: list[str]
) -> bool:
    """Whether counting the free devices of each primary request with `without` really
    released (no probe applied) shows the gang cannot fit: a pod set with fewer pods'
    worth on the nodes than it has pods (when no network-attached device is free), or
    fewer devices in total than the gang's pods need. Everything is put back."""
    stamp = (state.capacity_epoch, state.admission_generation)
    released = [(state.admitted_gangs[uid], state.release(uid)) for uid in without]
    try:
        inv = state.inventory
        need: dict[MatchKey, int] = {}
        for demand in engine.plan(gang).demands:
            if demand.primary is None:
                continue
            mk, per_pod = demand.primary
            ms = inv.match_set(mk)
            if ms.shareable or ms.class_missing or per_pod <= 0:
                continue
            need[mk] = need.get(mk, 0) + per_pod * demand.pod_set.count
            on_nodes = sum(n // per_pod for node, n in ms.free.items() if node is not None)
            if not ms.free.get(None, 0) and on_nodes < demand.pod_set.count:
                return True
        return any(inv.match_set(mk).total_free() < n for mk, n in need.items())
    finally:
        put_back(state, released, stamp)


@dataclass(frozen=True)
class CountRun(ProbeRun):
    bound_from: int = 8


@st.composite
def count_runs(draw: st.DrawFn) -> CountRun:
    """A probe run, with the count-out trying its bound on pods' worth from 1, 2 or (as
    the engine) 8 gangs released."""
    run = draw(probe_runs())
    return CountRun(**vars(run), bound_from=draw(st.sampled_from([1, 2, 8])))


@property_settings(200)
@given(count_runs())
def test_device_count_outs_between_kept_probes_count_as_after_releasing(run: CountRun) -> None:
    """Asked between the kept probes of a drawn sequence (victims released, a placement
    kept applied), the devices count-out of a set of victims (from each gang's held
    devices, kept per match set across probes and cycles, and a bound on pods' worth from
    each gang's devices apart) says "too few" only when
    counting after really releasing that set says so too, and says the same whenever no
    device is network-attached (with some, a free one the count-out sees now may be
    taken back by a gang it restores: it then counts less finely, never wrongly)."""
    state, engine, policy = running_state(run)
    gang = run.waiting
    ctx = CycleContext(state, Ledger(state), Placer(state, policy), engine.plan, {})
    ctx.bound_from = run.bound_from
    admitted = sorted(state.admitted)
    asked: list[tuple[list[str], bool]] = []
    current: set[str] = set()
    for toggles, keep in run.probes:
        current ^= picked(admitted, toggles)
        without = sorted(current)
        for candidate in (without, admitted, []):
            with contextlib.suppress(SelectorError):
                asked.append((candidate, ctx.too_few_devices(gang, candidate)))
        ctx.fits(gang, without, keep=keep)
    ctx.settle()
    networked = any(None in ms.by_node for ms in state.inventory._matches.values())
    wants = [counted_out_after_releasing(state, engine, gang, w) for w, _ in asked]
    target(float(sum(w and bool(without) for (without, _), w in zip(asked, wants, strict=True))))
    for (without, counted_out), want in zip(asked, wants, strict=True):
        assert want or not counted_out, without
        if not networked:
            assert counted_out == want, without


def probe_answers(run: ProbeRun, skip_count: bool) -> tuple[list[object], int]:
    """Each probe's answer and kept placement, what `take` hands over, and how many
    probes skipped the devices count, for a context that skips it when its kept
    placement stays valid (`skip_count`) or one that always counts. Where a probe
    skips, the count would have passed (the skip never trades a "no" by counting for a
    placement that fails)."""
    state, engine, policy = running_state(run)
    gang = run.waiting
    ctx = CycleContext(state, Ledger(state), Placer(state, policy), engine.plan, {})
    ctx.skip_count = skip_count
    skipped = 0
    stays = ctx._placed_stays

    def checked(without: Sequence[str]) -> bool:
        nonlocal skipped
        if not stays(without):
            return False
        skipped += 1
        assert not ctx.too_few_devices(gang, without), without
        return True

    ctx._placed_stays = checked  # type: ignore[method-assign]
    admitted = sorted(state.admitted)
    out: list[object] = []
    current: set[str] = set()
    for toggles, keep in run.probes:
        current ^= picked(admitted, toggles)
        fits = ctx.fits(gang, sorted(current), keep=keep)
        out.append((sorted(current), fits, ctx.placed if fits else None, ctx.probes))
    taken = ctx.take(gang, sorted(current ^ picked(admitted, run.taken)))
    out.append(None if taken is None else (taken[0], [g.uid for g, _ in taken[1]]))
    return out, skipped


@property_settings(200)
@given(st.one_of(probe_runs(), rack_runs()))
def test_probes_skipping_the_device_count_answer_as_probes_that_count(run: ProbeRun) -> None:
    """A probe whose kept placement stays an allocation of the gang (no gang it brings
    back touches a node of that placement, nor network-attached devices) skips the
    devices count, which would have passed: every probe of a drawn sequence answers,
    keeps and hands over the same placement, counted alike, as probes that always
    count."""
    fast, skipped = probe_answers(run, skip_count=True)
    reference, none = probe_answers(run, skip_count=False)
    target(float(skipped), label="device counts skipped")
    assert none == 0
    assert fast == reference


@property_settings(200)
@given(st.one_of(probe_runs(), rack_runs()))
def test_taking_a_set_an_earlier_probe_fitted_hands_over_its_placement_from_scratch(
    run: ProbeRun,
) -> None:
    """After a drawn sequence of kept probes, `take` of the victims of one that fitted
    (not the last one: its placement is no longer applied) hands over the placement
    placing from scratch finds with them released, counted as the probe of them it
    stands for, with exactly them released and the change counters as after releasing
    them."""
    state, engine, policy = running_state(run)
    gang = run.waiting
    before = Snapshot.of(state)
    stamp = (state.capacity_epoch, state.admission_generation)
    ctx = CycleContext(state, Ledger(state), Placer(state, policy), engine.plan)
    admitted = sorted(state.admitted)
    fitted: list[list[str]] = []
    current: set[str] = set()
    for toggles, _ in run.probes:
        current ^= picked(admitted, toggles)
        if current and ctx.fits(gang, sorted(current), keep=True) and ctx.placed is not None:
            fitted.append(sorted(current))
    earlier = [w for w in fitted[:-1] if w != fitted[-1]]
    target(float(len(earlier)), label="earlier sets that fitted")
    if not earlier:
        ctx.settle()
        return
    chosen = earlier[sum(run.taken) % len(earlier)]
    probes = ctx.probes
    taken = ctx.take(gang, chosen)
    assert taken is not None
    assert ctx.probes == probes + 1
    pods = undo_take(state, gang, taken, chosen, stamp)
    assert Snapshot.of(state) == before
    assert pods == from_scratch(state, Placer(state, policy), engine, gang, chosen)
