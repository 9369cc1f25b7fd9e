"""What every Queue's status should say: usage and borrowing per resource (its whole
subtree, in canonical quantities), and how many gangs wait and run in it or below it.
Pure functions over the engine's state; the loop writes the result to Queue `/status`
only where it differs from what the Queue already says."""

from __future__ import annotations

from typing import Any

from controller.engine.quantity import format_canonical
from controller.engine.state import ClusterState
from controller.kube.rest import Obj

FIELDS = ("usage", "borrowed", "pendingGangs", "admittedGangs")


def _quantities(amounts: dict[str, int]) -> dict[str, str]:
    return {r: format_canonical(r, v) for r, v in sorted(amounts.items()) if v}


def queue_statuses(state: ClusterState) -> dict[str, Obj]:
    """The status fields of every known queue, by name."""
    quota = state.quota
    names = quota.names()
    pending = dict.fromkeys(names, 0)
    admitted = dict.fromkeys(names, 0)
    for counts, gangs in ((pending, state.pending), (admitted, state.admitted_gangs)):
        for gang in gangs.values():
            if gang.queue in counts:
                for name in quota.path(gang.queue):
                    counts[name] += 1
    statuses = {}
    for name in names:
        usage = quota.subtree_usage(name)
        statuses[name] = {
            "usage": _quantities(usage),
            "borrowed": _quantities({r: quota.borrowed(name, r) for r in usage}),
            "pendingGangs": pending[name],
            "admittedGangs": admitted[name],
        }
    return statuses


def status_patch(queue: Obj, wanted: Obj) -> Obj | None:
    """A merge patch of `/status` taking the queue to `wanted`, or None if it is there
    (resources no longer used are removed with nulls)."""
    have: dict[str, Any] = queue.get("status") or {}
    if all(have.get(k, {} if k in ("usage", "borrowed") else 0) == wanted[k] for k in FIELDS):
        return None
    patch: dict[str, Any] = dict(wanted)
    for k in ("usage", "borrowed"):
        gone = {r: None for r in have.get(k) or {} if r not in wanted[k]}
        patch[k] = {**gone, **wanted[k]}
    return {"status": patch}
