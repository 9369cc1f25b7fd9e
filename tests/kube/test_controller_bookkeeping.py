"""A long-running controller keeps no bookkeeping of gangs that are gone: once every
GangJob is deleted and every foreign gang is left without pods and record, each per-gang
and per-object structure of the loop, the caches and the foreign gangs is empty again."""

from __future__ import annotations

import asyncio

import pytest

from controller.kube import resources as r
from controller.kube.rest import Obj, Rest
from tests.kube.controller_cluster import (
    NAMESPACE,
    gang_job,
    gpu_cluster,
    items,
    running,
    until,
)
from tests.kube.controller_env import crds, create, emulator, rest
from tests.kube.test_controller_foreign import (
    group_pod,
    indexed_job_pod,
    named_claim,
    pod_group,
)

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime

ROUNDS = 3


async def submit_round(rest: Rest, n: int) -> None:
    """Three 2-pod gangs: a GangJob, a label gang whose pods name their claims, a
    PodGroup gang whose pods get claims from a template."""
    await create(rest, r.GANG_JOBS, gang_job(f"job{n}", [("w", 2)], gpu=True))
    for i in range(2):
        await create(rest, r.RESOURCE_CLAIMS, named_claim(f"label{n}-c{i}"))
        pod = indexed_job_pod(f"label{n}", i, 2)
        pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": f"label{n}-c{i}"}]
        await create(rest, r.PODS, pod)
    await create(rest, r.POD_GROUPS, pod_group(f"pg{n}", 2))
    for i in range(2):
        await create(rest, r.PODS, group_pod(f"pg{n}-{i}", f"pg{n}"))


async def finish(rest: Rest, pod: Obj) -> None:
    pod["status"] = {**(pod.get("status") or {}), "phase": "Succeeded"}
    await rest.request("PUT", r.PODS.path(NAMESPACE, pod["metadata"]["name"], "status"), body=pod)


async def run_to_the_end(rest: Rest) -> None:
    """Every pod bound runs to completion; then what its owner would clean up goes:
    the foreign pods (the record goes with them), their named claims and PodGroups, and
    the GangJobs."""

    async def all_bound() -> bool:
        pods = await items(rest, r.PODS)
        return len(pods) == 6 and all(p["spec"].get("nodeName") for p in pods)

    await until(all_bound)
    for pod in await items(rest, r.PODS):
        await finish(rest, pod)
    for resource, objs in (
        (r.GANG_JOBS, await items(rest, r.GANG_JOBS)),
        (r.POD_GROUPS, await items(rest, r.POD_GROUPS)),
    ):
        for obj in objs:
            await rest.request("DELETE", resource.path(NAMESPACE, obj["metadata"]["name"]))
    for pod in await items(rest, r.PODS):
        if not pod["metadata"].get("ownerReferences"):
            await rest.request("DELETE", r.PODS.path(NAMESPACE, pod["metadata"]["name"]))
    for claim in await items(rest, r.RESOURCE_CLAIMS):
        if not claim["metadata"].get("ownerReferences"):
            await rest.request(
                "DELETE", r.RESOURCE_CLAIMS.path(NAMESPACE, claim["metadata"]["name"])
            )

    async def nothing_left() -> bool:
        left = [await items(rest, res) for res in (r.PODS, r.GANG_JOBS, r.POD_GROUPS)]
        left.append(await items(rest, r.RESOURCE_CLAIMS))
        left.append(await items(rest, r.CONFIG_MAPS, labelSelector="phalanx.dev/record=gang"))
        return not any(left)

    await until(nothing_left)


async def test_gangs_run_through_their_whole_life_leave_no_bookkeeping_behind(
    crds: Rest, running
) -> None:
    await gpu_cluster(crds, nodes=1, gpus=6, queue_gpus=6)
    controller = await running.start()
    for n in range(ROUNDS):
        await submit_round(crds, n)
        await run_to_the_end(crds)
    await asyncio.sleep(10)

    left = {name: size for name, size in controller.bookkeeping().items() if size}
    assert left == {}
    state = controller.caches.state
    assert (state.pending, state.admitted, state.foreign_pods, state.foreign_claims) == (
        {},
        {},
        {},
        {},
    )
