"""Hostile objects that reach the controller past the webhook (installed with
PHALANX_WEBHOOK_ENABLED=false, stored before the webhook was, or while its configuration
was deleted): a 10,000-pod gang, a queue tree far deeper than the webhook allows, a
queue cycle, a 1 MiB template. Each waits with its reason or is handled; the controller
keeps running and admits the ordinary job submitted after them. (With the webhook they
are refused before they are stored: tests/kube/test_webhook_hostile.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from controller.kube import resources as r
from controller.kube.rest import Obj, Rest
from tests.kube import controller_cluster as cluster
from tests.kube.controller_cluster import Running, running
from tests.kube.controller_env import crds, create, emulator, rest

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime


async def bound(rest: Rest, name: str, count: int) -> bool:
    pods = await cluster.items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={name}")
    return len(pods) == count and all(p["spec"].get("nodeName") for p in pods)


async def still_admitting(rest: Rest, running: Running, queue_name: str = "q") -> None:
    """An ordinary one-GPU job, submitted after the hostile objects, is bound; the
    controller's tasks are all still running."""
    await create(
        rest, r.GANG_JOBS, cluster.gang_job("ordinary", [("w", 1)], gpu=True, queue_name=queue_name)
    )
    await cluster.until(lambda: bound(rest, "ordinary", 1))
    assert running.tasks and not any(t.done() for t in running.tasks)


async def waiting_reason(rest: Rest, name: str) -> str:
    """The message of the job's condition once it has one, its phase Pending."""

    async def judged() -> bool:
        return bool(((await cluster.job(rest, name)).get("status") or {}).get("conditions"))

    await cluster.until(judged)
    status = (await cluster.job(rest, name))["status"]
    assert status["phase"] == "Pending"
    return " ".join(str(c.get("message")) for c in status["conditions"])


def chained_queues(depth: int) -> list[Obj]:
    """`level-1` (the root, with the GPUs) down to the leaf `level-<depth>`."""
    made = []
    for level in range(1, depth + 1):
        q = cluster.queue(f"level-{level}", devices__gpu=4)
        if level > 1:
            q["spec"]["parent"] = f"level-{level - 1}"
        made.append(q)
    return made


async def test_a_ten_thousand_pod_gang_waits_with_its_reason(crds: Rest, running: Running) -> None:
    await cluster.gpu_cluster(crds, nodes=2, gpus=2, queue_gpus=4)
    sets = [("a", 3334), ("b", 3333), ("c", 3333)]
    await create(crds, r.GANG_JOBS, cluster.gang_job("huge", sets, cpu="1m"))
    await running.start()
    assert await waiting_reason(crds, "huge") == (
        "can never fit: needs 10000 pods; the cluster has 220"
    )
    await still_admitting(crds, running)
    assert await cluster.items(crds, r.PODS, labelSelector="phalanx.dev/gang=huge") == []


async def test_a_queue_tree_forty_levels_deep_is_scheduled_through(
    crds: Rest, running: Running
) -> None:
    await cluster.gpu_cluster(crds, nodes=1, gpus=2)
    for q in chained_queues(40):
        await create(crds, r.QUEUES, q)
    await running.start()
    await still_admitting(crds, running, queue_name="level-40")


async def test_a_gang_on_a_queue_cycle_waits_and_the_rest_of_the_tree_runs(
    crds: Rest, running: Running
) -> None:
    await cluster.gpu_cluster(crds, nodes=1, gpus=2, queue_gpus=2)
    ring: list[dict[str, Any]] = [
        cluster.queue("ring-a", devices__gpu=2),
        cluster.queue("ring-b", devices__gpu=2),
    ]
    ring[0]["spec"]["parent"], ring[1]["spec"]["parent"] = "ring-b", "ring-a"
    for q in ring:
        await create(crds, r.QUEUES, q)
    await create(
        crds, r.GANG_JOBS, cluster.gang_job("looped", [("w", 1)], gpu=True, queue_name="ring-a")
    )
    await running.start()
    assert await waiting_reason(crds, "looped") == (
        "queue ring-a: ancestor ring-b is not usable: queue cycle: ring-b -> ring-a -> ring-b"
    )
    await still_admitting(crds, running)


async def test_a_one_mebibyte_template_is_admitted_and_bound(crds: Rest, running: Running) -> None:
    await cluster.gpu_cluster(crds, nodes=2, gpus=2, queue_gpus=4)
    fat = cluster.gang_job("fat", [("w", 2)], gpu=True)
    container = fat["spec"]["podSets"][0]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "BLOB", "value": "x" * (1 << 20)}]
    await create(crds, r.GANG_JOBS, fat)
    await running.start()
    await cluster.until(lambda: bound(crds, "fat", 2))
    await still_admitting(crds, running)
