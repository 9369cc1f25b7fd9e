"""GangJob lifecycle on the emulator: eviction from a lost node, preemption, the readiness
timeout with its backoff, and Queue status. Pods get the DisruptionTarget condition before
they are deleted; the job gets Evicted or Preempted and is requeued whole."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from controller.kube import resources as r
from controller.kube.informer import Informer
from controller.kube.loop import EVENTS
from controller.kube.queue_status import status_patch
from controller.kube.reconcile import now_time, requeue_delay
from controller.kube.reconcile import seconds as rc_seconds
from controller.kube.rest import MERGE_PATCH, Obj, Rest
from controller.kube.translate import admission_of
from controller.settings import Settings
from tests.kube.controller_cluster import (
    NAMESPACE,
    add_node,
    gang_job,
    items,
    job,
    queue,
    running,
    until,
)
from tests.kube.controller_env import crds, create, emulator, rest

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime


class Disruptions:
    """The DisruptionTarget reason each pod carried in any watch event, by pod name."""

    def __init__(self, rest: Rest) -> None:
        self.seen: dict[str, str] = {}
        self.informer = Informer(rest, r.PODS)
        self.informer.add_handler(self._on_pod)
        self.task = asyncio.create_task(self.informer.run())

    def _on_pod(self, kind: str, old: Obj | None, new: Obj) -> None:
        for c in (new.get("status") or {}).get("conditions") or ():
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
                self.seen[new["metadata"]["name"]] = c["reason"]


@pytest.fixture
async def disruptions(crds: Rest) -> object:
    watch = Disruptions(crds)
    yield watch
    watch.task.cancel()


def pods_deleted(rest: Rest, admission: str | None = None):  # type: ignore[no-untyped-def]
    """Every pod (of `admission`, if given) gone or being deleted (no kubelet here finishes
    their graceful deletion)."""

    async def check() -> bool:
        pods = await items(rest, r.PODS)
        if admission is not None:
            pods = [p for p in pods if admission_of(p) == admission]
        return all(p["metadata"].get("deletionTimestamp") for p in pods)

    return check


def condition(obj: Obj, kind: str) -> Obj:
    return {c["type"]: c for c in obj["status"].get("conditions") or ()}.get(kind) or {}


def phase_is(rest: Rest, name: str, phase: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return ((await job(rest, name)).get("status") or {}).get("phase") == phase

    check.__name__ = f"{name}_is_{phase}"
    return check


def pods_bound(rest: Rest, name: str, count: int = 2):  # type: ignore[no-untyped-def]
    """The gang's pods made and bound (phase Admitted comes as soon as the record is
    written, before its pods exist)."""

    async def check() -> bool:
        pods = await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={name}")
        return len(pods) == count and all(p["spec"].get("nodeName") for p in pods)

    check.__name__ = f"{name}_bound"
    return check


async def two_node_gang(rest: Rest, name: str = "train", **spec: object) -> None:
    """A 2-pod gang that needs both of two one-slot nodes."""
    for n in ("n0", "n1"):
        await add_node(rest, n)
    await create(rest, r.QUEUES, queue())
    await create(rest, r.GANG_JOBS, gang_job(name, [("w", 2)], **spec))


async def set_node_ready(rest: Rest, name: str, status: str, since: str | None = None) -> None:
    condition: Obj = {"type": "Ready", "status": status}
    if since is not None:
        condition["lastTransitionTime"] = since
    body = {"status": {"conditions": [condition]}}
    await rest.request(
        "PATCH", r.NODES.path(name=name, sub="status"), body=body, content_type=MERGE_PATCH
    )


async def test_a_deleted_node_evicts_its_gang_whole_and_requeues_it(
    crds: Rest, running, disruptions: Disruptions
) -> None:
    await two_node_gang(crds)
    await running.start()
    await until(pods_bound(crds, "train"))
    await crds.request("DELETE", r.NODES.path(name="n0"))
    await until(phase_is(crds, "train", "Pending"))
    evicted = condition(await job(crds, "train"), "Evicted")
    assert (evicted["status"], evicted["reason"]) == ("True", "NodeDeleted")
    assert condition(await job(crds, "train"), "Admitted")["status"] == "False"

    await until(pods_deleted(crds))
    assert disruptions.seen == {"train-w-0": "PhalanxNodeLost", "train-w-1": "PhalanxNodeLost"}


async def test_a_node_not_ready_evicts_its_gang_only_after_the_grace_period(
    crds: Rest, running, disruptions: Disruptions
) -> None:
    await two_node_gang(crds)
    await running.start()
    await until(phase_is(crds, "train", "Admitted"))
    await set_node_ready(crds, "n1", "False")
    await asyncio.sleep(30)
    assert (await job(crds, "train"))["status"]["phase"] == "Admitted"
    await asyncio.sleep(15)
    train = await job(crds, "train")
    assert train["status"]["phase"] == "Pending"
    assert condition(train, "Evicted")["reason"] == "NodeNotReady"


async def test_a_node_ready_again_within_the_grace_period_evicts_nothing(
    crds: Rest, running
) -> None:
    await two_node_gang(crds)
    await running.start()
    await until(phase_is(crds, "train", "Admitted"))
    await set_node_ready(crds, "n1", "Unknown")
    await asyncio.sleep(30)
    await set_node_ready(crds, "n1", "True")
    await asyncio.sleep(60)
    train = await job(crds, "train")
    assert train["status"]["phase"] == "Admitted" and not condition(train, "Evicted")


async def test_preemption_victims_get_preempted_and_their_pods_a_disruption_target(
    crds: Rest, running, disruptions: Disruptions
) -> None:
    await two_node_gang(crds, "low", priority=0)
    await running.start(Settings.load(preemption="priority"))
    await until(pods_bound(crds, "low"))
    await create(crds, r.GANG_JOBS, gang_job("high", [("w", 2)], priority=100))
    await until(phase_is(crds, "high", "Admitted"))
    low = await job(crds, "low")
    preempted = condition(low, "Preempted")
    assert (low["status"]["phase"], preempted["status"]) == ("Pending", "True")
    assert "high" in preempted["message"]
    assert disruptions.seen == {
        "low-w-0": "PreemptionByScheduler",
        "low-w-1": "PreemptionByScheduler",
    }


async def stop_pods(rest: Rest) -> None:
    """What the kubelet does for pods being deleted: stop them and remove them."""
    for pod in await items(rest, r.PODS):
        await rest.request(
            "DELETE",
            r.PODS.path(NAMESPACE, pod["metadata"]["name"]),
            query={"gracePeriodSeconds": 0},
        )


async def make_ready(rest: Rest, name: str) -> None:
    """What a kubelet reports once a pod's containers are ready."""
    for pod in await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={name}"):
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        await rest.request(
            "PUT", r.PODS.path(NAMESPACE, pod["metadata"]["name"], "status"), body=pod
        )


