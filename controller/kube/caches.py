"""Every informer the controller needs, feeding one ClusterState through translate.py.

Nothing reaches the engine before every cache has synced once: the first full state is
then applied in one step, in an order that makes restoring admissions trustworthy:

1. cluster shape: namespaces, nodes, device classes, slices, priority classes, queues;
2. usage by others: bound pods and allocated claims that no admission record covers;
3. GangJobs: a recorded admission is restored (and refused if it no longer holds: a
   node gone or full, a device gone or held by someone else), others wait as pending;
4. pods and claims of recorded gangs: ours if their gang's admission was restored,
   otherwise usage by others (they still hold what they hold until rolled back).

After that each watch event updates the state incrementally. "Ours" means controlled by
a GangJob whose reservation the state holds and made for that very admission (the
`phalanx.dev/admission-id` annotation matches the record); everything else bound or
allocated, including what an earlier admission of the same job left behind, is foreign
usage (`add_foreign_pod`, `add_foreign_claim`), so nothing is handed out twice. One
exception: what a released admission of a GangJob still holds while it is let go (its
pods being stopped, with a deletion or the DisruptionTarget condition; its claims once
every pod they are reserved for is done or being stopped) is ours to take down, and will
be: it is free for decisions at once (`releasing_pods`, `releasing`), as the simulator
frees a finished or killed job's, and the gang given it waits for it to be let go before
binding and allocating (drain.py), as a preemptor waits for its victims.

The decision loop writes admission records while the engine's ledger holds them open;
`hold` defers the GangJob events of those gangs until the outcome is known, and `assume`
takes a write's answer before its watch event, so the state never releases a
reservation the loop is still committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from controller.engine.errors import InvalidInput
from controller.engine.model import DeviceKey
from controller.engine.state import ClusterState
from controller.kube import foreign, translate
from controller.kube import resources as r
from controller.kube.foreign import RECORD_SELECTOR, Group, group_of, group_of_record
from controller.kube.foreign_gangs import Changed, ForeignGangs
from controller.kube.informer import DELETED, Handler, Informer
from controller.kube.reconcile import pod_done, requeue_at
from controller.kube.release import DISRUPTION_TARGET
from controller.kube.resources import Resource
from controller.kube.rest import KubeError, Obj, Rest

log = structlog.get_logger("phalanx.caches")

OPTIONAL = (r.PRIORITY_CLASSES, r.POD_GROUPS)
"""Watched only where discovery finds them."""


async def served(rest: Rest, resource: Resource) -> bool:
    """Whether the API server serves `resource` (discovery of its group/version)."""
    try:
        found = await rest.get(f"/apis/{resource.group_version}")
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return any(res.get("name") == resource.plural for res in found.get("resources") or ())


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


class ClusterCaches:
    """List+watch caches of the cluster, and the ClusterState they keep current."""

    def __init__(
        self,
        rest: Rest,
        state: ClusterState,
        *,
        optional: tuple[Resource, ...] = (),
        default_queue: str = "default",
        clock: Callable[[], float] = time.time,
        shape_only: bool = False,
        **informer_options: Any,
    ) -> None:
        self.state = state
        self.clock = clock
        """Wall-clock seconds: whether a job's requeue backoff (`requeueAt`) is over."""
        self.shape_only = shape_only
        """Only the cluster's shape (namespaces, nodes, DRA classes and slices, queues,
        claim templates, priority classes): no usage, no gangs. What the admission
        webhook reads when it runs on its own."""
        self.ready = anyio.Event()
        """Set once every cache has synced and the state was built from them."""
        self.problems: dict[str, str] = {}
        """Objects the engine cannot take, by `Kind key`: one line saying what is wrong."""
        self.unrestorable: dict[str, str] = {}
        """GangJobs (by uid) whose recorded admission no longer holds: roll them back."""
        self.priorities: dict[str, int] = {}
        self.default_priority = 0
        self.admission_ids: dict[str, str] = {}
        """The recorded admission id of every admitted GangJob, by uid."""
        self.releasing: dict[str, tuple[DeviceKey, ...]] = {}
        """Claims (by key) of released admissions being let go, still allocated: left out
        of the state (a decision may hand their devices out), but allocating those devices
        waits until they are deallocated (drain.py)."""
        self.releasing_pods: dict[str, tuple[str, dict[str, int]]] = {}
        """Pods (by key: node, requests) of released admissions being stopped: likewise,
        binding to their nodes waits until they are gone or done."""
        self._pods_of: dict[str, set[str]] = {}
        self._claims_of: dict[str, set[str]] = {}
        self._held: set[str] = set()
        self._deferred: dict[str, tuple[str, Obj]] = {}
        self._gang_keys: dict[str, str] = {}
        shape = [
            r.NAMESPACES,
            r.NODES,
            r.DEVICE_CLASSES,
            r.RESOURCE_SLICES,
            r.QUEUES,
            r.CLAIM_TEMPLATES,
        ]
        usage = [] if shape_only else [r.GANG_JOBS, r.RESOURCE_CLAIMS, r.PODS]
        optional = tuple(o for o in optional if not shape_only or o is r.PRIORITY_CLASSES)
        watched = [*shape, *usage, *optional]
        self.informers = {res.plural: Informer(rest, res, **informer_options) for res in watched}
        if not shape_only:
            self.informers["configmaps"] = Informer(
                rest, r.CONFIG_MAPS, label_selector=RECORD_SELECTOR, **informer_options
            )
        self.foreign = ForeignGangs(
            state,
            lambda plural: self.informers[plural].cache if plural in self.informers else {},
            self._priority,
            default_queue,
        )
        """Gangs of pods from other controllers (foreign.py)."""
        self._handlers: dict[str, Handler] = {
            "namespaces": self._on_namespace,
            "nodes": self._mirror("Node", translate.node, state.upsert_node, state.remove_node),
            "deviceclasses": self._mirror(
                "DeviceClass",
                translate.device_class,
                state.upsert_device_class,
                state.remove_device_class,
            ),
            "resourceslices": self._mirror(
                "ResourceSlice", translate.resource_slice, state.upsert_slice, state.remove_slice
            ),
            "queues": self._mirror(
                "Queue", translate.queue, state.upsert_queue, state.remove_queue
            ),
            "resourceclaimtemplates": self._on_template,
            "gangjobs": self._on_gang_job,
            "resourceclaims": self._on_claim,
            "pods": self._on_pod,
            "configmaps": self._on_record,
        }
        if r.POD_GROUPS in optional:
            self._handlers["podgroups"] = self._on_pod_group
        if r.PRIORITY_CLASSES in optional:
            self._handlers["priorityclasses"] = self._on_priority_class
        for plural, handler in self._handlers.items():
            if plural in self.informers:
                self.informers[plural].add_handler(self._live(handler))

    @classmethod
    async def discover(cls, rest: Rest, state: ClusterState, **options: Any) -> ClusterCaches:
        """Caches for what this server serves: PodGroups only where the 1.36 gang API is
        on; PriorityClasses everywhere but in the API emulator, which lacks them."""
        optional = tuple([res for res in OPTIONAL if await served(rest, res)])
        return cls(rest, state, optional=optional, **options)

    async def run(self) -> None:
        """Run every informer; build the state once all have synced; run until cancelled."""
        async with anyio.create_task_group() as tasks:
            for informer in self.informers.values():
                tasks.start_soon(informer.run)
            for informer in self.informers.values():
                await informer.synced.wait()
            self._build()
            self.ready.set()
            log.info("caches synced", **{k: len(i.cache) for k, i in self.informers.items()})

    def cache(self, plural: str) -> dict[str, Obj]:
        return self.informers[plural].cache

    def gang_job(self, uid: str) -> Obj | None:
        """The cached GangJob with this uid."""
        key = self._gang_keys.get(uid)
        return None if key is None else self.cache("gangjobs").get(key)

    def assume(self, resource: Resource, obj: Obj) -> None:
        """Take the answer of our own write now (see `Informer.assume`)."""
        self.informers[resource.plural].assume(obj)

    def hold(self, uids: list[str]) -> None:
        """Defer GangJob events of these gangs (their admission is being committed)."""
        self._held.update(uids)
        for uid in uids:
            self.foreign.hold(uid)

    def unhold(self, uid: str) -> None:
        """Stop deferring; the last deferred event, if any, is applied now."""
        self._held.discard(uid)
        self._refresh(self.foreign.unhold(uid))
        deferred = self._deferred.pop(uid, None)
        if deferred is not None:
            kind, obj = deferred
            self._on_gang_job(kind, None, obj)

    def unpark(self, uid: str) -> None:
        """The backoff is over (`backing_off` says so now): the gang is pending again
        (unless it moved on meanwhile)."""
        job = self.gang_job(uid)
        if job is not None and uid not in self.state.admitted:
            self._sync_gang(job)

    def backing_off(self, job: Obj) -> bool:
        """Whether a job released for not being ready in time is still in its requeue
        backoff (`status.requeueState.requeueAt`, so a new leader keeps it too)."""
        try:
            at = requeue_at(job)
        except ValueError:
            return False
        return at is not None and at > self.clock()

    def owned(self, uid: str) -> tuple[list[Obj], list[Obj]]:
        """The cached pods and claims a GangJob controls."""
        pods, claims = self.cache("pods"), self.cache("resourceclaims")
        return (
            [pods[k] for k in sorted(self._pods_of.get(uid, ())) if k in pods],
            [claims[k] for k in sorted(self._claims_of.get(uid, ())) if k in claims],
        )

    def ours(self, obj: Obj) -> bool:
        """Whether a pod or claim belongs to the admission its GangJob holds now."""
        owner = translate.owner_gang(obj)
        return (
            owner in self.state.admitted
            and owner in self.admission_ids
            and translate.admission_of(obj) == self.admission_ids[owner]
        )

    def foreign_groups(self, plural: str, obj: Obj) -> set[Group]:
        """The foreign gangs a pod belongs to (one at most), or a claim: through its pod,
        or as a claim that pods of gangs name (which may complete them when it arrives;
        a claim named by pods of several gangs is each one's)."""
        if plural != "resourceclaims":
            group = group_of(obj)
            return set() if group is None else {group}
        pod = self.pod_of_claim(obj)
        found = None if pod is None else group_of(pod)
        named = self.foreign.groups_of_claim(r.RESOURCE_CLAIMS.key(obj))
        return named | {found} if found is not None else named

    def bookkeeping(self) -> dict[str, int]:
        """The size of every per-gang and per-object structure beside the informers' caches
        and the state (all 0 once nothing is left), the foreign gangs' with them."""
        return {
            "problems": len(self.problems),
            "unrestorable": len(self.unrestorable),
            "admission_ids": len(self.admission_ids),
            "releasing": len(self.releasing),
            "releasing_pods": len(self.releasing_pods),
            "pods_of": len(self._pods_of),
            "claims_of": len(self._claims_of),
            "held": len(self._held),
            "deferred": len(self._deferred),
            "gang_keys": len(self._gang_keys),
            **{f"foreign.{k}": v for k, v in self.foreign.bookkeeping().items()},
        }

    def moves_engine(self, plural: str, kind: str, old: Obj | None, new: Obj) -> bool:
        """Whether an event (already taken into the state) can change what a cycle decides.

        Not: the pods and claims of a gang's current admission (the engine counts the
        admission, not them; for a foreign gang, as long as its pods neither finish nor
        leave it: `ForeignGangs.moot`), other pods and claims whose usage stays the same (a status
        update of a running pod, the deletion of a finished one), a Queue status write, a
        GangJob status write that keeps its spec, record and whether it is done, and the
        record of an admission being committed (the engine made it). When in doubt: yes.
        """
        if plural in ("pods", "resourceclaims"):
            if self.ours(new) and (old is None or self.ours(old)):
                return False
            key = (r.PODS if plural == "pods" else r.RESOURCE_CLAIMS).key(new)
            if self.foreign.moot(plural, key, old, new, kind == DELETED):
                return False
            if any(self.foreign_groups(plural, o) for o in (old, new) if o):
                return True
            if plural == "pods" and self._lets_claims_go(kind, old, new):
                return True
            usage = translate.pod_usage if plural == "pods" else translate.claim_devices
            try:
                before = None if old is None or not self._counted(plural, old) else usage(old)
                after = None if kind == DELETED or not self._counted(plural, new) else usage(new)
            except InvalidInput:
                return True
            return bool(before or after) and before != after
        if kind == DELETED or old is None or plural not in ("queues", "gangjobs"):
            return True
        old_meta, new_meta = _meta(old), _meta(new)
        if any(old_meta.get(k) != new_meta.get(k) for k in ("generation", "deletionTimestamp")):
            return True
        if plural == "queues":
            return False
        old_status, new_status = old.get("status") or {}, new.get("status") or {}
        old_id = (old_status.get("admission") or {}).get("admissionId")
        new_id = (new_status.get("admission") or {}).get("admissionId")
        if old_id != new_id:
            return not (new_id and str(new_meta.get("uid")) in self._held)
        done = ("Succeeded", "Failed")
        return old_status.get("phase") != new_status.get("phase") and (
            old_status.get("phase") in done or new_status.get("phase") in done
        )

    # ---- the first full state ---------------------------------------------------------
    def _build(self) -> None:
        for plural in ("namespaces", "nodes", "deviceclasses", "resourceslices"):
            handler = self._handlers[plural]
            for obj in list(self.cache(plural).values()):
                handler("ADDED", None, obj)
        classes = self.informers.get("priorityclasses")
        for obj in classes.cache.values() if classes is not None else ():
            self._take_priority_class(obj, deleted=False)
        for obj in self.cache("queues").values():
            self._handlers["queues"]("ADDED", None, obj)
        if self.shape_only:
            return
        recorded = {
            str(_meta(g).get("uid"))
            for g in self.cache("gangjobs").values()
            if (g.get("status") or {}).get("admission")
        }
        for obj in self.cache("pods").values():
            self.foreign.index(obj)
        pod_uids, claim_keys = self.foreign.covered()
        later: list[tuple[Handler, Obj]] = []
        for plural, handler in (("resourceclaims", self._on_claim), ("pods", self._on_pod)):
            for obj in self.cache(plural).values():
                if (
                    translate.owner_gang(obj) in recorded
                    or str(_meta(obj).get("uid")) in pod_uids
                    or r.RESOURCE_CLAIMS.key(obj) in claim_keys
                ):
                    later.append((handler, obj))
                else:
                    self._usage(plural, obj)
        for obj in self.cache("gangjobs").values():
            self._sync_gang(obj)
        for group in self.foreign.all_groups():
            self.foreign.sync(group)
        for handler, obj in later:
            handler("ADDED", None, obj)

    def _live(self, handler: Handler) -> Handler:
        """Events before the first build are left in the informer's cache, which the
        build reads; after it they go to the state one by one."""

        def on_event(kind: str, old: Obj | None, new: Obj) -> None:
            if self.ready.is_set():
                handler(kind, old, new)

        return on_event

    def _problem(self, kind: str, obj: Obj, error: InvalidInput | None) -> None:
        key = translate.describe(kind, obj)
        if error is None:
            self.problems.pop(key, None)
        else:
            self.problems[key] = str(error)
            log.warning("object not usable", object=key, problem=str(error))

    # ---- cluster shape ----------------------------------------------------------------
    def _on_namespace(self, kind: str, old: Obj | None, new: Obj) -> None:
        name, labels = translate.namespace_labels(new)
        self.state.set_namespace(name, {} if kind == DELETED else labels)

    def _mirror(
        self,
        kind: str,
        build: Callable[[Obj], Any],
        upsert: Callable[[Any], None],
        remove: Callable[[str], object],
    ) -> Handler:
        """A handler keeping one cluster-scoped kind in the state by name."""

        def on_event(event: str, old: Obj | None, new: Obj) -> None:
            name = str(_meta(new).get("name"))
            if event == DELETED:
                affected = remove(name)
                if affected:  # a node's removal names the admitted gangs it had
                    log.warning("removed under admitted gangs", object=name, gangs=affected)
                self._problem(kind, new, None)
                return
            try:
                upsert(build(new))
                self._problem(kind, new, None)
            except InvalidInput as exc:
                self._problem(kind, new, exc)

        return on_event

    # ---- what gangs are made of -------------------------------------------------------
    def _priority(self, name: str | None, where: str) -> int:
        if name is None:
            return self.default_priority
        if name not in self.priorities:
            raise InvalidInput(where, f"PriorityClass {name!r} does not exist")
        return self.priorities[name]

    def _take_priority_class(self, obj: Obj, *, deleted: bool) -> None:
        try:
            name, value, default = translate.priority_class(obj)
        except InvalidInput as exc:
            self._problem("PriorityClass", obj, None if deleted else exc)
            return
        if deleted:
            self.priorities.pop(name, None)
        else:
            self.priorities[name] = value
        if default:
            self.default_priority = 0 if deleted else value

    def _on_priority_class(self, kind: str, old: Obj | None, new: Obj) -> None:
        self._take_priority_class(new, deleted=kind == DELETED)
        self._resync_pending(lambda g: True)

    def _on_template(self, kind: str, old: Obj | None, new: Obj) -> None:
        namespace = _meta(new).get("namespace")
        self._resync_pending(lambda g: _meta(g).get("namespace") == namespace)

    def _resync_pending(self, which: Callable[[Obj], bool]) -> None:
        """Translate again the GangJobs not admitted (their templates or priority moved)."""
        if self.shape_only:
            return
        for obj in list(self.cache("gangjobs").values()):
            if str(_meta(obj).get("uid")) not in self.state.admitted and which(obj):
                self._sync_gang(obj)

    def _on_gang_job(self, kind: str, old: Obj | None, new: Obj) -> None:
        uid = str(_meta(new).get("uid"))
        if uid in self._held:
            self._deferred[uid] = (kind, new)
            return
        if kind == DELETED:
            self._gang_keys.pop(uid, None)
            self.admission_ids.pop(uid, None)
            self.state.remove_gang(uid)
            self.unrestorable.pop(uid, None)
            self._problem("GangJob", new, None)
            self.refresh_gang(uid)
            return
        if old is not None and _status_only_change(old, new, self.state):
            return
        self._sync_gang(new)

    def _sync_gang(self, obj: Obj) -> None:
        """Put a GangJob where it belongs: restored, pending, or out of the queue."""
        uid = str(_meta(obj).get("uid"))
        self._gang_keys[uid] = r.GANG_JOBS.key(obj)
        status = obj.get("status") or {}
        record = status.get("admission")
        if uid in self.state.admitted:
            if record:
                if self.admission_ids.get(uid) != record.get("admissionId"):
                    self.admission_ids[uid] = str(record.get("admissionId"))
                    self.refresh_gang(uid)
                return
            self.state.release(uid)  # released through the API: give back what it held
            self.admission_ids.pop(uid, None)
            self.refresh_gang(uid)
        try:
            gang = translate.gang(
                obj, self.cache("resourceclaimtemplates"), self.priorities, self.default_priority
            )
        except InvalidInput as exc:
            self.state.remove_gang(uid)
            self._problem("GangJob", obj, exc)
            return
        self._problem("GangJob", obj, None)
        if record:
            try:
                reservation = translate.reservation_from_record(gang, record, self.state.now)
                self.state.restore(gang, reservation)
            except InvalidInput as exc:
                self.unrestorable[uid] = str(exc)
                log.warning("recorded admission does not hold", gang=uid, problem=str(exc))
                return
            self.unrestorable.pop(uid, None)
            self.admission_ids[uid] = str(record.get("admissionId"))
            self.refresh_gang(uid)
            return
        self.unrestorable.pop(uid, None)
        if (
            (obj.get("spec") or {}).get("suspend")
            or _meta(obj).get("deletionTimestamp")
            or status.get("phase") in ("Succeeded", "Failed")
            or self.backing_off(obj)
        ):
            self.state.remove_gang(uid)
            return
        self.state.add_gang(gang)

    # ---- usage ------------------------------------------------------------------------
    def refresh_gang(self, uid: str) -> None:
        """Re-decide whether the gang's pods and claims are ours or foreign usage (call
        after the gang was admitted or released)."""
        for key in list(self._pods_of.get(uid, ())):
            obj = self.cache("pods").get(key)
            if obj is not None:
                self._on_pod("MODIFIED", None, obj)
        for key in list(self._claims_of.get(uid, ())):
            obj = self.cache("resourceclaims").get(key)
            if obj is not None:
                self._on_claim("MODIFIED", None, obj)

    def _owner(self, index: dict[str, set[str]], key: str, obj: Obj, deleted: bool) -> str | None:
        owner = translate.owner_gang(obj)
        if owner is not None:
            keys = index.setdefault(owner, set())
            if deleted:
                keys.discard(key)
                if not keys:
                    del index[owner]
            else:
                keys.add(key)
        return owner

    def _on_pod(self, kind: str, old: Obj | None, new: Obj) -> None:
        key = r.PODS.key(new)
        owner = self._owner(self._pods_of, key, new, kind == DELETED)
        left, group = self.foreign.update_pod(new, deleted=kind == DELETED)
        if kind == DELETED:
            self.state.remove_foreign_pod(key)
            self.releasing_pods.pop(key, None)
            self._problem("Pod", new, None)
        else:
            self._pod_usage(new)
        gone = kind == DELETED
        if owner is not None and (old is None or gone or _done(old) != _done(new)):
            # whether the stale claims it is reserved for are let go follows it
            namespace, claims = _meta(new).get("namespace"), self.cache("resourceclaims")
            for name in _claim_names(new):
                claim = claims.get(f"{namespace}/{name}")
                if claim is not None and not self.ours(claim):
                    self._claim_usage(claim)
        if left is not None and self.ready.is_set():
            self._refresh(self.foreign.sync(left))
        if (old is None or gone) and self.ready.is_set():
            # a gang that starts or stops naming a claim may change who allocates it
            for other in sorted(self.foreign.sharing(new) - {group}):
                self._refresh(self.foreign.sync(other))
        if (
            group is not None
            and self.ready.is_set()
            and not self.foreign.moot("pods", key, old, new, gone)
        ):
            self._refresh(self.foreign.sync(group))

    def _usage(self, plural: str, obj: Obj) -> None:
        if plural == "pods":
            self._pod_usage(obj)
        else:
            self._claim_usage(obj)

    def _refresh(self, changed: Changed) -> None:
        """Count again as ours or others' the pods and claims a foreign gang took or let go;
        judge again the gangs it changed the lot of."""
        for plural, keys in (("pods", changed.pods), ("resourceclaims", changed.claims)):
            for key in keys:
                obj = self.cache(plural).get(key)
                if obj is not None:
                    self._usage(plural, obj)
        for other in sorted(changed.others):
            self._refresh(self.foreign.sync(other))

    def _on_record(self, kind: str, old: Obj | None, new: Obj) -> None:
        group = group_of_record(new)
        if group is not None:
            self._refresh(self.foreign.sync(group))

    def _on_pod_group(self, kind: str, old: Obj | None, new: Obj) -> None:
        meta = _meta(new)
        group = self.foreign.groups.get(f"podgroup:{meta.get('namespace')}/{meta.get('name')}")
        if group is not None:
            self._refresh(self.foreign.sync(group))

    def _pod_usage(self, new: Obj) -> None:
        key = r.PODS.key(new)
        self.releasing_pods.pop(key, None)
        if self.ours(new) or self.foreign.is_ours("pods", key):
            self.state.remove_foreign_pod(key)
            return
        try:
            usage = translate.pod_usage(new)
        except InvalidInput as exc:
            self._problem("Pod", new, exc)
            return
        if usage is None:
            self.state.remove_foreign_pod(key)
        elif _stopping(new):
            self.state.remove_foreign_pod(key)
            self.releasing_pods[key] = usage
        else:
            self.state.add_foreign_pod(key, *usage)

    def _on_claim(self, kind: str, old: Obj | None, new: Obj) -> None:
        key = r.RESOURCE_CLAIMS.key(new)
        self._owner(self._claims_of, key, new, kind == DELETED)
        if kind == DELETED:
            self.state.remove_foreign_claim(key)
            self.releasing.pop(key, None)
            self._problem("ResourceClaim", new, None)
        else:
            self._claim_usage(new)
        groups = set()
        if (
            old is None
            or kind == DELETED
            or old.get("spec") != new.get("spec")
            or (self.foreign.is_named(key) and _sharing(old) != _sharing(new))
        ):
            groups = self.foreign.claim_changed(key)
        if self.foreign.moot("resourceclaims", key, old, new, kind == DELETED):
            return
        pod = self.pod_of_claim(new)
        group = None if pod is None else self.foreign.index(pod)
        groups |= self.foreign.groups_of_claim(key)
        for each in sorted(groups | ({group} if group is not None else set())):
            self._refresh(self.foreign.sync(each))

    def pod_of_claim(self, claim: Obj) -> Obj | None:
        """The cached pod a claim was generated for (its controlling Pod owner)."""
        for ref in _meta(claim).get("ownerReferences") or ():
            if ref.get("kind") == "Pod" and ref.get("controller"):
                return self.cache("pods").get(f"{_meta(claim).get('namespace')}/{ref.get('name')}")
        return None

    def _claim_usage(self, new: Obj) -> None:
        key = r.RESOURCE_CLAIMS.key(new)
        self.releasing.pop(key, None)
        if self.ours(new) or self.foreign.is_ours("resourceclaims", key):
            self.state.remove_foreign_claim(key)
            return
        try:
            devices = translate.claim_devices(new)
        except InvalidInput as exc:
            self._problem("ResourceClaim", new, exc)
            return
        if devices and self._let_go(new):
            self.state.remove_foreign_claim(key)
            self.releasing[key] = devices
        elif devices:
            self.state.add_foreign_claim(key, devices)
        else:
            self.state.remove_foreign_claim(key)

    def _let_go(self, claim: Obj) -> bool:
        """Whether a claim not of a current admission is a GangJob's whose pods are all
        done or being stopped: the GangJob's reconcile deallocates it (release.py) once
        they are done. (Re-judged on every event of its gang's stale pods, so the state
        counted a claim as this says now.)"""
        if translate.owner_gang(claim) is None or self.ours(claim):
            return False
        namespace, pods = _meta(claim).get("namespace"), self.cache("pods")
        for consumer in (claim.get("status") or {}).get("reservedFor") or ():
            pod = pods.get(f"{namespace}/{consumer.get('name')}")
            if pod is None or _meta(pod).get("uid") != consumer.get("uid"):
                continue  # gone
            if not _done(pod):
                return False
        return True

    def _lets_claims_go(self, kind: str, old: Obj | None, new: Obj) -> bool:
        """Whether a GangJob's pod event changed whether a stale allocated claim it names
        is let go (`_on_pod` counts it again): its usage by others may have ended (a
        broken admission's claim, allocated for a pod deleted unbound, say)."""
        if translate.owner_gang(new) is None:
            return False
        if not (old is None or kind == DELETED or _done(old) != _done(new)):
            return False
        namespace, claims = _meta(new).get("namespace"), self.cache("resourceclaims")
        for name in _claim_names(new):
            claim = claims.get(f"{namespace}/{name}")
            if claim is not None and not self.ours(claim) and foreign.allocated(claim):
                return True
        return False

    def _counted(self, plural: str, obj: Obj) -> bool:
        """Whether the state counts a pod's or claim's usage as others' (it does not for
        ours, nor for what is being let go)."""
        if self.ours(obj):
            return False
        return not (_stopping(obj) if plural == "pods" else self._let_go(obj))


