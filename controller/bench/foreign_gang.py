"""`phalanx bench foreign-gang`: the controller's caches forming one big foreign gang.

No API server and no HTTP: a `ClusterCaches` gets the events of one gang of `pods` pods
(labels and size annotation, one 1-GPU claim each) as if they came from its informers
(through `assume`, which takes an object into an informer's cache and hands it to the
handlers, as a watch event does), and every handler runs as in the controller. What is
measured is the caches' own work for the gang: CPU seconds over all events, the median CPU
of an event in the first and in the last tenth of them (equal when the cost of an event
does not grow with the gang), and the costliest event (the one that completes the gang
translates all its pods once).

Two orders of events. `claims-first`: each pod's ResourceClaim, then the pod naming it
(`resourceClaimName`), as `phalanx bench controller --mode foreign` makes them.
`pods-first`: the pods, naming a claim template, then for each pod the claim the
resourceclaim controller makes (owned by the pod) and the pod's status naming it, as an
Indexed Job, a JobSet or a PyTorchJob with claim templates gives them. `min_count` (the
size annotation; all the pods by default) below `pods` makes a gang that can be admitted
before all its pods exist.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Iterator
from typing import cast

from controller.bench.controller import _foreign_gang
from controller.engine.state import ClusterState
from controller.kube import resources as r
from controller.kube.caches import ClusterCaches
from controller.kube.foreign import SIZE_ANNOTATION
from controller.kube.resources import Resource
from controller.kube.rest import Obj, Rest

ORDERS = ("claims-first", "pods-first")


def events(order: str, pods: int, min_count: int) -> Iterator[tuple[Resource, Obj]]:
    """The objects, in the order their events reach the controller."""
    claims, made = _foreign_gang("big", pods)
    for pod in made:
        pod["metadata"]["annotations"][SIZE_ANNOTATION] = str(min_count)
    if order == "claims-first":
        for claim, pod in zip(claims, made, strict=True):
            yield r.RESOURCE_CLAIMS, claim
            yield r.PODS, pod
        return
    for pod in made:
        pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "gpu"}]
        yield r.PODS, pod
    for claim, pod in zip(claims, made, strict=True):
        name = pod["metadata"]["name"]
        owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": f"uid-{name}"}
        claim["metadata"]["ownerReferences"] = [{**owner, "controller": True}]
        yield r.RESOURCE_CLAIMS, claim
        claimed = {"name": "gpu", "resourceClaimName": claim["metadata"]["name"]}
        yield r.PODS, {**copy.deepcopy(pod), "status": {"resourceClaimStatuses": [claimed]}}


def run(pods: int, order: str, min_count: int | None = None) -> dict[str, object]:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    state = ClusterState()
    # the caches read nothing from the API here: every event comes through `assume`
    caches = ClusterCaches(cast(Rest, None), state)
    caches.ready.set()
    feed = list(events(order, pods, min_count or pods))
    for number, (_, obj) in enumerate(feed, 1):
        meta = obj["metadata"]
        meta["resourceVersion"] = str(number)
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
    cpu: list[float] = []
    for resource, obj in feed:
        start = time.process_time()
        caches.assume(resource, obj)
        cpu.append(time.process_time() - start)
    tenth = max(1, len(cpu) // 10)
    pending = state.pending.get("gang:default/big")
    return {
        "order": order,
        "pods": pods,
        "min_count": min_count or pods,
        "events": len(feed),
        "cpu_s": round(sum(cpu), 3),
        "cpu_per_event_first_tenth_median_us": round(statistics.median(cpu[:tenth]) * 1e6, 1),
        "cpu_per_event_last_tenth_median_us": round(statistics.median(cpu[-tenth:]) * 1e6, 1),
        "cpu_max_event_ms": round(max(cpu) * 1e3, 2),
        "gang_pending_pods": sum(s.count for s in pending.pod_sets) if pending else 0,
    }