async def test_a_gang_not_ready_in_time_is_released_and_backs_off_before_readmission(
    crds: Rest, running, disruptions: Disruptions
) -> None:
    await two_node_gang(crds, readyTimeoutSeconds=30)
    await running.start()
    await until(phase_is(crds, "train", "Admitted"))
    first = (await job(crds, "train"))["status"]["admission"]["admissionId"]
    await asyncio.sleep(25)
    assert (await job(crds, "train"))["status"]["admission"]["admissionId"] == first
    await until(phase_is(crds, "train", "Pending"), timeout=10)
    train = await job(crds, "train")
    assert train["status"]["requeueState"]["count"] == 1
    assert condition(train, "Queued")["reason"] == "ReadyTimeout"
    assert set(disruptions.seen.values()) == {"PhalanxReadyTimeout"}
    await until(pods_deleted(crds))
    await stop_pods(crds)
    await asyncio.sleep(5)
    assert (await job(crds, "train"))["status"]["phase"] == "Pending"
    await until(phase_is(crds, "train", "Admitted"), timeout=10)
    again = await job(crds, "train")
    assert again["status"]["admission"]["admissionId"] != first


async def test_a_gang_ready_in_time_keeps_its_admission(crds: Rest, running) -> None:
    await two_node_gang(crds, readyTimeoutSeconds=30)
    await running.start()
    await until(phase_is(crds, "train", "Admitted"))

    async def bound() -> bool:
        pods = await items(crds, r.PODS)
        return len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods)

    await until(bound)
    await make_ready(crds, "train")
    await asyncio.sleep(60)
    assert (await job(crds, "train"))["status"]["phase"] == "Running"


