"""Whether an admitted gang may take its nodes and devices in the cluster yet (pure).

An admission made by preemption counts the victims' nodes and devices as free the moment
the victims are evicted in the ledger, but their pods take their grace period to stop and
their claims are deallocated only once those pods are done. Until then the caches count
what they still hold as usage by others, so the state shows it twice: a node whose usage
exceeds its allocatable, a device with a second holder. Allocating or binding then would
put two pods' worth of work on one node and one device in two claims, which the API
server does not prevent; kube-scheduler waits the same way for its victims (the preemptor
keeps a nominated node until they are gone).

The same holds for whatever a released gang still holds while it is let go (its pods being
stopped, its claims until deallocated: `ClusterCaches.releasing_pods` and `releasing`),
which the state no longer counts so that a decision can hand it out at once.

`still_held` names the first such overlap of the gang's reservation, or None once there is
none: the caller allocates and binds only then. Nothing but the gang's own resources is
checked: a node over on a resource no pod of the gang asks for does not hold it back.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.engine.model import DeviceKey
from controller.engine.quantity import format_canonical
from controller.engine.state import ClusterState

FOREIGN_OWNER = "foreign:"
"""How the state names a holder that is not an admitted gang (a claim by its cache key)."""


def still_held(
    state: ClusterState,
    uid: str,
    releasing: Mapping[str, tuple[DeviceKey, ...]] | None = None,
    releasing_pods: Mapping[str, tuple[str, Mapping[str, int]]] | None = None,
) -> str | None:
    """Why the admitted gang `uid` must wait before its claims are allocated and its pods
    bound (one line), or None when nothing of its reservation is held by others;
    `releasing` are claims (by key) being deallocated and `releasing_pods` pods (by key:
    node, requests) being stopped, which the state leaves out."""
    reservation = state.admitted.get(uid)
    if reservation is None:
        return None
    inventory = state.inventory
    deallocating = {d: key for key, devices in (releasing or {}).items() for d in devices}
    wanted: dict[str, set[str]] = {}
    for pod in reservation.pods:
        wanted.setdefault(pod.node, set()).update(r for r, v in pod.requests.items() if v)
        for claim in pod.claims:
            mine = pod.claim_owner(uid, claim.claim)
            for da in claim.devices:
                if da.shared or inventory.is_shareable(da.device):
                    continue
                others = sorted(h for h in inventory.owners.get(da.device, ()) if h != mine)
                if da.device in deallocating:
                    others.append(FOREIGN_OWNER + deallocating[da.device])
                if others:
                    holder = others[0]
                    if holder.startswith(FOREIGN_OWNER):
                        holder = f"ResourceClaim {holder.removeprefix(FOREIGN_OWNER)}"
                    return f"device {'/'.join(da.device)} is still held by {holder}"
    stopping: dict[str, dict[str, int]] = {}
    for node, requests in (releasing_pods or {}).values():
        if node in wanted:
            held = stopping.setdefault(node, {})
            for r, v in requests.items():
                held[r] = held.get(r, 0) + v
    for name, resources in sorted(wanted.items()):
        usage = state.nodes.get(name)
        if usage is None:
            continue
        for r in sorted(resources):
            used = usage.used.get(r, 0) + stopping.get(name, {}).get(r, 0)
            allocatable = usage.node.allocatable.get(r, 0)
            if used > allocatable:
                return (
                    f"node {name} still has pods of others on it: {r} "
                    f"{format_canonical(r, used)} used of {format_canonical(r, allocatable)}"
                )
    return None
