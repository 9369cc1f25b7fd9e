"""Foreign gangs in the caches: which pods form which gang, and the engine's view of each.

Every change to a gang's pods, claims, PodGroup or record re-judges that one gang
(`sync`): an admission record whose pods still live is restored (or kept), one whose pods
are all finished or gone is released without a write; a record marked released (the gang
was evicted) holds nothing and keeps the gang waiting until it is torn down and deleted;
otherwise the gang's unbound,
unfinished pods are pending once there are as many as its size says, and wait with a
reason ("waiting for pods: 3 of 8 exist") until then. Pods and claims of an admitted
foreign gang are ours; everything else bound or allocated stays usage by others.

The judgement of a gang costs the same whatever its size while it waits: each pod's part
in it (`_Facts`: its uid, whether it is finished or waiting, its size annotation, its
order, the claims it names and whether they are all there, the pod translated or why it
cannot be) is kept when the pod or one of those claims changes, and each gang keeps their
sums (`_Tally`: waiting pods in pod order and by key, the size annotations among them, the
waiting pods still missing a claim or not translatable, the translated ones by shape,
their creation times, unfinished pods by uid, and how many of them its record names, with
the record read once per version). A gang that can be admitted is assembled from its
pods' translations (a list of them per pod set, no pod translated again); only restoring
a record translates a gang's pods at once.

A gang left with no pod and no record, holding nothing (a foreign PyTorchJob whose pods
were deleted after it finished, say), is forgotten entirely (`_drop_gang`): a long-running
controller keeps bookkeeping only of gangs that exist (`bookkeeping` gives the sizes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog
from sortedcontainers import SortedList

from controller.engine.errors import InvalidInput
from controller.engine.state import ClusterState
from controller.kube import foreign as f
from controller.kube.foreign import Group, Members, Waiting
from controller.kube.record_size import RecordSizes
from controller.kube.resources import PODS
from controller.kube.rest import Obj

log = structlog.get_logger("phalanx.foreign")


@dataclass(frozen=True, slots=True)
class Changed:
    """Pods and claims (cache keys) whose ownership a sync changed: refresh their usage."""

    pods: set[str] = field(default_factory=set)
    claims: set[str] = field(default_factory=set)
    others: set[Group] = field(default_factory=set)
    """Gangs to judge again: they name a claim not allocated yet with this one, which
    began or ceased to be pending or admitted (so they may allocate it now, or not)."""


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a gang's judgement reads of one of its pods (kept from its last event)."""

    group: Group
    uid: str
    finished: bool
    waiting: bool
    """Neither finished nor bound: a pod the gang still has to place."""
    size: object
    """Its size annotation (label gangs)."""
    order: tuple[int, str]
    claims: frozenset[str]
    """Cache keys of the claims it names, directly or in its status."""
    named: frozenset[str]
    """Cache keys of the claims it names directly (`resourceClaimName`): such a claim has
    no Pod owner, may be named by pods of other gangs too, and its arrival can complete
    the gang."""
    unallocated: frozenset[str]
    """Cache keys of the claims it names directly that are not allocated (waiting pods
    only): its gang allocates them, unless a gang before it names them too."""
    problem: str | None
    """Why its claims cannot be translated yet (waiting pods only)."""
    part: f.Part | None
    """The pod translated (waiting pods whose claims are there)."""
    error: str | None
    """Why it cannot be translated (waiting pods whose claims are there)."""
    created: str


