"""Hypothesis generators for engine property tests: clusters, queue trees, gangs, operations.

Everything generated is plain immutable input (engine model objects and operation tuples),
so the same draw can build several independent states (determinism tests) and shrinks
to a readable counterexample.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from controller.engine.model import (
    AllocationMode,
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
    Queue,
    QuotaLimit,
    ResourceSlice,
    Topology,
    TopologyMode,
)
from tests.builders import DRIVER, GIB, GPU

MODEL = f"{DRIVER}/model"
NVLINK = f"{DRIVER}/nvlinkDomain"
INDEX = f"{DRIVER}/index"
H100 = f'device.attributes["{DRIVER}"].model == "h100"'
GPU_RESOURCE = f"devices/{GPU}"
QUOTA_RESOURCES = (GPU_RESOURCE, "cpu")
RACK = "rack"
GPU_CLASS = DeviceClass(GPU, (f'device.driver == "{DRIVER}"',))

# ---- typed attributes ---------------------------------------------------------------------
FLAG = f"{DRIVER}/flag"
FLAG_VALUES: tuple[bool | int | str, ...] = (True, False, 1, 0, "1", "true")
"""DRA attribute values are typed: these are pairwise different values, though Python has
True == 1 and False == 0 (same hash), and True, 1, "1" and "true" print alike."""
FLAG_SELECTORS: dict[str, bool | int | str] = {
    f'device.attributes["{DRIVER}"].flag == true': True,
    f'device.attributes["{DRIVER}"].flag == 1': 1,
    f'device.attributes["{DRIVER}"].flag == "1"': "1",
    f'device.attributes["{DRIVER}"].flag == false': False,
}
"""Request selectors over FLAG, with the one value each one selects."""


def same_typed_value(a: object, b: object) -> bool:
    """DRA equality, written independently of the engine: same type and same value."""
    return type(a) is type(b) and a == b


def _flag_is(want: bool | int | str) -> Callable[[Device], bool]:
    return lambda d: same_typed_value(d.attributes.get(FLAG), want)


SELECTOR_ORACLE: Mapping[str, Callable[[Device], bool]] = {
    H100: lambda d: d.attributes.get(MODEL) == "h100",
    **{expr: _flag_is(want) for expr, want in FLAG_SELECTORS.items()},
}
"""Every request selector the strategies draw, evaluated without CEL (for the checks)."""


# ---- clusters ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterSpec:
    """Nodes, their GPU slices and the queue tree; `leaves` are the queues gangs may use."""

    nodes: tuple[Node, ...]
    slices: tuple[ResourceSlice, ...]
    queues: tuple[Queue, ...]
    leaves: tuple[str, ...]


# Strategies are built once, here, not inside the composites: building one per draw (and
# hypothesis validating each) took about half of generating an example.
_DEVICE_COUNTS = st.sampled_from([0, 1, 2, 4, 6, 8, 8, 8])
_MODELS = st.sampled_from(["h100", "a100"])
_NVLINKS = st.sampled_from(["nvl-0", "nvl-1", "nvl-2"])
_FLAGS = st.sampled_from([None, *FLAG_VALUES])
_ONE_IN_FOUR = st.integers(0, 3)


@functools.cache  # one strategy per set of arguments
@st.composite
def gpu_devices(draw: st.DrawFn, node: str, shareable: bool = True) -> tuple[Device, ...]:
    """0-8 GPUs with mixed models and NVLink domains; about one in four is shareable
    (unless not `shareable`). Most have a typed FLAG attribute whose values collide in
    Python (True/1, "1"/1)."""
    count = draw(_DEVICE_COUNTS)
    return tuple(
        Device(
            DRIVER,
            node,
            f"gpu-{i}",
            node,
            attributes={
                MODEL: draw(_MODELS),
                NVLINK: draw(_NVLINKS),
                INDEX: i,
                **({} if (value := draw(_FLAGS)) is None else {FLAG: value}),
            },
            capacity={f"{DRIVER}/memory": "80Gi"},
            shareable=shareable and draw(_ONE_IN_FOUR) == 0,
        )
        for i in range(count)
    )


_NODE_COUNTS = st.integers(1, 6)
_RACK_LABELS = st.sampled_from([{}, {RACK: "r0"}, {RACK: "r1"}])
_NODE_CPUS = st.sampled_from([16, 32, 64, 128])
_NODE_PODS = st.sampled_from([110, 110, 8, 4])


@st.composite
def nodes_and_slices(
    draw: st.DrawFn, shareable: bool = True, network: bool = False
) -> tuple[tuple[Node, ...], tuple[ResourceSlice, ...]]:
    """1-6 nodes, some labelled rack=r0/r1, each with 0-8 GPUs in one slice; with
    `network`, also 1-4 network-attached GPUs (node None) that any node's pods can use."""
    n = draw(_NODE_COUNTS)
    nodes = []
    slices = []
    for i in range(n):
        name = f"n{i}"
        labels = draw(_RACK_LABELS)
        cpu = draw(_NODE_CPUS) * 1000
        pods = draw(_NODE_PODS)
        nodes.append(Node(name, {"cpu": cpu, "memory": 512 * GIB, "pods": pods}, labels))
        devices = draw(gpu_devices(name, shareable))
        if devices:
            slices.append(ResourceSlice(f"{name}-gpus", DRIVER, name, name, devices))
    if network:
        fabric = draw(gpu_devices("fabric", shareable).filter(bool))
        moved = tuple(replace(d, node=None) for d in fabric[:4])
        slices.append(ResourceSlice("fabric-gpus", DRIVER, "fabric", None, moved))
    return tuple(nodes), tuple(slices)


