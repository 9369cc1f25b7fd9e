"""The node lifecycle controller's taints: a Node whose Ready condition is not True gets
`node.kubernetes.io/not-ready` (False) or `node.kubernetes.io/unreachable` (Unknown) with
effect NoSchedule, and loses them once Ready is True. (No eviction: NoExecute taints and
pod deletion on lost nodes are not emulated.)"""

from __future__ import annotations

from emulator.controllers import Controller, builtin, removed
from emulator.resources import ResourceType
from emulator.store import Obj

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"


def wanted_taint(node: Obj) -> str | None:
    """The lifecycle taint a node should carry, or None (no Ready condition yet: leave it)."""
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            status = condition.get("status")
            return None if status == "True" else (NOT_READY if status == "False" else UNREACHABLE)
    return ""


class NodeLifecycle(Controller):
    name = "node-lifecycle-controller"

    def on_write(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        if (
            rt.key == "nodes"
            and not removed(self.api, rt, verb, obj)
            and self._taints_to_change(obj) is not None
        ):
            self.enqueue(obj["metadata"]["name"])

    def _taints_to_change(self, node: Obj) -> list[Obj] | None:
        """The node's taints as they should be, or None if they are right."""
        wanted = wanted_taint(node)
        if wanted == "":
            return None
        taints = (node.get("spec") or {}).get("taints") or []
        ours = {NOT_READY, UNREACHABLE}
        kept = [t for t in taints if not (t.get("key") in ours and t.get("effect") == "NoSchedule")]
        if wanted:
            kept.append({"key": wanted, "effect": "NoSchedule"})
        return None if kept == taints else kept

    async def sync(self, key: str) -> None:
        node = self.api.store.get("nodes", ("", key))
        if node is None:
            return
        taints = self._taints_to_change(node)
        if taints is None:
            return
        node.setdefault("spec", {})["taints"] = taints
        await self.api.update(builtin(self.api, "", "nodes"), "", key, node, {}, "", self.name, [])
