"""The commit protocol against the emulator: the commit point with its precondition,
idempotent steps, and roll-forward after a fail-stop at every write in turn."""

from __future__ import annotations

from typing import Any

import pytest

from controller.kube import resources as r
from controller.kube.commit import (
    DELETE_PROTECTION,
    ClaimStep,
    CommitBroken,
    CommitConflict,
    bind,
    materialise,
    write_admission,
)
from controller.kube.rest import KubeError, Obj, Rest
from emulator import Emulator
from tests.kube.controller_env import (
    create,
    emulator,
    gangjob,
    load_crds,
    node,
    owned_by,
    pod,
    record_for,
    rest,
)

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime

PLACES = [("n1", "gpu-0"), ("n2", "gpu-0")]
WRITES = 1 + 3 * len(PLACES)
"""The record, then per pod: claim finalizer, claim status, binding."""


@pytest.fixture
async def job(emulator: Emulator, rest: Rest) -> Obj:
    await load_crds(emulator)
    for name in ("n1", "n2"):
        await create(rest, r.NODES, node(name))
    created = await create(rest, r.GANG_JOBS, gangjob("train"))
    for i in range(len(PLACES)):
        await create(rest, r.PODS, pod(f"train-w-{i}", None, owner=created))
        await create(
            rest,
            r.RESOURCE_CLAIMS,
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {
                    "name": f"train-w-{i}-gpu",
                    "namespace": "default",
                    "ownerReferences": [owned_by(created)],
                },
                "spec": {
                    "devices": {
                        "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]
                    }
                },
            },
        )
    return created


async def fresh(rest: Rest, resource: r.Resource, name: str) -> Obj:
    return await rest.get(resource.path("default", name))


async def commit(rest: Rest) -> None:
    """One run of the protocol on freshly read objects (what a new leader does)."""
    record = record_for(PLACES)
    await write_admission(rest, await fresh(rest, r.GANG_JOBS, "train"), record)
    steps, bindings = [], []
    for i, (node_name, device) in enumerate(PLACES):
        p = await fresh(rest, r.PODS, f"train-w-{i}")
        claim = await fresh(rest, r.RESOURCE_CLAIMS, f"train-w-{i}-gpu")
        result = {"request": "gpu", "driver": "gpu.io", "pool": node_name, "device": device}
        steps.append(ClaimStep(claim, (result,), p, node_name))
        bindings.append((p, node_name))
    await materialise(rest, steps, bindings)


async def assert_committed(rest: Rest) -> None:
    job = await fresh(rest, r.GANG_JOBS, "train")
    assert job["status"]["admission"]["admissionId"] == "a1"
    for i, (node_name, device) in enumerate(PLACES):
        p = await fresh(rest, r.PODS, f"train-w-{i}")
        claim = await fresh(rest, r.RESOURCE_CLAIMS, f"train-w-{i}-gpu")
        assert p["spec"]["nodeName"] == node_name
        assert claim["metadata"]["finalizers"] == [DELETE_PROTECTION]
        results = claim["status"]["allocation"]["devices"]["results"]
        assert [(x["pool"], x["device"]) for x in results] == [(node_name, device)]
        assert [c["uid"] for c in claim["status"]["reservedFor"]] == [p["metadata"]["uid"]]


async def test_a_commit_makes_record_claims_and_bindings_true(job: Obj, rest: Rest) -> None:
    await commit(rest)
    await assert_committed(rest)


async def test_the_commit_point_refuses_a_job_changed_since_the_decision(
    job: Obj, rest: Rest
) -> None:
    patch = {"metadata": {"labels": {"touched": "yes"}}}
    await rest.request(
        "PATCH",
        r.GANG_JOBS.path("default", "train"),
        body=patch,
        content_type="application/merge-patch+json",
    )
    with pytest.raises(CommitConflict):
        await write_admission(rest, job, record_for(PLACES))


async def test_a_second_commit_of_the_same_admission_writes_nothing(
    job: Obj, rest: Rest, emulator: Emulator
) -> None:
    await commit(rest)
    emulator.fail_after_writes(0)
    await commit(rest)
    await assert_committed(rest)


@pytest.mark.parametrize("writes", range(WRITES))
async def test_a_commit_stopped_after_any_write_rolls_forward(
    job: Obj, rest: Rest, emulator: Emulator, writes: int
) -> None:
    emulator.fail_after_writes(writes)
    with pytest.raises(KubeError) as caught:
        await commit(rest)
    assert caught.value.status == 503
    emulator.clear_faults()
    await commit(rest)
    await assert_committed(rest)


async def test_a_pod_bound_elsewhere_breaks_the_commit(job: Obj, rest: Rest) -> None:
    p = await fresh(rest, r.PODS, "train-w-0")
    await bind(rest, p, "n2")
    with pytest.raises(CommitBroken):
        await bind(rest, p, "n1")


async def test_a_claim_allocated_other_devices_breaks_the_commit(job: Obj, rest: Rest) -> None:
    claim: dict[str, Any] = await fresh(rest, r.RESOURCE_CLAIMS, "train-w-0-gpu")
    other = {"request": "gpu", "driver": "gpu.io", "pool": "n1", "device": "gpu-1"}
    claim["status"] = {"allocation": {"devices": {"results": [other]}}}
    await rest.request(
        "PUT", r.RESOURCE_CLAIMS.path("default", "train-w-0-gpu", "status"), body=claim
    )
    with pytest.raises(CommitBroken):
        await commit(rest)
