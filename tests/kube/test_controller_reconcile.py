"""The reconciler's pure builders: pods and claims of a record, the torchrun environment,
condition transitions."""

from __future__ import annotations

from typing import Any

import pytest

from controller.kube import reconcile as rc
from controller.kube.commit import DELETE_PROTECTION
from controller.kube.translate import ADMISSION_ANNOTATION
from tests.kube.controller_cluster import gang_job, one_gpu_template

TEMPLATES = {"default/one-gpu": one_gpu_template()}


def admitted(job: dict[str, Any], devices_per_pod: int = 1) -> dict[str, Any]:
    """The job with a record placing pod i of every set on node n<i>."""
    job["metadata"] |= {"uid": "u1", "generation": 1}
    job["status"] = {
        "admission": {
            "admissionId": "a1",
            "queue": "q",
            "podSets": [
                {
                    "name": ps["name"],
                    "pods": [
                        {
                            "index": i,
                            "node": f"n{i}",
                            "claims": [
                                {
                                    "name": "gpu",
                                    "devices": [
                                        {
                                            "request": "gpu",
                                            "driver": "gpu.io",
                                            "pool": f"n{i}",
                                            "device": f"{ps['name']}-{d}",
                                        }
                                        for d in range(devices_per_pod)
                                    ],
                                }
                            ],
                        }
                        for i in range(ps["replicas"])
                    ],
                }
                for ps in job["spec"]["podSets"]
            ],
        }
    }
    return job


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_pods_are_ranked_by_pod_set_then_index_with_deterministic_names() -> None:
    plans = rc.plan(admitted(gang_job("t", [("master", 1), ("worker", 2)], gpu=True)), TEMPLATES)
    assert [p.name for p in plans] == ["t-master-0", "t-worker-0", "t-worker-1"]
    assert [env(p.manifest)["NODE_RANK"] for p in plans] == ["0", "1", "2"]
    assert [p.node for p in plans] == ["n0", "n0", "n1"]


def test_ranks_count_one_process_per_device() -> None:
    plans = rc.plan(admitted(gang_job("t", [("w", 3)], gpu=True), devices_per_pod=2), TEMPLATES)
    assert [(env(p.manifest)["RANK"], env(p.manifest)["LOCAL_WORLD_SIZE"]) for p in plans] == [
        ("0", "2"),
        ("2", "2"),
        ("4", "2"),
    ]
    assert {env(p.manifest)["WORLD_SIZE"] for p in plans} == {"6"}


def test_master_port_comes_from_the_spec_and_user_variables_are_kept() -> None:
    job = gang_job("t", [("w", 2)], masterPort=1234)
    job["spec"]["podSets"][0]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "WORLD_SIZE", "value": "mine"}
    ]
    plans = rc.plan(admitted(job), TEMPLATES)
    assert env(plans[1].manifest)["MASTER_PORT"] == "1234"
    assert env(plans[1].manifest)["WORLD_SIZE"] == "mine"
    assert env(plans[1].manifest)["MASTER_ADDR"] == "t-w-0.t.default.svc"


def test_claims_are_made_protected_for_their_admission_and_pods_name_them() -> None:
    (plan, *_) = rc.plan(admitted(gang_job("t", [("w", 1)], gpu=True)), TEMPLATES)
    (claim,) = plan.claims
    meta = claim.manifest["metadata"]
    assert (meta["name"], meta["finalizers"]) == ("t-w-0-gpu", [DELETE_PROTECTION])
    assert meta["annotations"][ADMISSION_ANNOTATION] == "a1"
    assert plan.manifest["spec"]["resourceClaims"] == [
        {"name": "gpu", "resourceClaimName": "t-w-0-gpu"}
    ]
    assert [r["device"] for r in claim.results] == ["w-0"]


def test_a_missing_claim_template_cannot_be_materialised() -> None:
    with pytest.raises(rc.CannotMaterialise, match="ResourceClaimTemplate default/one-gpu"):
        rc.plan(admitted(gang_job("t", [("w", 1)], gpu=True)), {})


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    job = admitted(gang_job("t", [("w", 1)]))
    first, changed = rc.with_conditions(job, [rc.Transition("Queued", True, "Waiting", "a")], "t1")
    assert [t.type for t in changed] == ["Queued"]
    job["status"]["conditions"] = first
    second, changed = rc.with_conditions(job, [rc.Transition("Queued", True, "Waiting", "b")], "t2")
    assert changed == []
    assert (second[0]["message"], second[0]["lastTransitionTime"]) == ("b", "t1")
    third, changed = rc.with_conditions(job, [rc.Transition("Queued", False, "Admitted")], "t3")
    assert [t.type for t in changed] == ["Queued"]
    assert (third[0]["status"], third[0]["lastTransitionTime"]) == ("False", "t3")
    assert third[0]["observedGeneration"] == 1