@dataclass(slots=True)
class _Tally:
    """One gang's sums over the facts of its pods, and its record read once per version."""

    keys: set[str] = field(default_factory=set)
    waiting: SortedList[tuple[tuple[int, str], str]] = field(default_factory=SortedList)
    """(pod order, key) of each waiting pod."""
    waiting_keys: SortedList[str] = field(default_factory=SortedList)
    sizes: Counter[object] = field(default_factory=Counter)
    """Size annotations of the waiting pods."""
    problems: SortedList[tuple[tuple[int, str], str]] = field(default_factory=SortedList)
    """(pod order, key) of each waiting pod whose claims are not all there."""
    errors: SortedList[tuple[tuple[int, str], str]] = field(default_factory=SortedList)
    """(pod order, key) of each waiting pod that cannot be translated."""
    shapes: dict[str, SortedList[tuple[tuple[int, str], str]]] = field(default_factory=dict)
    """(pod order, key) of the translated waiting pods, by shape."""
    created: SortedList[str] = field(default_factory=SortedList)
    """Creation timestamps of the waiting pods."""
    unallocated: Counter[str] = field(default_factory=Counter)
    """Claims (cache keys) the waiting pods name directly that are not allocated."""
    named: Counter[str] = field(default_factory=Counter)
    """Claims (cache keys) the waiting pods name directly: how many of them name each."""
    unfinished: Counter[str] = field(default_factory=Counter)
    """Pods not finished, by uid."""
    record: Obj | None = None
    written: Obj | None = None
    recorded: frozenset[str] = frozenset()
    live: int = 0
    """Unfinished pods whose uid the record names."""

    def add(self, key: str, facts: _Facts, sign: int) -> None:
        """Count a pod's facts in (sign 1) or out (-1)."""
        change = self.waiting.add if sign > 0 else self.waiting.remove
        if facts.waiting:
            change((facts.order, key))
            (self.waiting_keys.add if sign > 0 else self.waiting_keys.remove)(key)
            self.sizes[facts.size] += sign
            if not self.sizes[facts.size]:
                del self.sizes[facts.size]
            entry = (facts.order, key)
            (self.created.add if sign > 0 else self.created.remove)(facts.created)
            counts = ((self.unallocated, facts.unallocated), (self.named, facts.named))
            for counter, claims in counts:
                for claim in claims:
                    counter[claim] += sign
                    if not counter[claim]:
                        del counter[claim]
            if facts.problem is not None:
                (self.problems.add if sign > 0 else self.problems.remove)(entry)
            if facts.error is not None:
                (self.errors.add if sign > 0 else self.errors.remove)(entry)
            if facts.part is not None:
                shape = self.shapes.setdefault(facts.part.shape, SortedList())
                (shape.add if sign > 0 else shape.remove)(entry)
                if not shape:
                    del self.shapes[facts.part.shape]
        if not facts.finished:
            self.unfinished[facts.uid] += sign
            if not self.unfinished[facts.uid]:
                del self.unfinished[facts.uid]
            if facts.uid in self.recorded:
                self.live += sign