def quota_limits(resource: str) -> st.SearchStrategy[QuotaLimit]:
    """Random nominal / borrowingLimit / lendingLimit for GPUs (count) or cpu (millicores)."""
    scale = 1 if resource == GPU_RESOURCE else 8000
    amount = st.integers(0, 8).map(lambda v: v * scale)
    return st.builds(
        QuotaLimit,
        nominal=st.integers(0, 24).map(lambda v: v * scale),
        borrowing_limit=st.none() | amount,
        lending_limit=st.none() | amount,
    )


_QUOTA_LIMITS = {r: quota_limits(r) for r in QUOTA_RESOURCES}
_BOOLEANS = st.booleans()


@st.composite
def queue_quota(draw: st.DrawFn) -> dict[str, QuotaLimit]:
    return {r: draw(_QUOTA_LIMITS[r]) for r in QUOTA_RESOURCES if draw(_BOOLEANS)}


QUEUE_WEIGHTS = st.sampled_from([1.0, 1.0, 1.0, 2.0, 0.5, 0.0])
"""Fair-sharing weights, 0 included (a queue with no claim on what others lend)."""


_QUEUE_QUOTA = queue_quota()
_KIDS = st.integers(0, 3)
_ROOTS = st.integers(1, 2)


@st.composite
def queue_trees(draw: st.DrawFn, max_leaves: int = 5) -> tuple[tuple[Queue, ...], tuple[str, ...]]:
    """1-2 roots, up to three levels, at most `max_leaves` leaves, weights drawn; parents
    come first."""
    queues: list[Queue] = []
    leaves: list[str] = []

    def grow(name: str, parent: str | None, depth: int) -> None:
        queues.append(Queue(name, parent, draw(_QUEUE_QUOTA), weight=draw(QUEUE_WEIGHTS)))
        room = max_leaves - len(leaves)
        kids = draw(_KIDS) if depth < 2 and room > 1 else 0
        kids = min(kids, room)
        if kids == 0:
            leaves.append(name)
            return
        for k in range(kids):
            if len(leaves) >= max_leaves:
                break
            grow(f"{name}.{k}", name, depth + 1)

    for r in range(draw(_ROOTS)):
        if len(leaves) >= max_leaves:
            break
        grow(f"q{r}", None, 0)
    return tuple(queues), tuple(leaves)


@st.composite
def cluster_specs(draw: st.DrawFn, shareable: bool = True, network: bool = False) -> ClusterSpec:
    nodes, slices = draw(nodes_and_slices(shareable, network))
    queues, leaves = draw(queue_trees())
    return ClusterSpec(nodes, slices, queues, leaves)


# ---- gangs ------------------------------------------------------------------------------
_ONE_IN_THREE = st.integers(0, 2)
_SELECTORS = st.sampled_from([H100, *FLAG_SELECTORS])