def _sharing(claim: Obj) -> tuple[bool, str | None]:
    """What a pod that shares a claim it names reads of it (foreign.part): whether it is
    allocated, and on which node. (Its reservedFor is read by its gangs' judgement, which
    every change of the claim brings.)"""
    return foreign.allocated(claim), foreign.allocation_node(claim)


def _done(pod: Obj) -> bool:
    """Done with its claims, or about to be (being stopped)."""
    return pod_done(pod) or _stopping(pod)


def _claim_names(pod: Obj) -> list[str]:
    """The ResourceClaims a pod names, directly or as generated for it."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    named = [c.get("resourceClaimName") for c in spec.get("resourceClaims") or ()]
    generated = [c.get("resourceClaimName") for c in status.get("resourceClaimStatuses") or ()]
    return [str(n) for n in (*named, *generated) if n]


def _stopping(pod: Obj) -> bool:
    """A GangJob's pod being stopped: deleted, or marked DisruptionTarget before that.
    (Only stale pods are judged so: a released admission's.)"""
    if translate.owner_gang(pod) is None:
        return False
    if _meta(pod).get("deletionTimestamp"):
        return True
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == DISRUPTION_TARGET and c.get("status") == "True" for c in conditions)


def _status_only_change(old: Obj, new: Obj, state: ClusterState) -> bool:
    """A status write that leaves a known GangJob's spec, record and phase as they were
    changes nothing for the engine; skipping it saves a translation per status write."""
    old_status, new_status = old.get("status") or {}, new.get("status") or {}
    generation = _meta(new).get("generation")
    uid = str(_meta(new).get("uid"))
    return (
        generation is not None
        and _meta(old).get("generation") == generation
        and old_status.get("admission") == new_status.get("admission")
        and old_status.get("phase") == new_status.get("phase")
        and (uid in state.pending or uid in state.admitted)
    )
