"""ClusterState: everything the engine decides on, updated incrementally.

Every watch event (controller) or simulator event maps to one method here; none of them
rebuilds the state. Indexes kept alongside: node usage, free cpu per node, node
eligibility per (selector, tolerations), device match sets (in DeviceInventory), queue
usage (in QuotaTree), and pending gangs in a stable order, with journals of what changed
in them (`pending_journal`) for readers that follow the backlog incrementally, and of
admissions and releases (`admission_journal`) for readers that index who runs.

`node_generation` grows whenever a node is added, changed or removed.
`capacity_epoch` grows whenever something may make a gang fit that did not before
(capacity freed or added, limits raised); the cycle uses it to skip gangs whose last
failure cannot have changed. `admission_generation` grows on every admission or release,
so a preemption failure (which depends on who runs) is re-tried only after it changes.

Time: the engine has no clock of its own. The caller sets `now` (wall time in the
controller, virtual time in the simulator) before a cycle; admissions record it, and
policies read waiting time and attained service (device-seconds, kept across
preemptions) from it.
"""

from __future__ import annotations

import contextlib
import weakref
from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from sortedcontainers import SortedList

from controller.engine.devices import DeviceInventory, HeldBatch
from controller.engine.errors import InvalidInput
from controller.engine.model import (
    DeviceClass,
    DeviceKey,
    Gang,
    Node,
    Queue,
    Resources,
    ResourceSlice,
    Toleration,
)
from controller.engine.quota import QuotaTree
from controller.engine.reservation import PodPlacement, Reservation

EligibilityKey = tuple[tuple[tuple[str, str], ...], tuple[Toleration, ...]]


@dataclass
class NodeUsage:
    node: Node
    used: dict[str, int] = field(default_factory=dict)

    def fits(self, requests: Resources) -> bool:
        alloc = self.node.allocatable
        used = self.used
        for r, v in requests.items():  # a loop, not all(): no generator per call
            if v and used.get(r, 0) + v > alloc.get(r, 0):
                break
        else:
            return True
        return False

    def free(self, resource: str) -> int:
        return self.node.allocatable.get(resource, 0) - self.used.get(resource, 0)


@dataclass(slots=True)
class _Hold:
    """What a gang's pods hold: requests per node, (device, claim owner) pairs, the
    devices given as shareable, and the device batch (see `ClusterState._hold_pods`)."""

    pods: Sequence[PodPlacement]
    per_node: dict[str, dict[str, int]]
    held: list[tuple[DeviceKey, str]]
    shared: list[DeviceKey]
    batch: HeldBatch | None = None

    @staticmethod
    def of(gang_uid: str, pods: Sequence[PodPlacement]) -> _Hold:
        per_node: dict[str, dict[str, int]] = {}
        held: list[tuple[DeviceKey, str]] = []
        shared: list[DeviceKey] = []
        for pod in pods:
            need = per_node.get(pod.node)
            if need is None:
                per_node[pod.node] = dict(pod.requests)
            else:
                for r, v in pod.requests.items():
                    need[r] = need.get(r, 0) + v
            for claim in pod.claims:
                owner = pod.claim_owner(gang_uid, claim.claim)
                for da in claim.devices:
                    if da.shared:
                        shared.append(da.device)
                    held.append((da.device, owner))
        return _Hold(pods, per_node, held, shared)


class PendingJournal:
    """Uids whose pending entry changed (added, replaced or removed) since the reader last
    drained it: lets a reader follow a large backlog at the cost of what changed."""

    __slots__ = ("__weakref__", "changed")

    def __init__(self, uids: Iterator[str]) -> None:
        self.changed: set[str] = set(uids)

    def drain(self) -> set[str]:
        out, self.changed = self.changed, set()
        return out


AdmissionChange = tuple[str, str, str]
"""(gang uid, the gang's queue, the queue its reservation charges)."""

JOURNAL_SLACK = 4096
"""An admission journal stops listing beyond four times the gangs admitted plus this."""


class AdmissionJournal:
    """Gangs admitted or released since the reader last drained it, each with its queue
    and the queue charged: lets a reader index who runs at the cost of what changed.
    What-if probes release and restore gangs unjournaled (see engine/context.py): only
    the victims a search hands over are written, as released. A journal nobody
    drains stops listing once it names far more gangs than run (`drain` says so)."""

    __slots__ = ("__weakref__", "changed", "overflowed")

    def __init__(self, changes: Iterator[AdmissionChange]) -> None:
        self.changed: set[AdmissionChange] = set(changes)
        self.overflowed = False

    def drain(self) -> set[AdmissionChange] | None:
        """What changed since the last drain; None: too much to list (start over from
        the state)."""
        out, self.changed = self.changed, set()
        if self.overflowed:
            self.overflowed = False
            return None
        return out


