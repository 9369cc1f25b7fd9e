"""The cluster state the admission rules read, and where it comes from.

Served by the controller, the webhook reads the controller's own caches (one copy of the
cluster in memory, the same view the engine decides on). `phalanx webhook` runs alone
with caches of the cluster's shape only (namespaces, nodes, DRA classes and slices,
queues, claim templates, priority classes): the rules never look at usage, so pods,
claims and GangJobs are not watched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.engine.feasibility import NeverFit
from controller.engine.state import ClusterState
from controller.kube.caches import ClusterCaches
from controller.kube.record_size import Sizes

Obj = dict[str, Any]


@dataclass(frozen=True)
class Cluster:
    """What the rules read: the caches' own objects (read them, never change them)."""

    state: ClusterState
    queues: Mapping[str, Obj]
    """Queue objects by name, as stored (including ones the engine refused)."""
    templates: Mapping[str, Obj]
    """ResourceClaimTemplates by `namespace/name`."""
    priorities: Mapping[str, int] = field(default_factory=dict)
    default_priority: int = 0
    never_fit: NeverFit = field(default_factory=NeverFit)
    sizes: Sizes = field(default_factory=Sizes)


class CacheView:
    """`Cluster` snapshots over a ClusterCaches (the controller's, or a shape-only one)."""

    def __init__(self, caches: ClusterCaches) -> None:
        self.caches = caches
        self._never_fit = NeverFit()
        self._sizes = Sizes()

    @property
    def ready(self) -> bool:
        return self.caches.ready.is_set()

    def cluster(self) -> Cluster:
        caches = self.caches
        return Cluster(
            caches.state,
            caches.cache("queues"),
            caches.cache("resourceclaimtemplates"),
            caches.priorities,
            caches.default_priority,
            self._never_fit,
            self._sizes,
        )

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """The labels of a cached namespace, None if the cache has not seen it."""
        found = self.caches.cache("namespaces").get(name)
        if found is None:
            return None
        return (found.get("metadata") or {}).get("labels") or {}
