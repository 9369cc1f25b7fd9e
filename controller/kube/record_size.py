"""How large an admission record would be, before anything is reserved for it.

The commit point of a gang is one write of its record, so a record the API server cannot
store would leave the gang failing at that write on every try (after its victims were
evicted for it). A GangJob's record is bounded by the webhook (controller/webhook/
gangjob.py, from the longest names `Sizes` finds); a foreign gang has no webhook in its
way, and its record ConfigMap (foreign.py) grows with its pods: data past 1 MiB
(ConfigMap validation) or an object past etcd's 1.5 MiB request limit is refused.

`foreign_too_large` builds the record of a foreign gang as if placed at its most
expensive: every pod on a node of its own, its devices in a pool of its own, every name
as long as the longest the cluster has (and device names as varied as the cluster's), and
measures it as the API server does (the ConfigMap's data; the etcd key and the object as
compact JSON, with room for what the server adds). A gang over either limit is refused up
front, with the numbers; the measure is kept per gang until its pods or the cluster's
nodes and devices change, since a gang is judged again on every event of its pods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from controller.engine.model import AllocationMode, DeviceKey, PodClaim
from controller.engine.reservation import (
    ClaimAllocation,
    DeviceAllocation,
    PodPlacement,
    Reservation,
)
from controller.engine.state import ClusterState
from controller.kube import foreign as f
from controller.kube.rest import Obj

CONFIG_MAP_DATA_MAX = 1024 * 1024
"""Bytes a ConfigMap's data may hold (ValidateConfigMap: `[]: Too long`)."""
ETCD_REQUEST_MAX = 1536 * 1024
"""etcd's default `--max-request-bytes`: the key and the stored object of one write."""
SERVER_ADDS = 2048
"""Bytes the API server adds to a created object (uid, resourceVersion, timestamps,
managedFields), kept free under `ETCD_REQUEST_MAX`."""
QUOTA_FIELDS = 1024
"""Bytes kept for the record's quotaCharged and borrowed, which the estimate leaves out."""
MAX_DEVICES_PER_REQUEST = 32
"""resource.k8s.io/v1 allocates at most 32 devices to one request (`All` mode included)."""


@dataclass
class Sizes:
    """The longest node name and device key in the cluster, and the longest driver, pool
    and device name apart with how many device names differ (for the admission-record
    size estimates), recomputed only when nodes or devices change."""

    _stamp: tuple[int, int, int] = (-1, -1, -1)
    node_name: int = 0
    device: DeviceKey = ("", "", "")
    parts: tuple[int, int, int] = (0, 0, 0)
    """The longest driver, pool and device name."""
    device_names: int = 1
    """How many device names differ (at least 1)."""
    nodes: int = 1
    """How many nodes there are (at least 1)."""
    pools: int = 1
    drivers: int = 1
    pools_are_nodes: bool = True
    """Whether every node-local device's pool is named after its node (as per-node
    pools are): the record's names then hold one string for both."""

    def refresh(self, state: ClusterState) -> Sizes:
        stamp = (id(state), state.node_generation, state.inventory.generation)
        if stamp != self._stamp:
            self._stamp = stamp
            keys = state.inventory.devices
            self.node_name = max((len(n) for n in state.nodes), default=0)
            self.device = max(keys, key=lambda k: sum(map(len, k)), default=("", "", ""))
            self.parts = (
                max((len(k[0]) for k in keys), default=0),
                max((len(k[1]) for k in keys), default=0),
                max((len(k[2]) for k in keys), default=0),
            )
            self.device_names = max(1, len({k[2] for k in keys}))
            self.nodes = max(1, len(state.nodes))
            self.pools = max(1, len({k[:2] for k in keys}))
            self.drivers = max(1, len({k[0] for k in keys}))
            self.pools_are_nodes = all(d.pool == d.node for d in keys.values() if d.node)
        return self

    @property
    def stamp(self) -> tuple[int, int, int]:
        return self._stamp


def _named(text: str, length: int) -> str:
    """`text` made `length` long (never shorter than itself)."""
    return text.rjust(length, "x")


def _devices(claim: PodClaim) -> list[tuple[str, int]]:
    """(request name as recorded, devices) of each request of a claim, at the most its
    alternatives may take."""
    out = []
    for request in claim.spec.requests:
        best = max(
            request.alternatives,
            key=lambda s: s.count if s.mode is AllocationMode.EXACT_COUNT else 10**9,
        )
        count = best.count if best.mode is AllocationMode.EXACT_COUNT else MAX_DEVICES_PER_REQUEST
        name = f"{request.name}/{best.name}" if request.first_available else request.name
        out.append((name, min(count, MAX_DEVICES_PER_REQUEST)))
    return out


def worst_reservation(found: f.Members, sizes: Sizes) -> Reservation:
    """`found` placed at its most expensive to record (see the module docstring): as
    many nodes as pods (or the cluster has), each with its own pool (or none but itself,
    if pools are named after nodes), names as long as the cluster's longest."""
    driver_len, pool_len, device_len = sizes.parts
    driver = _named("d", driver_len)
    placed: list[PodPlacement] = []
    devices = 0
    for pod_set in found.gang.pod_sets:
        shape = [(c.name, _devices(c)) for c in pod_set.claims]
        for index in range(pod_set.count):
            pod = len(placed)
            node = _named(str(pod % sizes.nodes), sizes.node_name)
            pool = node if sizes.pools_are_nodes else _named(f"p{pod}", pool_len)
            claims = []
            for claim, requests in shape:
                given = []
                for request, count in requests:
                    for _ in range(count):
                        name = _named(f"g{devices % sizes.device_names}", device_len)
                        given.append(DeviceAllocation(request, (driver, pool, name), "c"))
                        devices += 1
                claims.append(ClaimAllocation(claim, tuple(given)))
            placed.append(PodPlacement(pod_set.name, index, node, {}, tuple(claims)))
    return Reservation.placed(found.gang.uid, found.gang.queue, tuple(placed), {})


