"""The emulator's test hooks: faults, fail-stop, watch-window eviction, compaction, restart."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from emulator import Emulator, Fault
from tests.kube.client import emu, http

__all__ = ["emu", "http"]


def cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


async def _watch(http: aiohttp.ClientSession, query: dict[str, str]) -> list[dict[str, Any]]:
    async with http.get(
        "/api/v1/namespaces/t/configmaps", params={"watch": "true", **query}
    ) as response:
        assert response.status == 200
        return [json.loads(line) async for line in response.content if line.strip()]


async def test_requests_without_the_token_are_unauthorized(emu: Emulator) -> None:
    async with aiohttp.ClientSession(emu.url) as anonymous:
        response = await anonymous.get("/api/v1/namespaces")
        assert response.status == 401


async def test_an_injected_fault_answers_with_its_status_code(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.inject_fault(Fault("create", "configmaps", code=503, times=1))
    first = await http.post("/api/v1/namespaces/t/configmaps", json=cm("a"))
    second = await http.post("/api/v1/namespaces/t/configmaps", json=cm("a"))
    assert (first.status, (await first.json())["reason"], second.status) == (
        503,
        "ServiceUnavailable",
        201,
    )


@pytest.mark.looptime
async def test_a_delay_fault_costs_virtual_time_only(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.inject_fault(Fault("get", "configmaps", code=0, delay=30.0))
    await http.post("/api/v1/namespaces/t/configmaps", json=cm("a"))
    response = await http.get("/api/v1/namespaces/t/configmaps/a")
    assert response.status == 200


async def test_fail_stop_rejects_every_write_after_the_nth(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.fail_after_writes(1)
    statuses = [
        (await http.post("/api/v1/namespaces/t/configmaps", json=cm(n))).status for n in "abc"
    ]
    assert statuses == [201, 503, 503]
    assert (await http.get("/api/v1/namespaces/t/configmaps/a")).status == 200


@pytest.mark.looptime
async def test_a_watch_from_before_the_forgotten_window_gets_an_error_410(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    created = await (await http.post("/api/v1/namespaces/t/configmaps", json=cm("a"))).json()
    await http.post("/api/v1/namespaces/t/configmaps", json=cm("b"))
    emu.forget_watch_window()
    events = await _watch(
        http, {"resourceVersion": created["metadata"]["resourceVersion"], "timeoutSeconds": "5"}
    )
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


@pytest.mark.looptime
async def test_a_dropped_watch_fault_ends_the_stream_early(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.inject_fault(Fault("watch", "configmaps", drop_watch_after=1))
    await http.post("/api/v1/namespaces/t/configmaps", json=cm("a"))
    events = await _watch(http, {"resourceVersion": "0", "timeoutSeconds": "60"})
    assert [e["type"] for e in events] == ["ADDED"]


async def test_exact_lists_before_a_compaction_are_expired(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    created = await (await http.post("/api/v1/namespaces/t/configmaps", json=cm("a"))).json()
    await http.post("/api/v1/namespaces/t/configmaps", json=cm("b"))
    emu.compact()
    query = {
        "resourceVersion": created["metadata"]["resourceVersion"],
        "resourceVersionMatch": "Exact",
    }
    response = await http.get("/api/v1/namespaces/t/configmaps", params=query)
    assert response.status == 410


async def test_restart_keeps_objects(emu: Emulator, http: aiohttp.ClientSession) -> None:
    await http.post("/api/v1/namespaces/t/configmaps", json=cm("a"))
    await emu.restart()
    response = await http.get("/api/v1/namespaces/t/configmaps/a")
    assert response.status == 200