async def set_pod_phase(rest: Rest, name: str, phase: str) -> None:
    pod = await rest.get(r.PODS.path(NAMESPACE, name))
    pod["status"] = {**(pod.get("status") or {}), "phase": phase}
    await rest.request("PUT", r.PODS.path(NAMESPACE, name, "status"), body=pod)


async def running_gang(rest: Rest, running, name: str = "train", **spec: object) -> None:  # type: ignore[no-untyped-def]
    """A 2-pod gang admitted, bound and Ready."""
    await two_node_gang(rest, name, **spec)
    await running.start()

    async def bound() -> bool:
        pods = await items(rest, r.PODS)
        return len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods)

    await until(bound)
    await make_ready(rest, name)
    await until(phase_is(rest, name, "Running"))


async def test_a_suspended_gang_is_released_and_its_pods_get_a_disruption_target(
    crds: Rest, running, disruptions: Disruptions
) -> None:
    await running_gang(crds, running)
    await crds.request(
        "PATCH",
        r.GANG_JOBS.path(NAMESPACE, "train"),
        body={"spec": {"suspend": True}},
        content_type=MERGE_PATCH,
    )
    await until(phase_is(crds, "train", "Suspended"))
    train = await job(crds, "train")
    assert "admission" not in train["status"]
    assert condition(train, "Admitted")["reason"] == "Suspended"
    await until(pods_deleted(crds))
    assert disruptions.seen == {"train-w-0": "PhalanxSuspended", "train-w-1": "PhalanxSuspended"}


async def test_a_failed_pod_restarts_the_gang_whole_and_its_others_get_a_disruption_target(
    crds: Rest, running, disruptions: Disruptions
) -> None:
    await running_gang(crds, running, failurePolicy={"maxRestarts": 1})
    first = (await job(crds, "train"))["status"]["admission"]["admissionId"]
    await set_pod_phase(crds, "train-w-1", "Failed")

    async def restarted() -> bool:
        status = (await job(crds, "train")).get("status") or {}
        return (
            status.get("restarts") == 1
            and status.get("admission", {}).get("admissionId", first) != first
        )

    # released whole, and at once admitted again (on the room its own pods let go, which
    # its new pods wait for: no kubelet here ends the old ones' deletion)
    await until(restarted)
    released = [
        (e["reason"], e["note"])
        for e in await items(crds, EVENTS)
        if e.get("action") == "NotAdmitted"
    ]
    assert released == [("Restarting", "pod train-w-1 failed; restart 1 of 1")]
    await until(pods_deleted(crds, admission=first))
    assert disruptions.seen == {"train-w-0": "PhalanxGangMemberFailed"}


async def test_a_failed_pod_with_no_restarts_left_fails_the_gang_and_stops_the_others(
    crds: Rest, running, disruptions: Disruptions
) -> None:
    await running_gang(crds, running)
    await set_pod_phase(crds, "train-w-0", "Failed")
    await until(phase_is(crds, "train", "Failed"))
    assert condition(await job(crds, "train"), "Failed")["message"] == (
        "pod train-w-0 failed; no restarts left"
    )
    await until(pods_deleted(crds))
    assert disruptions.seen == {"train-w-1": "PhalanxGangMemberFailed"}


def stamp(seconds: float) -> str:
    return now_time(datetime.fromtimestamp(seconds, UTC))


async def test_a_readiness_timeout_resumes_after_a_restart_from_the_admission_time(
    crds: Rest, running
) -> None:
    await two_node_gang(crds, readyTimeoutSeconds=30)
    await running.start()
    await until(phase_is(crds, "train", "Admitted"), step=0.05)
    loop = asyncio.get_running_loop()
    admitted = loop.time()
    await asyncio.sleep(20)
    await running.crash()
    await asyncio.sleep(5)
    await running.start()
    await until(phase_is(crds, "train", "Pending"), step=0.05)
    assert 29 <= loop.time() - admitted <= 31
    assert condition(await job(crds, "train"), "Queued")["reason"] == "ReadyTimeout"


