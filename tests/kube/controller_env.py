"""Fixtures for controller tests: an emulator on real HTTP and a kubernetes-asyncio client.

Test modules import the fixtures they use (`from tests.kube.controller_env import ...`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from controller.kube.resources import Resource
from controller.kube.rest import Obj, Rest
from controller.kube.translate import ADMISSION_ANNOTATION
from emulator import Emulator

CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
GANG_API = "phalanx.dev/v1alpha1"
CRDS = Path(__file__).parents[2] / "crds"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(controllers=True) as emu:
        yield emu


@asynccontextmanager
async def rest_client(emulator: Emulator) -> AsyncIterator[Rest]:
    """The controller's client (kubernetes-asyncio) to `emulator`."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(emulator.kubeconfig_path), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api_client:
        yield Rest(api_client)


@pytest.fixture
async def rest(emulator: Emulator) -> AsyncIterator[Rest]:
    async with rest_client(emulator) as kube:
        yield kube


async def load_crds(emulator: Emulator) -> None:
    for manifest in sorted(CRDS.glob("*.yaml")):
        await emulator.load(manifest)


@pytest.fixture
async def crds(emulator: Emulator, rest: Rest) -> Rest:
    """The client, on an emulator serving our CRDs."""
    await load_crds(emulator)
    return rest


def config_map(name: str, namespace: str = "default", **data: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data or {"k": "v"},
    }


async def create(rest: Rest, resource: Resource, obj: dict[str, Any]) -> Obj:
    namespace = obj["metadata"].get("namespace")
    return await rest.request("POST", resource.path(namespace), body=obj)


def node(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def gangjob(name: str, replicas: int = 2) -> Obj:
    pod_spec = {
        "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
    }
    return {
        "apiVersion": GANG_API,
        "kind": "GangJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "queueName": "q",
            "podSets": [{"name": "w", "replicas": replicas, "template": {"spec": pod_spec}}],
        },
    }


def pod(name: str, node_name: str | None, owner: Obj | None = None, cpu: str = "1") -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if owner is not None:
        meta["ownerReferences"] = [owned_by(owner)]
        meta["annotations"] = {ADMISSION_ANNOTATION: "a1"}
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def owned_by(job: Obj) -> dict[str, Any]:
    return {
        "apiVersion": GANG_API,
        "kind": "GangJob",
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
    }


def record_for(pods: list[tuple[str, str]]) -> Obj:
    """An admission record of gang `w` pods on (node, device) each."""
    return {
        "admissionId": "a1",
        "queue": "q",
        "podSets": [
            {
                "name": "w",
                "pods": [
                    {
                        "index": i,
                        "node": node_name,
                        "claims": [
                            {
                                "name": "gpu",
                                "devices": [
                                    {
                                        "request": "gpu",
                                        "driver": "gpu.io",
                                        "pool": node_name,
                                        "device": device,
                                    }
                                ],
                            }
                        ],
                    }
                    for i, (node_name, device) in enumerate(pods)
                ],
            }
        ],
        "quotaCharged": {"cpu": "2", "pods": "2", "devices/gpu": "2"},
    }
