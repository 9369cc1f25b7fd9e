"""Queue admission: the tree must stay a tree.

- CREATE and UPDATE: the object reads as a Queue (quota resource names included: cpu,
  memory, pods, ephemeral-storage, an extended resource in its own domain such as
  nvidia.com/gpu, or devices/<deviceClassName>); its parent exists (create parents
  first); the new parent does not close a cycle; the tree stays at most
  `MAX_DEPTH` levels deep (a deeper tree is more likely a generated mistake than a
  quota design, and every admission walks the path). A `devices/<class>` quota for a
  DeviceClass that does not exist yet is allowed with a warning.
- DELETE: refused while other queues name it as their parent (they would be orphans):
  delete or re-parent the children first.
The walks are bounded and cycle-safe, whatever the stored queues look like (queues
created while the webhook was down may already form a cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.api.common import DEVICE_QUOTA_PREFIX
from controller.api.queue import Queue as QueueModel
from controller.webhook import review
from controller.webhook.cluster import Cluster

Obj = dict[str, Any]
MAX_DEPTH = 16
"""Levels of the queue tree, root included."""


def _parent_of(obj: Obj | None) -> str | None:
    parent = ((obj or {}).get("spec") or {}).get("parent")
    return str(parent) if parent else None


def validate(request: review.Request, cluster: Cluster) -> review.Verdict:
    queues = cluster.queues
    if request.operation == "DELETE":
        name = request.name
        children = sorted(n for n, q in queues.items() if _parent_of(q) == name and n != name)
        if children:
            shown = ", ".join(children[:10]) + (", ..." if len(children) > 10 else "")
            return review.refuse(
                [
                    review.forbidden(
                        (),
                        f"queue {name} is the parent of {shown}: deleting it would orphan "
                        "them; delete them or set another spec.parent first",
                    )
                ]
            )
        return review.allow()
    queue = request.object
    if queue is None:
        return review.allow()
    if review.settled_update(request):
        return review.allow()
    errors = review.schema_errors(QueueModel.from_manifest, queue)
    if errors:
        return review.refuse(errors)
    name = str((queue.get("metadata") or {}).get("name") or request.name)
    errors = _tree(name, _parent_of(queue), queues)
    if errors:
        return review.refuse(errors)
    return review.allow(warnings=_device_warnings(queue, cluster))


def _tree(name: str, parent: str | None, queues: Mapping[str, Obj]) -> list[review.FieldError]:
    path = ("spec", "parent")
    ancestors: list[str] = []
    if parent is not None:
        if parent not in queues:
            return [review.not_found(path, parent, "create the parent queue first")]
        node: str | None = parent
        while node is not None and node in queues and len(ancestors) <= MAX_DEPTH:
            if node == name:
                cycle = " -> ".join([name, *ancestors, name])
                return [review.invalid(path, parent, f"would close a queue cycle: {cycle}")]
            if node in ancestors:
                cycle = " -> ".join([*ancestors[ancestors.index(node) :], node])
                return [review.invalid(path, parent, f"its ancestors form a queue cycle: {cycle}")]
            ancestors.append(node)
            node = _parent_of(queues[node])
    depth = 1 + len(ancestors) + _height(name, queues)
    if depth > MAX_DEPTH:
        shown = str(depth) if len(ancestors) <= MAX_DEPTH else f"more than {MAX_DEPTH}"
        return [
            review.invalid(
                path,
                parent,
                f"the queue tree would be {shown} levels deep; at most {MAX_DEPTH} are allowed",
            )
        ]
    return []


def _height(name: str, queues: Mapping[str, Obj]) -> int:
    """Levels below `name` (0 for a leaf), counting at most MAX_DEPTH."""
    children: dict[str, list[str]] = {}
    for child, obj in queues.items():
        parent = _parent_of(obj)
        if parent is not None:
            children.setdefault(parent, []).append(child)
    level, frontier, seen = 0, [name], {name}
    while level <= MAX_DEPTH:
        frontier = [c for n in frontier for c in children.get(n, ()) if c not in seen]
        if not frontier:
            break
        seen.update(frontier)
        level += 1
    return level


def _device_warnings(queue: Obj, cluster: Cluster) -> list[str]:
    classes = cluster.state.inventory.classes
    warnings = []
    for i, item in enumerate((queue.get("spec") or {}).get("quota") or []):
        resource = str((item or {}).get("resource") or "")
        if resource.startswith(DEVICE_QUOTA_PREFIX):
            wanted = resource.removeprefix(DEVICE_QUOTA_PREFIX)
            if wanted not in classes:
                warnings.append(
                    f"spec.quota[{i}].resource: DeviceClass {wanted} does not exist (yet); "
                    "this quota limits nothing until it does"
                )
    return warnings
