"""A Queue's `spec.policies` as the engine's per-queue policy selection.

The CRD can only check the shape (a name and an open parameter map): which names exist
depends on the installed plug-ins. This module checks them against the registry, so
the webhook can refuse a Queue naming an unknown policy with the list of what exists.
"""

from __future__ import annotations

from controller.api.queue import Queue
from policies.registry import KINDS, PolicyRef
from policies.routing import PolicySelection


class QueuePolicyError(ValueError):
    """Policies a Queue names that do not exist or whose parameters do not validate;
    `problems` has one line per bad choice."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def queue_policy_selection(queue: Queue) -> PolicySelection | None:
    """The queue's own policy choices for `policies.routing.build`; None if it names none.

    Raises QueuePolicyError naming each bad choice, e.g. `queue team-a:
    spec.policies.ordering: no ordering policy named 'dfr'; available: drf, priority`.
    """
    chosen = queue.spec.policies
    if chosen is None:
        return None
    refs = {
        kind: PolicyRef(choice.name, dict(choice.params))
        for kind in KINDS
        if (choice := getattr(chosen, kind)) is not None
    }
    if not refs:
        return None
    selection = PolicySelection(**refs)
    problems = selection.problems(f"queue {queue.metadata.name}: spec.policies")
    if problems:
        raise QueuePolicyError(problems)
    return selection
