"""Fixtures for controller tests: an emulator on real HTTP and a kubernetes-asyncio client.

Test modules import the fixtures they use (`from tests.kube.controller_env import ...`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from controller.kube.resources import Resource
from controller.kube.rest import Obj, Rest
from emulator import Emulator

CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", True)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(controllers=True) as emu:
        yield emu


@pytest.fixture
async def rest(emulator: Emulator) -> AsyncIterator[Rest]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(emulator.kubeconfig_path), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api_client:
        yield Rest(api_client)


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