def _selectors(draw: st.DrawFn) -> tuple[str, ...]:
    """Mostly none; else the h100 selector or one over the typed FLAG attribute."""
    if draw(_ONE_IN_THREE):
        return ()
    return (draw(_SELECTORS),)


_SHAPES_OF_ONE = st.sampled_from(["one", "first-available"])
_SHAPES = st.sampled_from(["one", "first-available", "match", "match", "two-claims"])
_MATCHED = st.sampled_from([NVLINK, NVLINK, MODEL, FLAG, FLAG])
_SCOPES = st.sampled_from([("a", "b"), ()])


@functools.cache  # one strategy per set of arguments
@st.composite
def pod_claims(draw: st.DrawFn, gpus: int) -> tuple[PodClaim, ...]:
    """`gpus` GPUs per pod: one request, two requests under a matchAttribute constraint,
    two separate claims, or a firstAvailable request (h100 first, any GPU second)."""
    if gpus == 0:
        return ()
    shape = draw(_SHAPES if gpus >= 2 else _SHAPES_OF_ONE)
    if shape == "one":
        return (
            PodClaim(
                "gpu", ClaimSpec((DeviceRequest.exactly("gpus", GPU, gpus, _selectors(draw)),))
            ),
        )
    if shape == "first-available":
        request = DeviceRequest(
            "gpus",
            (
                DeviceSubRequest("h100", GPU, (H100,), count=gpus),
                DeviceSubRequest("any", GPU, (), count=gpus),
            ),
            first_available=True,
        )
        return (PodClaim("gpu", ClaimSpec((request,))),)
    a = draw(st.integers(1, gpus - 1))
    if shape == "two-claims":
        return (
            PodClaim("gpu", ClaimSpec((DeviceRequest.exactly("gpus", GPU, a, _selectors(draw)),))),
            PodClaim("more", ClaimSpec((DeviceRequest.exactly("gpus", GPU, gpus - a),))),
        )
    attribute = draw(_MATCHED)
    scope = draw(_SCOPES)
    spec = ClaimSpec(
        (
            DeviceRequest.exactly("a", GPU, a, _selectors(draw)),
            DeviceRequest.exactly("b", GPU, gpus - a),
        ),
        (MatchAttribute(attribute, scope),),
    )
    return (PodClaim("gpu", spec),)


_POD_COUNTS = st.sampled_from([1, 1, 2, 2, 3, 4, 5, 6])
_POD_GPUS = st.sampled_from([0, 0, 1, 1, 2, 2, 3, 4])
_POD_CPUS = st.sampled_from([1, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32])
_NODE_SELECTORS = st.sampled_from([{}, {}, {}, {RACK: "r0"}, {RACK: "r1"}])


@st.composite
def pod_sets(draw: st.DrawFn, index: int) -> PodSet:
    count = draw(_POD_COUNTS)
    gpus = draw(_POD_GPUS)
    cpu = draw(_POD_CPUS) * 1000
    return PodSet(
        f"ps{index}",
        count,
        {"cpu": cpu, "memory": GIB},
        claims=draw(pod_claims(gpus)),
        node_selector=draw(_NODE_SELECTORS),
    )


_POD_SETS = (pod_sets(0), pod_sets(1))

topologies = (
    st.none()
    | st.builds(
        Topology,
        key=st.just(RACK),
        mode=st.sampled_from(TopologyMode),
        device_attribute=st.just(False),
    )
    | st.builds(
        Topology,
        key=st.sampled_from([NVLINK, NVLINK, FLAG]),
        mode=st.sampled_from(TopologyMode),
        device_attribute=st.just(True),
    )
)


_POD_SET_COUNTS = st.integers(1, 2)
_ONE_IN_THIRTY = st.integers(0, 29)
_PRIORITIES = st.integers(0, 2)
_CREATED = st.integers(0, 5)


