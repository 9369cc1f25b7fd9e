"""A small JSON client for the emulator's HTTP API, and a fixture-friendly way to start one;
the `emu` and `http` fixtures (an emulator, and a raw session to it with a namespace `t`
labelled `tier: apps`) for tests of the HTTP API itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from emulator import Emulator

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
CLAIM_FINALIZER = "resource.kubernetes.io/delete-protection"


class Client:
    def __init__(self, emulator: Emulator, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type} if body is not None else {}
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method, path, params=query or {}, data=data, headers=headers
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """The answer of a call that must succeed (2xx)."""
        status, answer = await self.call(method, path, body, **kwargs)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    async def get(self, path: str) -> Obj | None:
        status, answer = await self.call("GET", path)
        return answer if status == 200 else None

    async def watch(self, path: str, query: dict[str, str]) -> tuple[int, list[Obj]]:
        async with self.session.get(path, params={"watch": "true", **query}) as response:
            events = [json.loads(line) async for line in response.content if line.strip()]
            return response.status, events


def session(emulator: Emulator) -> aiohttp.ClientSession:
    """An HTTP session to the emulator, with its token."""
    return aiohttp.ClientSession(
        emulator.url, headers={"Authorization": f"Bearer {emulator.token}"}
    )


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[Client]:
    async with Emulator(**options) as emulator, session(emulator) as http:
        yield Client(emulator, http)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with session(emu) as http:
        labelled = {**namespace("t"), "metadata": {"name": "t", "labels": {"tier": "apps"}}}
        assert (await http.post("/api/v1/namespaces", json=labelled)).status == 201
        yield http


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}], **spec},
    }


def configmap(name: str, **metadata: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **metadata}}


def claim(name: str) -> Obj:
    """A claim for one device of class gpu (request "g", as `allocation` answers it)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu"}}]}},
    }


def allocation(node: str) -> Obj:
    return {
        "devices": {
            "results": [
                {"request": "g", "driver": "gpu.example.com", "pool": node, "device": "gpu-0"}
            ]
        },
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        },
    }


async def schedule(
    kube: Client, pod_name: str, claim_name: str, node: str = "n1", namespace: str = "t"
) -> None:
    """What kube-scheduler 1.36 writes: finalizer (Update), allocation + reservation
    (UpdateStatus), then the binding."""
    claim = await kube.ok(
        "GET", f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{claim_name}"
    )
    claim["metadata"].setdefault("finalizers", []).append(CLAIM_FINALIZER)
    claim = await kube.ok(
        "PUT", f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{claim_name}", claim
    )
    target = await kube.ok("GET", f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
    claim["status"] = {
        "allocation": allocation(node),
        "reservedFor": [{"resource": "pods", "name": pod_name, "uid": target["metadata"]["uid"]}],
    }
    await kube.ok(
        "PUT",
        f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{claim_name}/status",
        claim,
    )
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod_name}}
    await kube.ok(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods/{pod_name}/binding",
        {**binding, "target": {"kind": "Node", "name": node}},
    )