def foreign_record_bytes(found: f.Members, pod_group: Obj | None, sizes: Sizes) -> tuple[int, int]:
    """(data bytes, stored bytes) of a foreign gang's record ConfigMap at its largest."""
    written = f.record(found, worst_reservation(found, sizes), "0" * 16)
    manifest = f.record_object(found, written, None, pod_group)
    group = found.group
    key = f"/registry/configmaps/{group.namespace}/{group.record_name}"
    data = sum(len(v.encode()) for v in manifest["data"].values()) + QUOTA_FIELDS
    stored = len(key) + len(json.dumps(manifest, separators=(",", ":")).encode())
    stored += QUOTA_FIELDS + SERVER_ADDS
    return data, stored


QUOTED = 5
"""Bytes a string adds beside its characters in the record as stored: its quotes, escaped
in the ConfigMap's JSON (`\\"`), and a comma."""
OWNER = len('{"apiVersion":"v1","kind":"Pod","name":"","uid":""},')
TOP = 4096
"""Bytes of the record and the ConfigMap beside its pods and names (ids, queue, pod set
names, labels, brackets), at most."""


def foreign_record_bound(found: f.Members, pod_group: Obj | None, sizes: Sizes) -> tuple[int, int]:
    """(data bytes, stored bytes) `foreign_record_bytes` never exceeds, summed without
    building the record (a few microseconds a pod): every number as long as the largest
    can be, every device given with its request, driver and pool, every name the record
    could hold listed once (a node per pod up to the cluster's nodes; pools, drivers and
    device names up to the cluster's)."""
    driver_len, pool_len, device_len = sizes.parts
    pods = devices = claims = names_len = 0
    texts: set[str] = set()
    for pod_set, parts in zip(found.gang.pod_sets, found.sets, strict=True):
        shape = [(c.name, _devices(c)) for c in pod_set.claims]
        per_pod = sum(count for _, requests in shape for _, count in requests)
        texts.update(c for c, _ in shape)
        texts.update(r for _, requests in shape for r, _ in requests)
        for part in parts:
            meta = part.pod.get("metadata") or {}
            names_len += len(str(meta.get("name"))) + len(str(meta.get("uid")))
            names_len += sum(len(obj) + QUOTED for _, obj in part.names)
        pods += len(parts)
        devices += per_pod * len(parts)
        claims += len(shape) * len(parts)
    nodes = min(pods, sizes.nodes)
    listed = (
        nodes * (sizes.node_name + QUOTED)
        + (0 if sizes.pools_are_nodes else min(devices, sizes.pools) * (pool_len + QUOTED))
        + min(devices, sizes.device_names) * (device_len + QUOTED)
        + sizes.drivers * (driver_len + QUOTED)
        + sum(len(t) + QUOTED for t in texts)
    )
    digits = len(str(max(pods, nodes + devices + len(texts) + sizes.drivers + sizes.pools)))
    data = (
        TOP
        + QUOTA_FIELDS
        + listed
        + names_len
        + pods * (2 * digits + 2 * QUOTED + 6)
        + claims * (digits + 6)
        + devices * (4 * digits + 5)
    )
    owners = 0 if pod_group is not None else pods * OWNER + names_len
    return data, data + owners + SERVER_ADDS


@dataclass
class RecordSizes:
    """`foreign_too_large` of each gang, kept while its pods and the cluster are the same."""

    sizes: Sizes = field(default_factory=Sizes)
    _known: dict[str, tuple[object, str | None]] = field(default_factory=dict)

    def too_large(self, found: f.Members, pod_group: Obj | None, state: ClusterState) -> str | None:
        """Why a foreign gang cannot be recorded (None if it can): its record at its
        largest over the ConfigMap data limit or etcd's request limit."""
        sizes = self.sizes.refresh(state)
        data, stored = foreign_record_bound(found, pod_group, sizes)
        if data <= CONFIG_MAP_DATA_MAX and stored <= ETCD_REQUEST_MAX:
            return None  # far enough below the limits: not built
        pods = sum(len(parts) for parts in found.sets)
        version = (
            sizes.stamp,
            pod_group is None,
            tuple((ps.name, ps.count, ps.claims) for ps in found.gang.pod_sets),
            tuple(str((p.pod.get("metadata") or {}).get("uid")) for ps in found.sets for p in ps),
        )
        known = self._known.get(found.gang.uid)
        if known is not None and known[0] == version:
            return known[1]
        data, stored = foreign_record_bytes(found, pod_group, sizes)
        why = None
        for size, limit, what in (
            (data, CONFIG_MAP_DATA_MAX, "a ConfigMap's data"),
            (stored, ETCD_REQUEST_MAX, "etcd's for one object"),
        ):
            if size > limit:
                why = (
                    f"too large to record: {pods:,} pods, the record would be {size:,} bytes, "
                    f"the API server's limit is {limit:,} ({what}); split the gang or use "
                    "fewer, larger pods"
                )
                break
        self._known[found.gang.uid] = (version, why)
        return why

    def forget(self, uid: str) -> None:
        self._known.pop(uid, None)

    def __len__(self) -> int:
        return len(self._known)