class ReservationConflict(InvalidInput):
    """A reservation that cannot be applied as recorded (restoring admissions at start-up)."""


class ClusterState:
    """Nodes, devices, queues and gangs, with the indexes the cycle needs."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeUsage] = {}
        self.inventory = DeviceInventory()
        self.quota = QuotaTree()
        self.namespaces: dict[str, Mapping[str, str]] = {}
        self.pending: dict[str, Gang] = {}
        self._pending_order: SortedList[tuple[tuple[int, float, str], str]] = SortedList()
        self._pending_by_queue: dict[str, SortedList[tuple[tuple[int, float, str], str]]] = {}
        self.pending_since: dict[str, float] = {}
        self.now = 0.0
        self.admission_generation = 0
        self._service: dict[str, list[float]] = {}
        self.admitted: dict[str, Reservation] = {}
        self.admitted_gangs: dict[str, Gang] = {}
        self.foreign_pods: dict[str, tuple[str, Resources]] = {}
        self.foreign_claims: dict[str, tuple[DeviceKey, ...]] = {}
        self._free_cpu: list[tuple[int, str]] = []
        """(free millicores, node) of every node, sorted, but for the nodes of
        `_cpu_moved` (`_sorted_cpu` brings it up to date)."""
        self._cpu_moved: dict[str, int] = {}
        """Nodes whose free cpu changed since `_free_cpu` was last brought up to date,
        with the free cpu their entry there has: a what-if probe releases and restores
        the same gangs many times between two readers of the order."""
        self._holds: dict[str, _Hold] = {}
        """What each gang's pods hold, by gang uid, kept while its pods are the same."""
        self._eligible: dict[EligibilityKey, frozenset[str]] = {}
        self.capacity_epoch = 0
        self.node_generation = 0
        self.namespace_generation = 0
        self._blockers: dict[tuple[str, str], str | None] = {}
        self._blockers_stamp: tuple[int, int] = (-1, -1)
        self._label_domains: dict[str, dict[str, frozenset[str]]] = {}
        self._journals: weakref.WeakSet[PendingJournal] = weakref.WeakSet()
        self._admission_journals: list[weakref.ref[AdmissionJournal]] = []
        """Readers' journals, held weakly (a plain list: written on every admission and
        release, which what-if probes make many of)."""
        self._quiet = False
        """Admissions and releases are not written to the journals (`unjournaled`)."""

    def pending_journal(self) -> PendingJournal:
        """A journal of pending changes, starting with every gang pending now; it is
        written to while the reader keeps it (held weakly)."""
        journal = PendingJournal(iter(self.pending))
        self._journals.add(journal)
        return journal

    def admission_journal(self) -> AdmissionJournal:
        """A journal of admissions and releases, starting with every gang admitted now; it
        is written to while the reader keeps it (held weakly)."""
        journal = AdmissionJournal(
            (uid, gang.queue, self.admitted[uid].queue) for uid, gang in self.admitted_gangs.items()
        )
        self._admission_journals.append(weakref.ref(journal, self._admission_journals.remove))
        return journal

    def _grow(self) -> None:
        self.capacity_epoch += 1

    # ---- nodes -----------------------------------------------------------------------
    def upsert_node(self, node: Node) -> None:
        """Add or update a node, keeping what is already running on it.

        A node seen for the first time (or again) counts pods already recorded on it:
        watch events for pods may arrive before the node's.
        """
        self._sorted_cpu()
        old = self.nodes.get(node.name)
        if old is not None:
            self._unsort_cpu(old.free("cpu"), node.name)
            old.node = node
        else:
            usage = NodeUsage(node)
            self.nodes[node.name] = usage
            holders = [req for n, req in self.foreign_pods.values() if n == node.name] + [
                p.requests
                for res in self.admitted.values()
                for p in res.pods
                if p.node == node.name
            ]
            for req in holders:
                for r, v in req.items():
                    usage.used[r] = usage.used.get(r, 0) + v
        insort(self._free_cpu, (self.nodes[node.name].free("cpu"), node.name))
        self._eligible.clear()
        self._label_domains.clear()
        self.node_generation += 1
        self._grow()

    def remove_node(self, name: str) -> list[str]:
        """Remove a node; returns admitted gangs with pods there (the caller evicts them).

        Pods recorded on it stay recorded until their own removal, so a node that comes
        back counts them again.
        """
        self._sorted_cpu()
        usage = self.nodes.pop(name, None)
        if usage is None:
            return []
        self._unsort_cpu(usage.free("cpu"), name)
        self._eligible.clear()
        self._label_domains.clear()
        self.node_generation += 1
        return sorted(
            uid for uid, res in self.admitted.items() if any(p.node == name for p in res.pods)
        )

    def eligible_nodes(
        self, node_selector: Mapping[str, str], tolerations: tuple[Toleration, ...]
    ) -> frozenset[str]:
        """Schedulable nodes whose labels match and whose taints are tolerated (cached)."""
        key: EligibilityKey = (tuple(sorted(node_selector.items())), tolerations)
        hit = self._eligible.get(key)
        if hit is None:
            hit = frozenset(
                name
                for name, u in self.nodes.items()
                if not u.node.unschedulable
                and all(u.node.labels.get(k) == v for k, v in node_selector.items())
                and not u.node.blocking_taints(tolerations)
            )
            self._eligible[key] = hit
        return hit

    def label_domains(self, key: str) -> dict[str, frozenset[str]]:
        """Nodes grouped by their value of label `key` (cached until nodes change)."""
        hit = self._label_domains.get(key)
        if hit is None:
            groups: dict[str, set[str]] = {}
            for name, u in self.nodes.items():
                v = u.node.labels.get(key)
                if v is not None:
                    groups.setdefault(v, set()).add(name)
            hit = {v: frozenset(ns) for v, ns in sorted(groups.items())}
            self._label_domains[key] = hit
        return hit

    def nodes_by_free_cpu(self, minimum: int, descending: bool = False) -> Iterator[str]:
        """Nodes with at least `minimum` free millicores, least free first (or most)."""
        self._sorted_cpu()
        return self._by_free_cpu(minimum, descending)

    def _by_free_cpu(self, minimum: int, descending: bool) -> Iterator[str]:
        start = bisect_left(self._free_cpu, (minimum, ""))
        if descending:
            for i in range(len(self._free_cpu) - 1, start - 1, -1):
                yield self._free_cpu[i][1]
        else:
            for i in range(start, len(self._free_cpu)):
                yield self._free_cpu[i][1]

    def _use(self, node_name: str, requests: Resources, sign: int) -> None:
        usage = self.nodes.get(node_name)
        if usage is None:
            return
        if requests.get("cpu", 0) and node_name not in self._cpu_moved:
            self._cpu_moved[node_name] = usage.free("cpu")
        used = usage.used
        for r, v in requests.items():
            left = used.get(r, 0) + sign * v
            if left:
                used[r] = left
            else:
                used.pop(r, None)

    def _sorted_cpu(self) -> None:
        """Bring `_free_cpu` up to date with the nodes whose free cpu moved."""
        moved = self._cpu_moved
        if not moved:
            return
        nodes = self.nodes
        for name, was in moved.items():
            usage = nodes.get(name)
            if usage is None:
                self._unsort_cpu(was, name)
            elif (now := usage.free("cpu")) != was:
                self._unsort_cpu(was, name)
                insort(self._free_cpu, (now, name))
        moved.clear()

    def _unsort_cpu(self, free: int, node_name: str) -> None:
        entries = self._free_cpu
        i = bisect_left(entries, (free, node_name))
        if i < len(entries) and entries[i] == (free, node_name):
            del entries[i]

    # ---- pods and claims that are not ours -------------------------------------------
    def add_foreign_pod(self, key: str, node: str, requests: Resources) -> None:
        """A pod some other scheduler bound: its requests count against the node."""
        self.remove_foreign_pod(key)
        self.foreign_pods[key] = (node, dict(requests))
        self._use(node, requests, +1)

    def remove_foreign_pod(self, key: str) -> None:
        entry = self.foreign_pods.pop(key, None)
        if entry is not None:
            self._use(entry[0], entry[1], -1)
            self._grow()

    def add_foreign_claim(self, key: str, devices: tuple[DeviceKey, ...]) -> None:
        """A claim allocated by someone else: its devices are never handed out."""
        self.remove_foreign_claim(key)
        self.foreign_claims[key] = devices
        self.inventory.allocate(devices, f"foreign:{key}")

    def remove_foreign_claim(self, key: str) -> None:
        devices = self.foreign_claims.pop(key, None)
        if devices is not None:
            self.inventory.release(devices, f"foreign:{key}")
            self._grow()

    # ---- DRA -------------------------------------------------------------------------
    def upsert_slice(self, rs: ResourceSlice) -> None:
        self.inventory.upsert_slice(rs)
        self._grow()

    def remove_slice(self, name: str) -> None:
        self.inventory.remove_slice(name)

    def upsert_device_class(self, dc: DeviceClass) -> None:
        self.inventory.upsert_class(dc)
        self._grow()

    def remove_device_class(self, name: str) -> None:
        self.inventory.remove_class(name)

    # ---- queues and namespaces -------------------------------------------------------
    def upsert_queue(self, queue: Queue) -> None:
        self.quota.upsert(queue)
        self._grow()

    def remove_queue(self, name: str) -> None:
        """Delete a queue (quota.py defines what that means for its gangs and subtree)."""
        self.quota.remove(name)
        self._grow()

    def set_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        self.namespaces[name] = dict(labels)
        self.namespace_generation += 1
        self._grow()

    def queue_blocker(self, gang: Gang) -> str | None:
        """Why `gang` may not use its queue at all (missing, inner, namespace not allowed)."""
        stamp = (self.quota.generation, self.namespace_generation)
        if self._blockers_stamp != stamp:
            self._blockers.clear()
            self._blockers_stamp = stamp
        key = (gang.queue, gang.namespace)
        if key not in self._blockers:
            self._blockers[key] = self._queue_blocker(gang)
        return self._blockers[key]

    def _queue_blocker(self, gang: Gang) -> str | None:
        blocker = self.quota.admission_blocker(gang.queue)
        if blocker is not None:
            return blocker
        queue = self.quota.get(gang.queue)
        assert queue is not None
        if queue.namespace_selector is not None and not queue.namespace_selector.matches(
            self.namespaces.get(gang.namespace, {})
        ):
            return (
                f"namespace {gang.namespace} is not allowed by "
                f"queue {gang.queue}'s namespaceSelector"
            )
        return None

    # ---- gangs -----------------------------------------------------------------------
    def add_gang(self, gang: Gang) -> None:
        """Add or replace a pending gang (an admitted one must be released first).

        A replaced gang keeps its waiting time and attained service.
        """
        if gang.uid in self.admitted:
            raise InvalidInput(
                f"gang {gang.namespace}/{gang.name}", "is admitted; release it first"
            )
        self._unqueue(gang.uid)
        for journal in self._journals:
            journal.changed.add(gang.uid)
        self.pending[gang.uid] = gang
        self.pending_since.setdefault(gang.uid, self.now)
        entry = (gang.order_key, gang.uid)
        self._pending_order.add(entry)
        by_queue = self._pending_by_queue.get(gang.queue)
        if by_queue is None:
            by_queue = self._pending_by_queue[gang.queue] = SortedList()
        by_queue.add(entry)

    def _unqueue(self, uid: str) -> Gang | None:
        gang = self.pending.pop(uid, None)
        if gang is not None:
            for journal in self._journals:
                journal.changed.add(uid)
            entry = (gang.order_key, uid)
            self._pending_order.discard(entry)
            per_queue = self._pending_by_queue[gang.queue]
            per_queue.discard(entry)
            if not per_queue:
                del self._pending_by_queue[gang.queue]
        return gang

    def remove_gang(self, uid: str) -> None:
        """Forget a gang for good (an admitted one is released first)."""
        self._unqueue(uid)
        if uid in self.admitted:
            self.release(uid)
        self.pending_since.pop(uid, None)
        self._service.pop(uid, None)

    def pending_in_order(self, queue: str | None = None) -> Iterator[Gang]:
        """Pending gangs (of one queue, or all) by priority, then age, then uid."""
        entries = self._pending_order if queue is None else self._pending_by_queue.get(queue)
        for _, uid in list(entries or ()):
            gang = self.pending.get(uid)
            if gang is not None:
                yield gang

    def pending_index(
        self, queue: str | None = None
    ) -> Sequence[tuple[tuple[int, float, str], str]]:
        """The live sorted (order_key, uid) index of one queue or all; read only (ordering
        policies walk it instead of building keys per gang)."""
        entries = self._pending_order if queue is None else self._pending_by_queue.get(queue)
        return entries if entries is not None else ()

    def pending_queues(self) -> list[str]:
        """Leaf queues with pending gangs, by name."""
        return sorted(self._pending_by_queue)

    def waiting(self, uid: str) -> float:
        """Seconds a pending gang has waited since it last became pending."""
        return max(0.0, self.now - self.pending_since.get(uid, self.now))

    def attained_service(self, uid: str) -> float:
        """Device-seconds (pod-seconds for gangs without devices) served so far, across
        runs: Tiresias' attained service."""
        total = sum(self._service.get(uid, ()))
        res = self.admitted.get(uid)
        if res is not None:
            total += self._run_service(res)
        return total

    def _run_service(self, res: Reservation) -> float:
        width = res.device_count() or len(res.pods)
        return width * max(0.0, self.now - res.admitted_at)

    # ---- reservations ----------------------------------------------------------------
    def apply_pod(self, gang_uid: str, pod: PodPlacement) -> None:
        self._use(pod.node, pod.requests, +1)
        inv = self.inventory
        for claim in pod.claims:
            owner = pod.claim_owner(gang_uid, claim.claim)
            for da in claim.devices:
                if da.shared:
                    inv.remember_shareable(da.device)
            inv.allocate_owned([(da.device, owner) for da in claim.devices])

    def release_pod(self, gang_uid: str, pod: PodPlacement) -> None:
        self._use(pod.node, pod.requests, -1)
        inv = self.inventory
        for claim in pod.claims:
            owner = pod.claim_owner(gang_uid, claim.claim)
            inv.release_owned([(da.device, owner) for da in claim.devices])

    def _hold_pods(self, gang_uid: str, pods: Sequence[PodPlacement], sign: int) -> None:
        """`apply_pod` (sign +1) or `release_pod` (-1) of every pod, in one pass: each
        node's usage once, the devices in one batch (a release refuses, changing
        nothing, devices not held as recorded). What the pods hold per node and which
        devices they name is worked out once per pods (a what-if probe releases and
        restores the same victims again and again)."""
        inv = self.inventory
        hold = self._holds.get(gang_uid)
        if hold is None or hold.pods is not pods:
            if len(self._holds) > 2 * len(self.admitted) + 1024:
                self._holds.clear()
            hold = self._holds[gang_uid] = _Hold.of(gang_uid, pods)
        if sign > 0:
            for key in hold.shared:
                inv.remember_shareable(key)
        batch = hold.batch
        if batch is None or batch.stamp != inv.batch_stamp():
            batch = hold.batch = None if hold.shared else inv.exclusive_batch(hold.held)
        if sign < 0 and (batch is None or not inv.release_batch(batch)):
            inv.release_owned(hold.held)
        for node, need in hold.per_node.items():
            self._use(node, need, sign)
        if sign > 0 and (batch is None or not inv.allocate_batch(batch)):
            inv.allocate_owned(hold.held)

    def admit(self, gang: Gang, reservation: Reservation) -> None:
        """Hold a reservation whose pods were applied with apply_pod; charges quota."""
        self.quota.charge(reservation.queue, reservation.charge)
        self.admitted[gang.uid] = reservation
        self.admitted_gangs[gang.uid] = gang
        self._unqueue(gang.uid)
        self.pending_since.pop(gang.uid, None)
        self.admission_generation += 1
        self.journal_change(gang, reservation)

    def restore(
        self, gang: Gang, reservation: Reservation, undo: bool = False, trusted: bool = False
    ) -> None:
        """Re-apply a recorded admission (start-up, or `undo` of a release with requeue).

        Refuses, changing nothing, one that no longer holds: a node gone or too full, a
        device held by someone else or twice in the record. Quota is charged as recorded
        even if limits shrank since: running work is not evicted by a config change.
        Undoing a release also takes back the service it credited and the waiting time
        it started. `trusted`: the caller released it itself and nothing has taken any of
        it since (a what-if probe putting a victim back), so nothing is checked.
        """
        if not trusted:
            self._check_restorable(gang, reservation)
        since = self.pending_since.get(gang.uid)
        self._hold_pods(gang.uid, reservation.pods, +1)
        self.admit(gang, reservation)
        if undo:
            runs = self._service.get(gang.uid)
            if runs:
                runs.pop()
        elif since is not None:
            self.pending_since[gang.uid] = since

    def _check_restorable(self, gang: Gang, reservation: Reservation) -> None:
        problems: list[str] = []
        per_node: dict[str, dict[str, int]] = {}
        seen: set[DeviceKey] = set()
        for pod in reservation.pods:
            if pod.node not in self.nodes:
                problems.append(f"pod {pod.pod_set}-{pod.index}: node {pod.node} does not exist")
            need = per_node.setdefault(pod.node, {})
            for r, v in pod.requests.items():
                need[r] = need.get(r, 0) + v
            for claim in pod.claims:
                for da in claim.devices:
                    dk = da.device
                    inv = self.inventory
                    shared = inv.is_shareable(dk) or (da.shared and dk not in inv.devices)
                    if not (shared or inv.is_free(dk)):
                        holders = sorted(inv.owners.get(dk, ()))
                        problems.append(f"device {'/'.join(dk)} is held by {holders}")
                    elif dk in seen and not shared:
                        problems.append(f"device {'/'.join(dk)} is recorded twice")
                    seen.add(dk)
        for name, need in sorted(per_node.items()):
            usage = self.nodes.get(name)
            if usage is not None and not usage.fits(need):
                problems.append(f"node {name} has no room left for the recorded pods")
        if problems:
            raise ReservationConflict(f"admission of gang {gang.uid}", "; ".join(problems))

    @contextlib.contextmanager
    def unjournaled(self) -> Iterator[None]:
        """Admissions and releases inside are not written to readers' journals: for
        what-if probes, which put back what they release before anyone reads the state
        again, or write what they keep released (`journal_change`). Readers would
        otherwise catch up on every gang a search released and restored."""
        was, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = was

    def journal_change(self, gang: Gang, reservation: Reservation) -> None:
        """Write the admission or release of `gang` (with `reservation`) to readers'
        journals, unless `unjournaled`: also a probe's release kept after it ends."""
        if self._admission_journals and not self._quiet:
            self._journal_admission((gang.uid, gang.queue, reservation.queue))

    def _journal_admission(self, change: AdmissionChange) -> None:
        limit = 4 * len(self.admitted) + JOURNAL_SLACK
        for ref in tuple(self._admission_journals):  # a journal let go drops its entry
            journal = ref()
            if journal is None:
                continue
            changed = journal.changed
            changed.add(change)
            if len(changed) > limit:  # never empty: readers look for changes there
                changed.clear()
                changed.add(change)
                journal.overflowed = True

    def release(self, uid: str, requeue: bool = False) -> Reservation:
        """Give back exactly what the gang held; optionally put it back in pending,
        crediting the run to its attained service."""
        reservation = self.admitted.pop(uid, None)
        if reservation is None:
            raise InvalidInput(f"gang {uid}", "holds no reservation")
        gang = self.admitted_gangs.pop(uid)
        self._hold_pods(uid, reservation.pods, -1)
        self.quota.uncharge(reservation.queue, reservation.charge)
        self.admission_generation += 1
        self.journal_change(gang, reservation)
        self._grow()
        if requeue:
            self.requeue(gang, reservation)
        return reservation

    def requeue(self, gang: Gang, reservation: Reservation) -> None:
        """What `release(requeue=True)` does beyond `release`, for a gang released
        without it: its run credited to its attained service, and back in pending."""
        self._service.setdefault(gang.uid, []).append(self._run_service(reservation))
        self.add_gang(gang)

    # ---- invariants ------------------------------------------------------------------
    def violations(self) -> list[str]:
        """Every broken invariant of design.md (1, 2, 4 and usage bookkeeping)."""
        out = self.inventory.double_allocations()
        expected: dict[str, dict[str, int]] = {n: {} for n in self.nodes}
        for node, req in self.foreign_pods.values():
            for r, v in req.items():
                if node in expected:
                    expected[node][r] = expected[node].get(r, 0) + v
        for res in self.admitted.values():
            for pod in res.pods:
                for r, v in pod.requests.items():
                    if pod.node in expected:
                        expected[pod.node][r] = expected[pod.node].get(r, 0) + v
        for name, usage in sorted(self.nodes.items()):
            clean = {r: v for r, v in expected[name].items() if v}
            if clean != usage.used:
                out.append(f"node {name}: usage {usage.used} != sum of holders {clean}")
            for r, v in usage.used.items():
                if v > usage.node.allocatable.get(r, 0):
                    out.append(f"node {name}: {r} used {v} > allocatable")
        out.extend(self.quota.violations())
        return out