@functools.cache
def _one_of(values: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


@st.composite
def gangs(draw: st.DrawFn, leaves: Sequence[str], uid: str = "g") -> Gang:
    """A gang of 1-2 pod sets on one of `leaves` (rarely a queue it may not use)."""
    n = draw(_POD_SET_COUNTS)
    queue = draw(_one_of(tuple(leaves))) if draw(_ONE_IN_THIRTY) else "missing"
    return Gang(
        uid=uid,
        name=uid,
        namespace="default",
        queue=queue,
        pod_sets=tuple(draw(_POD_SETS[i]) for i in range(n)),
        priority=draw(_PRIORITIES),
        created=float(draw(_CREATED)),
        topology=draw(topologies),
    )


# ---- operations -------------------------------------------------------------------------
Op = tuple[object, ...]
"""("add", Gang) | ("cycle", "commit"|"rollback") | ("cycle", "mixed", tuple[bool, ...])
| ("release", i, requeue) | ("remove_node", i) | ("node", i) | ("foreign_pod", node i, cpu)
| ("foreign_claim", node i, device i) | ("remove_foreign", i) | ("touch_queue", i, raise)
| ("slice", i, "publish"|"remove") | ("add_queue", parent i, quota) | ("remove_queue", i)
Indices are taken modulo what exists when the operation runs."""

QUEUE_CHURN = {
    "add": 4,
    "commit": 4,
    "rollback": 1,
    "mixed": 1,
    "release": 3,
    "touch_queue": 2,
    "add_queue": 2,
    "remove_queue": 3,
}
"""Operation weights for runs about queue deletion: gangs come and go while queues are
deleted, re-published (revived) and added, also under deleted ones."""

ADMISSION_CHURN = {
    "add": 5,
    "copies": 2,
    "commit": 4,
    "rollback": 1,
    "mixed": 2,
    "release": 3,
    "remove_gang": 2,
    "rebuild": 1,
    "touch_queue": 1,
    "add_queue": 1,
    "remove_queue": 1,
}
"""Operation weights for runs about who runs: admissions (committed, rolled back),
releases, gangs deleted pending or running, controller restarts (`rebuild`), and queue
changes now and then."""


_INDEX = st.integers(0, 63)
_OTHER_KINDS: dict[str, st.SearchStrategy[Op]] = {
    "commit": st.tuples(st.just("cycle"), st.just("commit")),
    "rollback": st.tuples(st.just("cycle"), st.just("rollback")),
    "mixed": st.tuples(st.just("cycle"), st.just("mixed"), st.lists(st.booleans(), max_size=8)),
    "release": st.tuples(st.just("release"), _INDEX, st.booleans()),
    "remove_node": st.tuples(st.just("remove_node"), _INDEX),
    "node": st.tuples(st.just("node"), _INDEX),
    "foreign_pod": st.tuples(
        st.just("foreign_pod"), _INDEX, st.integers(1, 16).map(lambda c: c * 1000)
    ),
    "foreign_claim": st.tuples(st.just("foreign_claim"), _INDEX, _INDEX),
    "remove_foreign": st.tuples(st.just("remove_foreign"), _INDEX),
    "touch_queue": st.tuples(st.just("touch_queue"), _INDEX, st.booleans()),
    "slice": st.tuples(st.just("slice"), _INDEX, st.sampled_from(["publish", "remove"])),
    "add_queue": st.tuples(st.just("add_queue"), _INDEX, _QUEUE_QUOTA),
    "remove_queue": st.tuples(st.just("remove_queue"), _INDEX),
    "remove_gang": st.tuples(st.just("remove_gang"), _INDEX),
    "rebuild": st.tuples(st.just("rebuild")),
}
"""Every kind of operation but adding gangs (whose queues are the cluster's), in the
order their names are drawn from."""


def operations(
    spec: ClusterSpec,
    max_ops: int = 20,
    copies: int = 0,
    only: Mapping[str, int] | None = None,
) -> st.SearchStrategy[list[Op]]:
    """A random interleaving of cluster events and admission cycles; gangs get uids g00..
    With `copies`, gangs are also added in batches of up to that many of one shape (a
    backlog of repeated shapes). `only` restricts the kinds drawn, with these weights
    (e.g. QUEUE_CHURN)."""
    gang = gangs(spec.leaves)
    kinds: dict[str, st.SearchStrategy[Op]] = {
        "add": st.tuples(st.just("add"), gang),
        **_OTHER_KINDS,
    }
    weights = {"add": 6, "commit": 5, "rollback": 2, "mixed": 2, "release": 2}
    weights.update(remove_gang=0, rebuild=0)  # drawn only when asked (`only`)
    if copies:
        kinds["copies"] = st.tuples(st.just("add"), gang, st.integers(2, copies))
        weights.update(copies=4, release=4)
    if only is not None:
        weights = {k: only.get(k, 0) for k in kinds}
    names = [k for k in kinds for _ in range(weights.get(k, 1))]
    op = st.sampled_from(names).flatmap(kinds.__getitem__)
    # Always start with a gang and end with a committed cycle, so every run decides something.
    return st.tuples(
        st.tuples(st.just("add"), gang),
        st.lists(op, min_size=min(6, max_ops), max_size=max_ops),
    ).map(lambda first_rest: _number_gangs([first_rest[0], *first_rest[1], ("cycle", "commit")]))


def _number_gangs(ops: list[Op]) -> list[Op]:
    """Uids g00, g01.. in order; ("add", gang, k) becomes k adds of that shape, created
    one after another, with priorities taking turns (one group, interleaved keys)."""
    out: list[Op] = []
    n = 0
    for op in ops:
        if op[0] != "add":
            out.append(op)
            continue
        gang = op[1]
        assert isinstance(gang, Gang)
        count = op[2] if len(op) > 2 else 1
        assert isinstance(count, int)
        for i in range(count):
            uid = f"g{n:02d}"
            priority = gang.priority if i == 0 else (gang.priority + i) % 3
            copy = replace(gang, uid=uid, name=uid, created=gang.created + i, priority=priority)
            out.append(("add", copy))
            n += 1
    return out


@dataclass(frozen=True)
class Scenario:
    spec: ClusterSpec
    ops: tuple[Op, ...]
    preempt: str
    """Preemption: "none", test doubles "lower" or "lower-or-equal" priority victims, or
    a shipped policy by name (see `harness.make_engine`)."""
    ordering: str = "priority"
    """A shipped ordering policy by name."""


ORDERINGS = ("priority", "strict-fifo", "best-effort-fifo", "drf", "las", "sjf")


PREEMPTION_KINDS = (
    "none",
    "lower",
    "lower-or-equal",
    "priority",
    "reclaim",
    "fair-share",
    "cost-aware",
)


@st.composite
def scenarios(
    draw: st.DrawFn,
    max_ops: int = 20,
    preemption: bool = True,
    copies: int = 0,
    orderings: Sequence[str] = ORDERINGS,
    exclusive: bool = False,
    kinds: Sequence[str] = PREEMPTION_KINDS,
) -> Scenario:
    """With `exclusive`, half the clusters have no shareable device (counts of free
    devices then bound what fits); `kinds`: the preemption policies drawn from (see
    `harness.make_engine`)."""
    spec = draw(cluster_specs(not (exclusive and draw(st.booleans()))))
    ops = draw(operations(spec, max_ops, copies))
    preempt = draw(st.sampled_from(kinds)) if preemption else "none"
    return Scenario(spec, tuple(ops), preempt, draw(st.sampled_from(orderings)))


@st.composite
def queue_churn_scenarios(draw: st.DrawFn, max_ops: int = 24) -> Scenario:
    """Scenarios of QUEUE_CHURN operations. Orderings that read only the objects and the
    recorded waiting times (not attained service), so a state rebuilt from the objects
    must decide alike."""
    spec = draw(cluster_specs())
    ops = draw(operations(spec, max_ops, only=QUEUE_CHURN))
    kinds = ["none", "lower", "lower-or-equal", "priority", "reclaim", "fair-share", "cost-aware"]
    ordering = draw(st.sampled_from(["priority", "strict-fifo", "best-effort-fifo", "drf"]))
    return Scenario(spec, tuple(ops), draw(st.sampled_from(kinds)), ordering)


@st.composite
def admission_churn_scenarios(draw: st.DrawFn, max_ops: int = 30) -> Scenario:
    """Scenarios of ADMISSION_CHURN operations (backlogs of repeated shapes too), under the
    shipped policies that index who runs, or none."""
    spec = draw(cluster_specs())
    ops = draw(operations(spec, max_ops, copies=6, only=ADMISSION_CHURN))
    kinds = ["reclaim", "reclaim-lower", "fair-share", "priority", "cost-aware", "none"]
    return Scenario(spec, tuple(ops), draw(st.sampled_from(kinds)))


# ---- quota only -------------------------------------------------------------------------
@st.composite
def quota_charges(
    draw: st.DrawFn, leaves: Sequence[str], max_size: int = 12
) -> list[tuple[str, dict[str, int], bool]]:
    """(leaf, charge, is_uncharge) steps; amounts in the units of the quota limits."""
    resource_amount = st.sampled_from([*QUOTA_RESOURCES, "memory"]).flatmap(
        lambda r: st.tuples(
            st.just(r), st.integers(1, 12).map(lambda v: v if r == GPU_RESOURCE else v * 2000)
        )
    )
    step = st.tuples(
        st.sampled_from(leaves),
        st.lists(resource_amount, min_size=1, max_size=2).map(dict),
        st.integers(0, 3).map(lambda v: v == 0),
    )
    return draw(st.lists(step, max_size=max_size))


# ---- small DRA instances (brute-force comparison) ---------------------------------------
NET_DRIVER = "net.example.com"
FLAG = f"{DRIVER}/flag"
"""A typed attribute for matchAttribute: bool, int and string values that Python's ==
confuses (True == 1)."""
SMALL_CLASSES = {
    GPU: f'device.driver == "{DRIVER}"',
    "model-a": f'device.attributes["{DRIVER}"].model == "a"',
    "any": f'device.driver == "{DRIVER}" || device.driver == "{NET_DRIVER}"',
}
MODEL_A = f'device.attributes["{DRIVER}"].model == "a"'
MODEL_B = f'device.attributes["{DRIVER}"].model == "b"'


@dataclass(frozen=True)
class DeviceWorld:
    """Devices of a few nodes (node None: network-attached), foreign holders, and quota
    budgets per DeviceClass."""

    nodes: tuple[Node, ...]
    devices: tuple[Device, ...]
    held: tuple[int, ...]
    budget: tuple[tuple[str, int], ...]


@st.composite
def small_devices(draw: st.DrawFn, node: str | None, prefix: str) -> tuple[Device, ...]:
    """1-5 devices (0-2 network-attached) with drawn typed attributes; about one in four
    shareable."""
    count = draw(st.integers(1, 5) if node is not None else st.integers(0, 2))
    driver = draw(st.sampled_from([DRIVER, DRIVER, NET_DRIVER])) if node is None else DRIVER
    out = []
    for i in range(count):
        attrs: dict[str, object] = {f"{DRIVER}/model": draw(st.sampled_from(["a", "b"]))}
        if draw(st.integers(0, 5)):
            attrs[FLAG] = draw(st.sampled_from([0, 1, True, False, "1", 1, 0]))
        out.append(
            Device(
                driver,
                prefix,
                f"d{i}",
                node,
                attributes=attrs,  # type: ignore[arg-type]
                shareable=draw(st.integers(0, 3)) == 0,
            )
        )
    return tuple(out)


@st.composite
def device_worlds(draw: st.DrawFn, max_nodes: int = 1) -> DeviceWorld:
    nodes = []
    devices: list[Device] = []
    for i in range(draw(st.integers(1, max_nodes))):
        name = f"n{i}"
        nodes.append(Node(name, {"cpu": draw(st.sampled_from([2, 4])) * 1000, "pods": 8}))
        devices += draw(small_devices(name, name))
    devices += draw(small_devices(None, "fabric"))
    held = tuple(sorted(set(draw(st.lists(st.integers(0, 15), max_size=2)))))
    budget = tuple(
        (cls, draw(st.integers(0, 3))) for cls in SMALL_CLASSES if draw(st.integers(0, 3)) == 0
    )
    return DeviceWorld(tuple(nodes), tuple(devices), held, budget)


@st.composite
def small_subrequests(draw: st.DrawFn, name: str) -> DeviceSubRequest:
    cls = draw(st.sampled_from(sorted(SMALL_CLASSES)))
    selectors = draw(st.sampled_from([(), (), (MODEL_A,), (MODEL_B,)]))
    if cls != GPU:
        selectors = ()
    if draw(st.integers(0, 5)) == 0:
        return DeviceSubRequest(name, cls, selectors, AllocationMode.ALL)
    return DeviceSubRequest(name, cls, selectors, count=draw(st.integers(1, 2)))


@st.composite
def small_claims(draw: st.DrawFn, prefix: str = "c") -> tuple[PodClaim, ...]:
    """1-2 claims of 1-3 requests: exactly or firstAvailable (2 alternatives), All mode,
    selectors, and matchAttribute over the typed flag (all requests or two of them)."""
    claims = []
    for ci in range(draw(st.integers(1, 2))):
        requests = []
        for ri in range(draw(st.integers(1, 3))):
            rname = f"r{ri}"
            if draw(st.integers(0, 2)) == 0:
                alts = (draw(small_subrequests("x")), draw(small_subrequests("y")))
                requests.append(DeviceRequest(rname, alts, first_available=True))
            else:
                requests.append(DeviceRequest(rname, (draw(small_subrequests(rname)),)))
        constraints: tuple[MatchAttribute, ...] = ()
        if draw(st.integers(0, 2)) == 0:
            names = [r.name for r in requests]
            scope = () if len(names) < 3 or draw(st.booleans()) else tuple(names[:2])
            constraints = (MatchAttribute(FLAG, scope),)
        claims.append(PodClaim(f"{prefix}{ci}", ClaimSpec(tuple(requests), constraints)))
    return tuple(claims)


# ---- faults: bad gangs and misbehaving plug-ins -----------------------------------------
BAD_SELECTORS = (
    'device.attributes["gpu.example.com"].model ==',  # does not parse
    "nope == 1",  # undeclared name
    '"not a bool"',  # not a bool (found by the probe evaluation)
    "device.driver",  # not a bool
)
"""Request selectors that cannot be compiled against the cluster's device attributes."""

FAULTS: dict[str, tuple[str, ...]] = {
    "ordering": ("raise", "not-gang", "unknown-gang", "duplicate", "observe"),
    "preemption": ("raise", "duplicate", "self", "not-admitted", "non-string", "could-help"),
    "placement": ("raise", "unknown-node", "ineligible-node", "foreign-domain", "topology"),
}
"""What a faulty plug-in of each kind does wrong (see tests/property/faulty.py)."""


@dataclass(frozen=True)
class FaultPlan:
    """Plug-in `kind` misbehaves as `fault` from its `at`-th call on (or only then)."""

    kind: str
    fault: str
    at: int
    once: bool


fault_plans = st.sampled_from(sorted(FAULTS)).flatmap(
    lambda kind: st.builds(
        FaultPlan,
        kind=st.just(kind),
        fault=st.sampled_from(FAULTS[kind]),
        at=st.integers(1, 12),
        once=st.booleans(),
    )
)


@st.composite
def bad_gangs(draw: st.DrawFn, leaves: Sequence[str]) -> Gang:
    """A gang whose first pod set's device request has a selector that does not compile."""
    gang = draw(gangs(leaves))
    first = gang.pod_sets[0]
    request = DeviceRequest.exactly("gpus", GPU, 1, (draw(st.sampled_from(BAD_SELECTORS)),))
    claims = (PodClaim("bad", ClaimSpec((request,))), *first.claims)
    return replace(gang, pod_sets=(replace(first, claims=claims), *gang.pod_sets[1:]))


@dataclass(frozen=True)
class FaultScenario:
    scenario: Scenario
    plan: FaultPlan


@st.composite
def fault_scenarios(draw: st.DrawFn, max_ops: int = 16) -> FaultScenario:
    """A random scenario where some added gangs are bad and one plug-in is faulty."""
    sc = draw(scenarios(max_ops))
    ops = list(sc.ops)
    for i, op in enumerate(ops):
        if op[0] == "add" and draw(st.integers(0, 3)) == 0:
            gang = op[1]
            assert isinstance(gang, Gang)
            bad = draw(bad_gangs(sc.spec.leaves))
            ops[i] = ("add", replace(bad, uid=gang.uid, name=gang.name))
    plan = draw(fault_plans)
    preempt = "lower" if plan.kind == "preemption" and sc.preempt == "none" else sc.preempt
    return FaultScenario(replace(sc, ops=tuple(ops), preempt=preempt), plan)
