"""Garbage collection by ownerReferences, as kube-controller-manager's collector does it.

Background (the default): once an owner is gone, each dependent that has no live owner
left is deleted, and dangling references are dropped from dependents that still have one.
A dependent created with only absent owners is deleted too. `propagationPolicy=Foreground`
(the API server adds finalizer `foregroundDeletion`): the dependents are deleted first and
the owner's finalizer removed once none is left. `Orphan` (finalizer `orphan`): the owner
reference is removed from every dependent, then the finalizer.
"""

from __future__ import annotations

from typing import Any

from emulator.controllers import Controller, removed
from emulator.jsontree import clone
from emulator.resources import ResourceType
from emulator.store import Obj, obj_key

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"

Ref = tuple[str, str, str]
"""(resource key, namespace, name)."""


class GarbageCollector(Controller):
    name = "generic-garbage-collector"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.types: dict[str, ResourceType] = {}
        self.by_uid: dict[str, Ref] = {}
        self.dependents: dict[str, set[Ref]] = {}
        """Owner uid -> objects that name it in ownerReferences."""
        self.owners_of: dict[str, set[str]] = {}
        """Dependent uid -> the owner uids it names."""

    def on_write(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        meta = obj["metadata"]
        uid = meta["uid"]
        ref = (rt.key, *obj_key(obj))
        self.types.setdefault(rt.key, rt)
        owners = {str(o.get("uid")) for o in meta.get("ownerReferences") or []}
        gone = removed(self.api, rt, verb, obj)
        for owner in self.owners_of.pop(uid, set()) - (set() if gone else owners):
            self.dependents.get(owner, set()).discard(ref)
        for owner in owners:
            self._wake_deleting_owner(owner)
        if gone:
            self.by_uid.pop(uid, None)
            for dependent in self.dependents.get(uid, set()):
                self.enqueue(("dependent", *dependent))
            return
        self.by_uid[uid] = ref
        if owners:
            self.owners_of[uid] = owners
        for owner in owners:
            self.dependents.setdefault(owner, set()).add(ref)
        if owners and verb == "create":
            self.enqueue(("dependent", *ref))
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and (FOREGROUND in finalizers or ORPHAN in finalizers):
            self.enqueue(("owner", *ref))

    def _wake_deleting_owner(self, uid: str) -> None:
        owner = self._owner(uid)
        if owner is not None and owner["metadata"].get("deletionTimestamp"):
            self.enqueue(("owner", *self.by_uid[uid]))

    def _peek(self, ref: Ref) -> Obj | None:
        return self.api.store.peek(ref[0], (ref[1], ref[2]))

    async def sync(self, key: tuple[str, str, str, str]) -> None:
        role, resource, namespace, name = key
        if role == "dependent":
            await self._sync_dependent((resource, namespace, name))
        else:
            await self._sync_owner((resource, namespace, name))

    def _owner(self, uid: str) -> Obj | None:
        ref = self.by_uid.get(uid)
        obj = self._peek(ref) if ref else None
        return obj if obj is not None and obj["metadata"]["uid"] == uid else None

    async def _sync_dependent(self, ref: Ref) -> None:
        obj = self._peek(ref)  # copied before it is changed
        if obj is None:
            return
        refs = obj["metadata"].get("ownerReferences") or []
        live = [r for r in refs if self._owner(str(r.get("uid"))) is not None]
        if not refs or len(live) == len(refs):
            return
        rt = self.types[ref[0]]
        if not live:
            if not obj["metadata"].get("deletionTimestamp"):
                await self.api.delete(rt, ref[1], ref[2], {}, {})
            return
        obj = clone(obj)
        _set_owners(obj, live)
        await self.api.update(rt, ref[1], ref[2], obj, {}, "", self.name, [])

    async def _sync_owner(self, ref: Ref) -> None:
        owner = self._peek(ref)
        if owner is None or not owner["metadata"].get("deletionTimestamp"):
            return
        owner = clone(owner)
        finalizers = owner["metadata"].get("finalizers") or []
        uid = owner["metadata"]["uid"]
        remaining = [d for d in sorted(self.dependents.get(uid, set())) if self._peek(d)]
        if ORPHAN in finalizers:
            for dependent in remaining:
                obj = self.api.store.get(dependent[0], (dependent[1], dependent[2]))
                assert obj is not None
                _set_owners(
                    obj,
                    [
                        r
                        for r in obj["metadata"].get("ownerReferences") or []
                        if r.get("uid") != uid
                    ],
                )
                await self.api.update(
                    self.types[dependent[0]], dependent[1], dependent[2], obj, {}, "", self.name, []
                )
            await self._drop_finalizer(owner, ORPHAN)
            return
        if FOREGROUND not in finalizers:
            return
        for dependent in remaining:
            obj = self._peek(dependent)
            if obj is not None and not obj["metadata"].get("deletionTimestamp"):
                await self.api.delete(
                    self.types[dependent[0]],
                    dependent[1],
                    dependent[2],
                    {"propagationPolicy": "Foreground"},
                    {},
                )
        if not remaining:
            await self._drop_finalizer(owner, FOREGROUND)

    async def _drop_finalizer(self, owner: Obj, finalizer: str) -> None:
        meta = owner["metadata"]
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != finalizer]
        rt = self.types[self.by_uid[meta["uid"]][0]]
        await self.api.update(
            rt, meta.get("namespace", ""), meta["name"], owner, {}, "", self.name, []
        )


def _set_owners(obj: Obj, refs: list[Obj]) -> None:
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)