class ForeignGangs:
    def __init__(
        self,
        state: ClusterState,
        cache: Callable[[str], Mapping[str, Obj]],
        priority: Callable[[str | None, str], int],
        default_queue: str,
    ) -> None:
        self.state = state
        self.cache = cache
        self.priority = priority
        """PriorityClass name (or None), where -> value; raises InvalidInput."""
        self.default_queue = default_queue
        self.groups: dict[str, Group] = {}
        """Every foreign gang by engine uid."""
        self.members: dict[str, Members] = {}
        """The pending or admitted translation of each gang, by uid."""
        self.reasons: dict[str, str] = {}
        """Why a gang is not pending (waiting for pods, claims, or a problem), by uid."""
        self.admission_ids: dict[str, str] = {}
        self.held: set[str] = set()
        self._tallies: dict[Group, _Tally] = {}
        self._facts: dict[str, _Facts] = {}
        """Each pod of a gang, by cache key."""
        self._naming: dict[str, set[str]] = {}
        """Pods (cache keys) naming a claim, by the claim's cache key."""
        self._owned: dict[str, Members] = {}
        """The translation `_ours_pods` and `_ours_claims` were taken from, by uid."""
        self._named: dict[str, set[str]] = {}
        """Pods (cache keys) naming a claim directly (`_Facts.named`), by the claim's key."""
        self._deferred: set[Group] = set()
        self._ours_pods: dict[str, set[str]] = {}
        self._ours_claims: dict[str, set[str]] = {}
        self.record_sizes = RecordSizes()
        """How large each gang's record would be (a gang too large to record waits)."""
        self._ours: set[str] = set()
        """Every pod and claim key in `_ours_pods` and `_ours_claims` (one lookup per event)."""

    # ---- index --------------------------------------------------------------------------
    def index(self, pod: Obj, deleted: bool = False) -> Group | None:
        """Take a pod's change; the gang it is in now, if any."""
        return self.update_pod(pod, deleted)[1]

    def update_pod(self, pod: Obj, deleted: bool = False) -> tuple[Group | None, Group | None]:
        """Take a pod's change: (the gang it left, if its labels moved it, the gang it is
        in now), each None if there is none."""
        key = PODS.key(pod)
        group = f.group_of(pod)
        old = self._facts.pop(key, None)
        if old is not None:
            self._drop(key, old)
        left = old.group if old is not None and old.group != group else None
        if group is None:
            return left, None
        if not deleted:
            self.groups[group.uid] = group
            tally = self._tally(group)
            facts = self._facts_of(pod, group)
            self._facts[key] = facts
            tally.keys.add(key)
            tally.add(key, facts, 1)
            for claim in facts.claims:
                self._naming.setdefault(claim, set()).add(key)
            for claim in facts.named:
                self._named.setdefault(claim, set()).add(key)
        return left, group

    def claim_changed(self, key: str) -> set[Group]:
        """A claim (cache key) came, went or changed: the pods naming it see it again.
        The gangs of those pods (to judge again)."""
        pods, groups = self.cache("pods"), set()
        for pod_key in list(self._naming.get(key, ())):
            pod = pods.get(pod_key)
            group = None if pod is None else self.update_pod(pod)[1]
            if group is not None:
                groups.add(group)
        return groups

    def _facts_of(self, pod: Obj, group: Group) -> _Facts:
        finished = f.finished(pod)
        waiting = not finished and not (pod.get("spec") or {}).get("nodeName")
        problem = error = part = None
        named = frozenset(f.named_claim_keys(pod))
        unallocated: frozenset[str] = frozenset()
        if waiting:
            try:
                own = f.claims_of(pod, self.cache("resourceclaims"))
            except (InvalidInput, Waiting) as exc:
                problem = str(exc)
            else:
                shared = f.shared_claims(pod, own, None)
                namespace = group.namespace
                unallocated = frozenset(
                    f"{namespace}/{name}"
                    for _, name, claim in own
                    if f"{namespace}/{name}" in named and not f.allocated(claim)
                )
                try:
                    part = f.part(pod, own, shared)
                except InvalidInput as exc:
                    error = str(exc)
        return _Facts(
            group,
            _uid(pod),
            finished,
            waiting,
            f.size_annotation(pod),
            f.pod_order(pod),
            frozenset(f.claim_keys(pod)),
            named,
            unallocated,
            problem,
            part,
            error,
            str((pod.get("metadata") or {}).get("creationTimestamp") or ""),
        )

    def _drop(self, key: str, facts: _Facts) -> None:
        tally = self._tallies[facts.group]
        tally.add(key, facts, -1)
        tally.keys.discard(key)
        for index, claims in ((self._naming, facts.claims), (self._named, facts.named)):
            for claim in claims:
                naming = index.get(claim)
                if naming is not None:
                    naming.discard(key)
                    if not naming:
                        del index[claim]

    def is_named(self, key: str) -> bool:
        """Whether pods of gangs name this claim directly."""
        return key in self._named

    def sharing(self, pod: Obj) -> set[Group]:
        """The gangs whose pods name directly a claim this pod names directly."""
        return {g for key in f.named_claim_keys(pod) for g in self.groups_of_claim(key)}

    def groups_of_claim(self, key: str) -> set[Group]:
        """The gangs whose pods name this claim (by cache key) directly: a claim named by
        pods of several gangs is every one's."""
        return {self._facts[pod].group for pod in self._named.get(key, ())}

    def is_ours(self, plural: str, key: str) -> bool:
        """Whether a pod or claim belongs to an admitted foreign gang."""
        return f"{plural}:{key}" in self._ours

    def moot(self, plural: str, key: str, old: Obj | None, new: Obj, deleted: bool) -> bool:
        """Whether an update of a pod or claim (cache key `key`) leaves its gang's
        judgement, and so the state, as it was: an update of a pod or claim of an
        admitted gang's admission that neither finishes the pod nor moves it (or the
        claim) to another gang. The binding, the claims' finalizer and allocation, and
        the pods' status as they run are such updates: `_judge` of an admitted gang
        looks only at its record and at which recorded pods live, never at its claims."""
        if deleted or old is None or f"{plural}:{key}" not in self._ours:
            return False
        if plural != PODS.plural:
            # a claim pods name directly may be shared: its changes judge them again
            return _owners(old) == _owners(new) and key not in self._named
        return (
            _uid(old) == _uid(new)
            and f.finished(old) == f.finished(new)
            and f.group_of(old) == f.group_of(new)
        )

    def covered(self) -> tuple[set[str], set[str]]:
        """(pod uids, claim keys) the cached records name: restore those before counting
        them as usage by others (start-up)."""
        pods: set[str] = set()
        claims: set[str] = set()
        for obj in self.cache("configmaps").values():
            try:
                written = f.read_record(obj)
            except InvalidInput:
                continue
            namespace = (obj.get("metadata") or {}).get("namespace")
            pods |= f.recorded_uids(written)
            claims |= {f"{namespace}/{c}" for c in f.recorded_claims(written)}
        return pods, claims

    def all_groups(self) -> list[Group]:
        with_records = (f.group_of_record(o) for o in self.cache("configmaps").values())
        return sorted({*self._tallies, *(g for g in with_records if g is not None)})

    # ---- holding during a commit -----------------------------------------------------------
    def hold(self, uid: str) -> None:
        self.held.add(uid)

    def unhold(self, uid: str) -> Changed:
        self.held.discard(uid)
        group = self.groups.get(uid)
        if group is None or group not in self._deferred:
            return Changed()
        self._deferred.discard(group)
        return self.sync(group)

    # ---- judging one gang --------------------------------------------------------------------
    def sync(self, group: Group) -> Changed:
        """Restore, keep, release, queue or hold back one gang (see the module docstring)."""
        uid = group.uid
        self.groups[uid] = group
        if uid in self.held:
            self._deferred.add(group)
            return Changed()
        # `_own` and `_disown` replace these sets, never change them: the same set is no change
        pods, claims = self._ours_pods.get(uid), self._ours_claims.get(uid)
        tally = self._tallies.get(group)
        unallocated = set(tally.unallocated) if tally is not None else set()
        queued = self._queued(uid)
        self._judge(group)
        others: set[Group] = set()
        if queued != self._queued(uid):
            unallocated |= set(self._tally(group).unallocated)
            others = {g for c in unallocated for g in self.groups_of_claim(c)} - {group}
        changed = Changed(
            _changed(pods, self._ours_pods.get(uid)),
            _changed(claims, self._ours_claims.get(uid)),
            others,
        )
        if self._gone(group):
            self._drop_gang(group)
        return changed

    def _queued(self, uid: str) -> bool:
        return uid in self.state.pending or uid in self.state.admitted

    def _gone(self, group: Group) -> bool:
        """Whether nothing is left of a gang: no pod, no record, nothing held or reserved
        (a foreign PyTorchJob whose pods were deleted after it finished, say)."""
        tally = self._tallies.get(group)
        return (
            (tally is None or not tally.keys)
            and f"{group.namespace}/{group.record_name}" not in self.cache("configmaps")
            and group.uid not in self.held
            and group.uid not in self.state.admitted
            and group.uid not in self.state.pending
        )

    def _drop_gang(self, group: Group) -> None:
        """Forget every piece of bookkeeping of a gone gang (a pod or record of the same
        name later starts it afresh)."""
        self._forget(group.uid)
        self.record_sizes.forget(group.uid)
        self._tallies.pop(group, None)
        self._deferred.discard(group)
        if self.groups.get(group.uid) == group:
            del self.groups[group.uid]

    def bookkeeping(self) -> dict[str, int]:
        """The size of every per-gang and per-pod structure (all 0 once no gang is left)."""
        return {
            "groups": len(self.groups),
            "members": len(self.members),
            "reasons": len(self.reasons),
            "admission_ids": len(self.admission_ids),
            "held": len(self.held),
            "tallies": len(self._tallies),
            "facts": len(self._facts),
            "naming": len(self._naming),
            "named": len(self._named),
            "owned": len(self._owned),
            "deferred": len(self._deferred),
            "ours_pods": len(self._ours_pods),
            "ours_claims": len(self._ours_claims),
            "ours": len(self._ours),
            "record_sizes": len(self.record_sizes),
        }

    def _pods(self, keys: list[str]) -> list[Obj]:
        pods = self.cache("pods")
        return [pods[k] for k in keys if k in pods]

    def _tally(self, group: Group) -> _Tally:
        tally = self._tallies.get(group)
        if tally is None:
            tally = self._tallies[group] = _Tally()
        return tally

    def record(self, group: Group) -> tuple[Obj | None, Obj | None]:
        """The gang's record ConfigMap and the admission record it holds (None if it is
        unreadable), read again only when it changed (kept only for a gang it knows)."""
        return self._record(group, self._tallies.get(group) or _Tally())

    def _written(self, group: Group, tally: _Tally) -> Obj | None:
        return self._record(group, tally)[1]

    def _record(self, group: Group, tally: _Tally) -> tuple[Obj | None, Obj | None]:
        """(ConfigMap, record) of a gang; when the ConfigMap changed, the record is read
        again and the gang's live pods counted again."""
        obj = self.cache("configmaps").get(f"{group.namespace}/{group.record_name}")
        if obj is not tally.record:
            tally.record = obj
            tally.written = None if obj is None else _read(group, obj)
            tally.recorded = frozenset(f.recorded_uids(tally.written) if tally.written else ())
            tally.live = sum(tally.unfinished[u] for u in tally.recorded if u in tally.unfinished)
        return tally.record, tally.written

    def record_object(self, group: Group) -> Obj | None:
        return self.record(group)[0]

    def pod_group(self, group: Group) -> Obj | None:
        if group.kind != f.POD_GROUP:
            return None
        return self.cache("podgroups").get(f"{group.namespace}/{group.name}")

    def _judge(self, group: Group) -> None:
        uid = group.uid
        tally = self._tally(group)
        written = self._written(group, tally)
        released = None if written is None else f.released(written)
        if released is not None:
            if uid in self.state.admitted:
                self.state.release(uid)
                log.info("foreign gang released", gang=uid, evicted=True)
            self._forget(uid)
            self.reasons[uid] = (
                str(released.get("message"))
                if released.get("reason") == f.BROKEN
                else "waiting for the pods evicted from its last admission to stop"
            )
            return
        admission = str(written["admissionId"]) if written and tally.live else None
        if uid in self.state.admitted:
            if admission is not None and self.admission_ids.get(uid, admission) == admission:
                self._own(uid, admission)
                return
            self.state.release(uid)
            self._disown(uid)
            log.info("foreign gang released", gang=uid)
        elif admission is not None and written is not None:
            recorded = [k for k in sorted(tally.keys) if self._facts[k].uid in tally.recorded]
            try:
                pods = self._pods(recorded)
                claims = f.recorded_claims(written)
                restored = self._translate(group, pods, *self._head(group, pods), claims)
                self.state.restore(restored.gang, f.restore(restored, written, self.state.now))
            except (InvalidInput, Waiting) as exc:
                log.warning("gang record does not hold", gang=uid, problem=str(exc))
            else:
                self.members[uid] = restored
                self._own(uid, admission)
                return
        if not tally.waiting:
            self._forget(uid)
            return
        found: Members | None = None
        try:
            first = self._pods(tally.waiting_keys[:1])[0]
            size = f.size_of(group, tally.sizes.keys(), first, self.pod_group(group))
            if len(tally.waiting) < size:
                raise Waiting(f"waiting for pods: {len(tally.waiting)} of {size} exist")
            head = self._head(group, self._pods([tally.waiting[0][1]]))
            # the first pod (in pod order) missing a claim, else the first that cannot be
            # translated, as `f.members` would find them
            problem = self._facts[tally.problems[0][1]].problem if tally.problems else None
            if problem is None and tally.errors:
                problem = self._facts[tally.errors[0][1]].error
            if problem is None:
                problem = self._crowded(group, tally)
            if problem is None:
                problem = self._allocated_first(group, tally)
            if problem is None:
                found = self._assemble(group, tally, *head)
                problem = self.record_sizes.too_large(found, self.pod_group(group), self.state)
                if problem is not None:
                    found = None
        except (InvalidInput, Waiting) as exc:
            problem = str(exc)
        if found is None:
            self._forget(uid)
            self.reasons[uid] = str(problem)
            return
        self.reasons.pop(uid, None)
        self.members[uid] = found
        self.state.add_gang(found.gang)

    def _crowded(self, group: Group, tally: _Tally) -> str | None:
        """Why the gang waits for room in a claim's `reservedFor` (None if it need not):
        its waiting pods that name a claim directly join its reservedFor when bound, all
        of them or none, and it lists at most `RESERVED_FOR_MAX` consumers. Judged for the
        gang, not pod by pod (a gang that would overfill it is not admitted in part), and
        after the gangs before it: the pods of pending or admitted gangs that will join
        it count as there already (two gangs of one cycle never overfill it together)."""
        claims = self.cache("resourceclaims")
        for key in sorted(tally.named):
            reserved = ((claims.get(key) or {}).get("status") or {}).get("reservedFor") or ()
            there = {str(c.get("uid")) for c in reserved}
            mine = theirs = 0
            for pod in self._named.get(key, ()):
                facts = self._facts[pod]
                if not facts.waiting or facts.uid in there:
                    continue
                if facts.group == group:
                    mine += 1
                elif self._queued(facts.group.uid):
                    theirs += 1
            total = len(there) + theirs + mine
            if total <= f.RESERVED_FOR_MAX:
                continue
            before = f" ({theirs} more of gangs before it)" if theirs else ""
            why = (
                f"ResourceClaim {key.partition('/')[2]} is reserved for {len(there)} pods"
                f"{before} and {mine} pods of this gang would join them: {total}, over the "
                f"{f.RESERVED_FOR_MAX} its reservedFor may hold"
            )
            if mine > f.RESERVED_FOR_MAX:
                return f"{why}; the gang can never share it as it is"
            return f"{why}; waiting for {total - f.RESERVED_FOR_MAX} of them to finish"
        return None

    def _allocated_first(self, group: Group, tally: _Tally) -> str | None:
        """Why the gang waits for another to allocate a claim both name (None if it does
        not): of the gangs naming a claim not allocated yet, the first to be pending (or
        admitted) allocates it, the others wait and then share its allocation (so it is
        never allocated twice, by two gangs of one cycle). A gang that ceases to be
        pending has the others judged again (`Changed.others`)."""
        for claim in sorted(tally.unallocated):
            for other in sorted(self.groups_of_claim(claim) - {group}):
                if self._queued(other.uid):
                    name = claim.partition("/")[2]
                    return f"waiting for ResourceClaim {name} to be allocated for gang {other.uid}"
        return None

    def _head(self, group: Group, pods: list[Obj]) -> tuple[str, int]:
        """The gang's queue and priority, from its PodGroup and its first pod."""
        first = min(pods, key=f.pod_order)
        pod_group = self.pod_group(group)
        labels = {
            **(((pod_group or {}).get("metadata") or {}).get("labels") or {}),
            **((first.get("metadata") or {}).get("labels") or {}),
        }
        where = f"Pod {group.namespace}/{(first.get('metadata') or {}).get('name')}"
        priority = self.priority(
            (first.get("spec") or {}).get("priorityClassName"), f"{where}: spec.priorityClassName"
        )
        return str(labels.get(f.QUEUE_LABEL) or self.default_queue), priority

    def _assemble(self, group: Group, tally: _Tally, queue: str, priority: int) -> Members:
        """The gang of a tally's waiting pods, all translated already (`f.members` of them)."""
        sets = sorted(tally.shapes.values(), key=lambda entries: entries[0])
        parts = [tuple(self._part(key) for _, key in entries) for entries in sets]
        return f.assemble(group, parts, tally.created[0], queue, priority)

    def _part(self, key: str) -> f.Part:
        part = self._facts[key].part
        assert part is not None
        return part

    def _translate(
        self, group: Group, pods: list[Obj], queue: str, priority: int, recorded: set[str]
    ) -> Members:
        claims = self.cache("resourceclaims")
        return f.members(group, pods, claims, queue=queue, priority=priority, recorded=recorded)

    def _own(self, uid: str, admission: str) -> None:
        self.reasons.pop(uid, None)
        found = self.members[uid]
        if self.admission_ids.get(uid) == admission and self._owned.get(uid) is found:
            return
        self.admission_ids[uid] = admission
        namespace = found.group.namespace
        self._disown(uid)
        self.admission_ids[uid] = admission
        self._ours_pods[uid] = {PODS.key(p) for p in found.pods.values()}
        self._ours_claims[uid] = {f"{namespace}/{c}" for c in found.claims.values()}
        self._ours |= {f"pods:{k}" for k in self._ours_pods[uid]}
        self._ours |= {f"resourceclaims:{k}" for k in self._ours_claims[uid]}
        self._owned[uid] = found

    def _disown(self, uid: str) -> None:
        self.admission_ids.pop(uid, None)
        self._owned.pop(uid, None)
        self._ours -= {f"pods:{k}" for k in self._ours_pods.pop(uid, ())}
        self._ours -= {f"resourceclaims:{k}" for k in self._ours_claims.pop(uid, ())}

    def _forget(self, uid: str) -> None:
        self.state.remove_gang(uid)
        self.members.pop(uid, None)
        self.reasons.pop(uid, None)
        self._disown(uid)


def _read(group: Group, obj: Obj) -> Obj | None:
    try:
        return f.read_record(obj)
    except InvalidInput as exc:
        log.warning("unreadable gang record", gang=group.uid, problem=str(exc))
        return None


def _changed(before: set[str] | None, after: set[str] | None) -> set[str]:
    return set() if before is after else (before or set()) ^ (after or set())


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid"))


def _owners(obj: Obj) -> object:
    return (obj.get("metadata") or {}).get("ownerReferences")
