"""deploy/samples: a queue tree for three teams under one parent with borrowing, a
DeviceClass and a PyTorch DDP GangJob, accepted as they are by the API server (the
emulator applies our CRD schemas, CEL rules included) and by the Kubernetes 1.36
schemas. (That the controller admits the sample job is test_rbac_calls.py's run.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client, config

from controller.api.gangjob import GangJob
from controller.api.queue import Queue, validate_queue_tree
from controller.kube.rest import KubeError, Rest
from emulator import Emulator
from tests.deploy.render import Obj, schema_problems
from tests.deploy.scenario import CRDS, SAMPLES, apply, create
from tests.manifests import edited

FILES = ("device-class.yaml", "queues.yaml", "pytorch-ddp.yaml")


def sample(name: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d]


def everything() -> list[Obj]:
    return [o for name in FILES for o in sample(name)]


@pytest.fixture
async def api() -> AsyncIterator[Rest]:
    """A client of an emulator serving our CRDs, with the teams' namespaces."""
    async with Emulator(controllers=True) as emu:
        for crd in sorted(CRDS.glob("*.yaml")):
            await emu.load(crd)
        conf = client.Configuration()
        await config.load_kube_config(
            config_file=str(emu.kubeconfig_path), client_configuration=conf
        )
        async with client.ApiClient(conf) as api_client:
            rest = Rest(api_client)
            for ns in ("team-a", "team-b", "team-c"):
                await create(
                    rest, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                )
            yield rest


async def test_the_api_server_accepts_every_sample(api: Rest) -> None:
    for name in FILES:
        await apply(api, SAMPLES / name)
    queues = await api.get("/apis/phalanx.dev/v1alpha1/queues")
    jobs = await api.get("/apis/phalanx.dev/v1alpha1/namespaces/team-a/gangjobs")
    assert sorted(q["metadata"]["name"] for q in queues["items"]) == [
        "research",
        "team-a",
        "team-b",
        "team-c",
    ]
    assert [j["metadata"]["name"] for j in jobs["items"]] == ["llama-ddp"]


async def test_the_api_server_refuses_a_sample_edited_wrongly(api: Rest) -> None:
    job = next(o for o in sample("pytorch-ddp.yaml") if o["kind"] == "GangJob")
    both = edited(job, "spec.priorityClassName", "high")
    with pytest.raises(KubeError) as refused:
        await create(api, both)
    assert refused.value.status == 422
    assert "set either priority or priorityClassName, not both" in refused.value.message


def test_the_built_in_samples_match_the_kubernetes_1_36_schema() -> None:
    built_in = [o for o in everything() if not o["apiVersion"].startswith("phalanx.dev/")]
    assert {o["kind"] for o in built_in} == {"DeviceClass", "ResourceClaimTemplate"}
    assert schema_problems(built_in) == []


def test_three_teams_share_one_parent_and_may_borrow() -> None:
    queues = [Queue.from_manifest(q) for q in sample("queues.yaml")]
    validate_queue_tree(queues)
    teams = [q for q in queues if q.spec.parent is not None]
    assert {q.spec.parent for q in teams} == {"research"} and len(teams) == 3
    for team in teams:
        gpu = next(item for item in team.spec.quota if item.resource == "devices/gpu")
        assert gpu.borrowing_limit is not None
        assert team.spec.namespace_selector is not None
        assert team.spec.namespace_selector.match_labels == {
            "kubernetes.io/metadata.name": team.metadata.name
        }


def test_the_ddp_job_runs_torchrun_on_its_own_teams_queue() -> None:
    job_manifest: dict[str, Any] = next(
        o for o in sample("pytorch-ddp.yaml") if o["kind"] == "GangJob"
    )
    job = GangJob.from_manifest(job_manifest)
    assert job.spec.queue_name == job.metadata.namespace == "team-a"
    [trainer] = job_manifest["spec"]["podSets"][0]["template"]["spec"]["containers"]
    assert trainer["command"] == ["torchrun"]
    for variable in ("NNODES", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        assert any(f"$({variable})" in arg for arg in trainer["args"]), variable


def test_every_sample_file_is_documented_and_tested() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.yaml")) == sorted(FILES)
    assert isinstance(SAMPLES, Path)
