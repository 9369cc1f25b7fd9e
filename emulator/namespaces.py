"""Namespace deletion, as kube-controller-manager's namespace controller does it.

A deleted namespace is `Terminating` (the API server marks it). The controller deletes
every object in it (pods on a node terminate gracefully: a kubelet finishes them), waits
until none is left, then removes the `kubernetes` finalizer from `spec.finalizers`, and the
namespace is gone.
"""

from __future__ import annotations

from emulator.controllers import Controller, builtin, removed
from emulator.resources import ResourceType
from emulator.store import Obj


class Namespaces(Controller):
    name = "namespace-controller"

    def on_write(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        meta = obj["metadata"]
        if rt.key == "namespaces":
            if meta.get("deletionTimestamp") and not removed(self.api, rt, verb, obj):
                self.enqueue(meta["name"])
        elif rt.namespaced and removed(self.api, rt, verb, obj):
            namespace = self.api.store.peek("namespaces", ("", meta.get("namespace", "")))
            if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
                self.enqueue(namespace["metadata"]["name"])

    def _content(self) -> list[ResourceType]:
        """One served type per stored namespaced resource."""
        kinds: dict[str, ResourceType] = {}
        for rt in self.api.registry.all():
            if rt.namespaced:
                kinds.setdefault(rt.key, rt)
        return list(kinds.values())

    async def sync(self, key: str) -> None:
        namespace = self.api.store.get("namespaces", ("", key))
        if namespace is None or not namespace["metadata"].get("deletionTimestamp"):
            return
        left = 0
        for rt in self._content():
            for obj in list(self.api.store.items(rt.key, key)):
                left += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    await self.api.delete(rt, key, obj["metadata"]["name"], {}, {})
        if left:
            return
        finalizers = (namespace.get("spec") or {}).get("finalizers") or []
        if "kubernetes" in finalizers:
            namespace["spec"]["finalizers"] = [f for f in finalizers if f != "kubernetes"]
            self.api.store.update("namespaces", namespace)
        if not namespace["spec"].get("finalizers") and not namespace["metadata"].get("finalizers"):
            self.api.finish_deletion(builtin(self.api, "", "namespaces"), ("", key))