async def test_a_gang_ready_once_is_not_timed_out_by_a_new_leader(crds: Rest, running) -> None:
    await two_node_gang(crds, readyTimeoutSeconds=30)
    await running.start()

    async def bound() -> bool:
        pods = await items(crds, r.PODS)
        return len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods)

    await until(bound)
    await make_ready(crds, "train")
    await until(lambda: _pods_ready_recorded(crds))
    await running.crash()
    await make_unready(crds, "train")
    await running.start()
    await asyncio.sleep(60)
    assert (await job(crds, "train"))["status"].get("admission")


async def _pods_ready_recorded(rest: Rest) -> bool:
    return condition(await job(rest, "train"), "PodsReady").get("status") == "True"


async def make_unready(rest: Rest, name: str) -> None:
    for pod in await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={name}"):
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
        await rest.request(
            "PUT", r.PODS.path(NAMESPACE, pod["metadata"]["name"], "status"), body=pod
        )


async def test_a_node_not_ready_grace_resumes_after_a_restart_from_the_nodes_condition(
    crds: Rest, running
) -> None:
    await two_node_gang(crds)
    await running.start()
    await until(phase_is(crds, "train", "Admitted"))
    loop = asyncio.get_running_loop()
    lost = loop.time()
    await set_node_ready(crds, "n1", "False", since=stamp(running.clock()))
    await asyncio.sleep(20)
    await running.crash()
    await asyncio.sleep(5)
    await running.start()
    await until(phase_is(crds, "train", "Pending"), step=0.05)
    assert 39 <= loop.time() - lost <= 42
    assert condition(await job(crds, "train"), "Evicted")["reason"] == "NodeNotReady"


async def test_a_requeue_backoff_survives_a_restart(crds: Rest, running) -> None:
    await two_node_gang(crds, readyTimeoutSeconds=30)
    await running.start()
    await until(phase_is(crds, "train", "Admitted"))
    first = (await job(crds, "train"))["status"]["admission"]["admissionId"]
    await until(phase_is(crds, "train", "Pending"), step=0.05)
    loop = asyncio.get_running_loop()
    released = loop.time()
    await running.crash()
    back_at = rc_seconds((await job(crds, "train"))["status"]["requeueState"]["requeueAt"])
    assert 9 <= back_at - running.clock() <= 10
    await stop_pods(crds)
    await running.start()
    await asyncio.sleep(7)
    assert (await job(crds, "train"))["status"]["phase"] == "Pending"
    await until(phase_is(crds, "train", "Admitted"), step=0.05)
    assert 9 <= loop.time() - released <= 12
    assert (await job(crds, "train"))["status"]["admission"]["admissionId"] != first


def test_the_requeue_backoff_doubles_up_to_its_cap() -> None:
    assert [requeue_delay(n, 10, 60) for n in (1, 2, 3, 4, 100)] == [10, 20, 40, 60, 60]


async def test_queue_status_counts_usage_pending_and_admitted_gangs(crds: Rest, running) -> None:
    await two_node_gang(crds)
    await create(crds, r.GANG_JOBS, gang_job("later", [("w", 3)]))
    await running.start()

    async def counted() -> bool:
        status = (await crds.get(r.QUEUES.path(name="q"))).get("status") or {}
        return (status.get("admittedGangs"), status.get("pendingGangs")) == (1, 1)

    await until(counted)
    status = (await crds.get(r.QUEUES.path(name="q")))["status"]
    assert status["usage"] == {"cpu": "200m", "pods": "2"}
    assert status["borrowed"] == {}


def test_an_unchanged_queue_status_is_not_written_again() -> None:
    wanted: Obj = {"usage": {"cpu": "1"}, "borrowed": {}, "pendingGangs": 0, "admittedGangs": 1}
    assert status_patch({"status": dict(wanted)}, wanted) is None
    patch = status_patch({"status": {**wanted, "usage": {"cpu": "1", "pods": "1"}}}, wanted)
    assert patch is not None and patch["status"]["usage"] == {"cpu": "1", "pods": None}
