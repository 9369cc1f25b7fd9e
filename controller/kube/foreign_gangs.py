"""Foreign gangs in the caches: which pods form which gang, and the engine's view of each.

Every change to a gang's pods, claims, PodGroup or record re-judges that one gang
(`sync`): an admission record whose pods still live is restored (or kept), one whose pods
are all finished or gone is released without a write; a record marked released (the gang
was evicted) holds nothing and keeps the gang waiting until it is torn down and deleted;
otherwise the gang's unbound,
unfinished pods are pending once there are as many as its size says, and wait with a
reason ("waiting for pods: 3 of 8 exist") until then. Pods and claims of an admitted
foreign gang are ours; everything else bound or allocated stays usage by others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from controller.engine.errors import InvalidInput
from controller.engine.state import ClusterState
from controller.kube import foreign as f
from controller.kube.foreign import Group, Members, Waiting
from controller.kube.resources import PODS
from controller.kube.rest import Obj

log = structlog.get_logger("phalanx.foreign")


@dataclass(frozen=True, slots=True)
class Changed:
    """Pods and claims (cache keys) whose ownership a sync changed: refresh their usage."""

    pods: set[str] = field(default_factory=set)
    claims: set[str] = field(default_factory=set)


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
        self._pods_of: dict[Group, set[str]] = {}
        self._claim_groups: dict[str, Group] = {}
        """ResourceClaims named by a gang's pods (`resourceClaimName`), by cache key: such a
        claim has no Pod owner, yet its arrival can complete the gang."""
        self._deferred: set[Group] = set()
        self._ours_pods: dict[str, set[str]] = {}
        self._ours_claims: dict[str, set[str]] = {}
        self._ours: set[str] = set()
        """Every pod and claim key in `_ours_pods` and `_ours_claims` (one lookup per event)."""

    # ---- index --------------------------------------------------------------------------
    def index(self, pod: Obj, deleted: bool = False) -> Group | None:
        group = f.group_of(pod)
        if group is None:
            return None
        self.groups[group.uid] = group
        keys = self._pods_of.setdefault(group, set())
        if deleted:
            keys.discard(PODS.key(pod))
        else:
            keys.add(PODS.key(pod))
        for ref in (pod.get("spec") or {}).get("resourceClaims") or ():
            if ref.get("resourceClaimName"):
                claim = f"{group.namespace}/{ref['resourceClaimName']}"
                if deleted:
                    self._claim_groups.pop(claim, None)
                else:
                    self._claim_groups[claim] = group
        return group

    def group_of_claim(self, key: str) -> Group | None:
        """The gang whose pod names this claim (by cache key), if any."""
        return self._claim_groups.get(key)

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
            return _owners(old) == _owners(new)
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
        return sorted({*self._pods_of, *(g for g in with_records if g is not None)})

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
        before = (set(self._ours_pods.get(uid, ())), set(self._ours_claims.get(uid, ())))
        self._judge(group)
        after = (self._ours_pods.get(uid, set()), self._ours_claims.get(uid, set()))
        return Changed(before[0] ^ after[0], before[1] ^ after[1])

    def _pods(self, group: Group) -> list[Obj]:
        pods = self.cache("pods")
        return [pods[k] for k in sorted(self._pods_of.get(group, ())) if k in pods]

    def _record(self, group: Group) -> tuple[Obj | None, Obj | None]:
        obj = self.cache("configmaps").get(f"{group.namespace}/{group.record_name}")
        if obj is None:
            return None, None
        try:
            return obj, f.read_record(obj)
        except InvalidInput as exc:
            log.warning("unreadable gang record", gang=group.uid, problem=str(exc))
            return obj, None

    def record_object(self, group: Group) -> Obj | None:
        return self._record(group)[0]

    def pod_group(self, group: Group) -> Obj | None:
        if group.kind != f.POD_GROUP:
            return None
        return self.cache("podgroups").get(f"{group.namespace}/{group.name}")

    def _judge(self, group: Group) -> None:
        uid = group.uid
        pods = self._pods(group)
        _, written = self._record(group)
        if written is not None and f.released(written) is not None:
            if uid in self.state.admitted:
                self.state.release(uid)
                log.info("foreign gang released", gang=uid, evicted=True)
            self._forget(uid)
            self.reasons[uid] = "waiting for the pods evicted from its last admission to stop"
            return
        recorded = f.recorded_uids(written) if written else set()
        live = [p for p in pods if _uid(p) in recorded and not f.finished(p)]
        admission = str(written["admissionId"]) if written and live else None
        if uid in self.state.admitted:
            if admission is not None and self.admission_ids.get(uid, admission) == admission:
                self._own(uid, admission)
                return
            self.state.release(uid)
            self._disown(uid)
            log.info("foreign gang released", gang=uid)
        elif admission is not None and written is not None:
            try:
                found = self._translate(group, [p for p in pods if _uid(p) in recorded])
                self.state.restore(found.gang, f.restore(found, written, self.state.now))
            except (InvalidInput, Waiting) as exc:
                log.warning("gang record does not hold", gang=uid, problem=str(exc))
            else:
                self.members[uid] = found
                self._own(uid, admission)
                return
        waiting = [
            p for p in pods if not f.finished(p) and not (p.get("spec") or {}).get("nodeName")
        ]
        if not waiting:
            self._forget(uid)
            return
        try:
            size = f.gang_size(group, waiting, self.pod_group(group))
            if len(waiting) < size:
                raise Waiting(f"waiting for pods: {len(waiting)} of {size} exist")
            found = self._translate(group, waiting)
        except (InvalidInput, Waiting) as exc:
            self._forget(uid)
            self.reasons[uid] = str(exc)
            return
        self.reasons.pop(uid, None)
        self.members[uid] = found
        self.state.add_gang(found.gang)

    def _translate(self, group: Group, pods: list[Obj]) -> Members:
        first = sorted(pods, key=f.pod_order)[0]
        pod_group = self.pod_group(group)
        labels = {
            **(((pod_group or {}).get("metadata") or {}).get("labels") or {}),
            **((first.get("metadata") or {}).get("labels") or {}),
        }
        where = f"Pod {group.namespace}/{(first.get('metadata') or {}).get('name')}"
        priority = self.priority(
            (first.get("spec") or {}).get("priorityClassName"), f"{where}: spec.priorityClassName"
        )
        return f.members(
            group,
            pods,
            self.cache("resourceclaims"),
            queue=str(labels.get(f.QUEUE_LABEL) or self.default_queue),
            priority=priority,
        )

    def _own(self, uid: str, admission: str) -> None:
        self.admission_ids[uid] = admission
        self.reasons.pop(uid, None)
        found = self.members[uid]
        namespace = found.group.namespace
        self._disown(uid)
        self.admission_ids[uid] = admission
        self._ours_pods[uid] = {PODS.key(p) for p in found.pods.values()}
        self._ours_claims[uid] = {f"{namespace}/{c}" for c in found.claims.values()}
        self._ours |= {f"pods:{k}" for k in self._ours_pods[uid]}
        self._ours |= {f"resourceclaims:{k}" for k in self._ours_claims[uid]}

    def _disown(self, uid: str) -> None:
        self.admission_ids.pop(uid, None)
        self._ours -= {f"pods:{k}" for k in self._ours_pods.pop(uid, ())}
        self._ours -= {f"resourceclaims:{k}" for k in self._ours_claims.pop(uid, ())}

    def _forget(self, uid: str) -> None:
        self.state.remove_gang(uid)
        self.members.pop(uid, None)
        self.reasons.pop(uid, None)
        self._disown(uid)


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid"))


def _owners(obj: Obj) -> object:
    return (obj.get("metadata") or {}).get("ownerReferences")
