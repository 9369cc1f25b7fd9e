"""The engine's DRA allocator against a brute-force reference on small instances: it finds
an allocation whenever one exists, tries firstAvailable alternatives in order, and every
allocation it returns is valid; the same for whole small gangs on tiny clusters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.engine.allocation import DeviceSearch
from controller.engine.model import (
    AllocationMode,
    AttributeValue,
    ClaimSpec,
    Device,
    DeviceClass,
    DeviceRequest,
    DeviceSubRequest,
    Gang,
    MatchAttribute,
    Node,
    PodClaim,
    PodSet,
    ResourceSlice,
)
from controller.engine.placement import GangPlan, Placer
from controller.engine.policy import BinPack
from controller.engine.state import ClusterState
from tests.builders import DRIVER
from tests.property.harness import property_settings
from tests.property.reference_allocator import (
    Picks,
    World,
    gang_fits,
    pod_allocations,
    preference,
    valid_pod,
)
from tests.property.strategies import (
    MODEL_A,
    MODEL_B,
    NET_DRIVER,
    SMALL_CLASSES,
    DeviceWorld,
    device_worlds,
    small_claims,
)

MODEL = f"{DRIVER}/model"
MEANING = {
    "gpu": lambda d: d.driver == DRIVER,
    "model-a": lambda d: d.attributes.get(MODEL) == "a",
    "any": lambda d: d.driver in (DRIVER, NET_DRIVER),
}
SELECTORS = {
    MODEL_A: lambda d: d.attributes.get(MODEL) == "a",
    MODEL_B: lambda d: d.attributes.get(MODEL) == "b",
}


def build(w: DeviceWorld) -> tuple[ClusterState, World]:
    state = ClusterState()
    for name, expr in SMALL_CLASSES.items():
        state.upsert_device_class(DeviceClass(name, (expr,)))
    for n in w.nodes:
        state.upsert_node(n)
    by_slice: dict[tuple[str, str | None], list] = {}
    for d in w.devices:
        by_slice.setdefault((d.driver, d.node), []).append(d)
    for (driver, node), devices in sorted(by_slice.items(), key=repr):
        pool = devices[0].pool
        state.upsert_slice(ResourceSlice(f"{pool}-{driver}", driver, pool, node, tuple(devices)))
    held = [w.devices[i].key for i in w.held if i < len(w.devices)]
    if held:
        state.add_foreign_claim("other", tuple(held))
    world = World(
        {d.key: d for d in w.devices},
        frozenset(held),
        MEANING,
        SELECTORS,
        {n.name: n for n in w.nodes},
    )
    return state, world


def engine_picks(claims, found) -> Picks:
    out: Picks = {}
    for claim, alloc in zip(claims, found, strict=True):
        assert alloc.claim == claim.name
        for req in claim.spec.requests:
            got = [da for da in alloc.devices if da.request.partition("/")[0] == req.name]
            subs = {da.request.partition("/")[2] or req.alternatives[0].name for da in got}
            name = subs.pop() if len(subs) == 1 else (req.alternatives[0].name if not got else "?")
            out[(claim.name, req.name)] = (name, tuple(da.device for da in got))
    return out


@property_settings(300)
@given(device_worlds(), small_claims())
def test_the_allocator_finds_an_allocation_whenever_the_reference_does(w, claims) -> None:
    state, world = build(w)
    budget = dict(w.budget)
    keys = sorted(
        {
            (s.device_class, s.selectors)
            for c in claims
            for r in c.spec.requests
            for s in r.alternatives
        }
    )
    search = DeviceSearch(state.inventory, keys, (), None, budget)
    found = search.allocate("n0", claims)
    reference = list(pod_allocations(world, "n0", claims, budget=budget))
    assert search.exhausted is None
    if found is None:
        assert reference == [], f"reference allocates {reference[0]}"
        return
    picks = engine_picks(claims, found)
    assert valid_pod(world, "n0", claims, picks, budget=budget) is None, (
        valid_pod(world, "n0", claims, picks, budget=budget),
        picks,
    )
    # Like kube-scheduler, alternatives are tried in order with earlier requests outermost,
    # so the first request gets the earliest alternative any allocation can give it.
    first = min(preference(claims, p)[0] for p in reference)
    assert preference(claims, picks)[0] == first, "firstAvailable alternatives out of order"
    assert state.inventory.owners == (
        {k: {"foreign:other"} for k in world.held} if world.held else {}
    )


@st.composite
def tiny_gangs(draw: st.DrawFn) -> tuple[DeviceWorld, Gang]:
    w = draw(device_worlds(max_nodes=3))
    pod_sets = tuple(
        PodSet(
            f"ps{i}",
            draw(st.integers(1, 2)),
            {"cpu": draw(st.sampled_from([1000, 2000]))},
            claims=draw(small_claims(f"c{i}-")),
        )
        for i in range(draw(st.integers(1, 2)))
    )
    return w, Gang("g", "g", "default", "q", pod_sets)


@property_settings(150)
@given(tiny_gangs())
def test_the_placer_places_a_tiny_gang_whenever_the_reference_can(case) -> None:
    placer_agrees_with_the_reference(case)


def model_a(node: str | None, name: str, shareable: bool, **attributes: AttributeValue) -> Device:
    pool = node or "fabric"
    return Device(DRIVER, pool, name, node, {MODEL: "a", **attributes}, {}, shareable)


def test_a_pod_set_only_one_node_can_host_is_searched_before_pod_sets_with_many_choices() -> None:
    """Found by hypothesis: ps1 has 59 device allocations on n1 and 14 on n0, ps0 fits
    only n1; searched in the gang's order, every ps1 choice on n1 starves ps0 and the
    512-step budget runs out before the search reaches ps1 on n0."""
    nodes = (
        Node("n0", {"cpu": 4000, "pods": 8}),
        Node("n1", {"cpu": 2000, "pods": 8}),
    )
    devices = (
        model_a("n0", "d0", False),
        model_a("n0", "d1", False),
        model_a("n1", "d0", True),
        model_a("n1", "d1", True),
        model_a("n1", "d2", False),
        model_a("n1", "d3", True, **{f"{DRIVER}/flag": 0}),
        model_a(None, "d0", False),
        model_a(None, "d1", True),
    )
    one = DeviceSubRequest("y", "any", (), AllocationMode.EXACT_COUNT, 1)
    flagged = ClaimSpec(
        (
            DeviceRequest(
                "r0",
                (DeviceSubRequest("x", "any", (), AllocationMode.ALL, 1), one),
                first_available=True,
            ),
        ),
        (MatchAttribute(f"{DRIVER}/flag", ()),),
    )
    pair = ClaimSpec(
        (
            DeviceRequest(
                "r0",
                (DeviceSubRequest("x", "any", (), AllocationMode.EXACT_COUNT, 2), one),
                first_available=True,
            ),
            DeviceRequest(
                "r1", (DeviceSubRequest("r1", "any", (), AllocationMode.EXACT_COUNT, 1),)
            ),
        )
    )
    gang = Gang(
        "g",
        "g",
        "default",
        "q",
        (
            PodSet("ps0", 1, {"cpu": 1000}, claims=(PodClaim("c0-0", flagged),)),
            PodSet("ps1", 2, {"cpu": 2000}, claims=(PodClaim("c1-0", pair),)),
        ),
    )
    placer_agrees_with_the_reference((DeviceWorld(nodes, devices, (), ()), gang))


def placer_agrees_with_the_reference(case: tuple[DeviceWorld, Gang]) -> None:
    """The placer places the gang exactly when the reference can, validly."""
    w, gang = case
    state, world = build(w)
    budget = dict(w.budget)
    plan = GangPlan.of(gang, 0)
    outcome = Placer(state, BinPack()).place(plan, budget)
    expected = gang_fits(world, gang.pod_sets, {}, budget)
    if outcome.pods is None:
        assert not expected, f"reference places it; engine: {outcome.reason}"
        return
    pod_sets = {ps.name: ps for ps in gang.pod_sets}
    taken: frozenset = frozenset()
    load: dict[str, int] = {}
    room = dict(budget)
    for pod in outcome.pods:
        ps = pod_sets[pod.pod_set]
        picks = engine_picks(ps.claims, pod.claims)
        assert valid_pod(world, pod.node, ps.claims, picks, taken, room) is None
        for _, keys in picks.values():
            taken |= set(keys)
        for claim in pod.claims:
            for da in claim.devices:
                if da.device_class in room:
                    room[da.device_class] -= 1
        load[pod.node] = load.get(pod.node, 0) + ps.requests["cpu"]
    for node, cpu in load.items():
        assert cpu <= world.nodes[node].allocatable["cpu"]
    assert expected
