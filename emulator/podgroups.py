"""PodGroup protection, as kube-controller-manager 1.36 runs it (scheduling.k8s.io/v1alpha2).

The API server adds finalizer `scheduling.k8s.io/podgroup-protection` to every PodGroup;
this controller removes it once the PodGroup is being deleted and no active pod (one not
Succeeded or Failed) names it in `spec.schedulingGroup.podGroupName`.
"""

from __future__ import annotations

from emulator.controllers import Controller, builtin, removed
from emulator.resources import ResourceType
from emulator.store import Obj

FINALIZER = "scheduling.k8s.io/podgroup-protection"
_PODGROUPS = "podgroups.scheduling.k8s.io"


def group_of(pod: Obj) -> str | None:
    return ((pod.get("spec") or {}).get("schedulingGroup") or {}).get("podGroupName")


def active(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class PodGroupProtection(Controller):
    name = "podgroup-protection-controller"

    def on_write(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        meta = obj["metadata"]
        if rt.key == _PODGROUPS:
            if meta.get("deletionTimestamp") and FINALIZER in (meta.get("finalizers") or []):
                self.enqueue((meta["namespace"], meta["name"]))
        elif rt.key == "pods":
            group = group_of(obj)
            if group and (not active(obj) or removed(self.api, rt, verb, obj)):
                self.enqueue((meta["namespace"], group))

    async def sync(self, key: tuple[str, str]) -> None:
        namespace, name = key
        group = self.api.store.get(_PODGROUPS, key)
        if group is None:
            return
        meta = group["metadata"]
        if not meta.get("deletionTimestamp") or FINALIZER not in (meta.get("finalizers") or []):
            return
        if any(
            group_of(pod) == name and active(pod) for pod in self.api.store.items("pods", namespace)
        ):
            return
        meta["finalizers"] = [f for f in meta["finalizers"] if f != FINALIZER]
        await self.api.update(
            builtin(self.api, "scheduling.k8s.io", "podgroups"),
            namespace,
            name,
            group,
            {},
            "",
            self.name,
            [],
        )
