"""A watch whose client goes away: the server ends it quietly, as an API server does."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from emulator import Emulator
from tests.kube.client import configmap, emu, http
from tests.kube.controller_cluster import until

__all__ = ["emu", "http"]

CONFIGMAPS = "/api/v1/namespaces/t/configmaps"


async def test_a_watch_whose_client_left_ends_without_a_server_error(
    emu: Emulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aiohttp.server")
    assert (await http.post(CONFIGMAPS, json=configmap("first"))).status == 201
    watching = len(emu.store._watchers)
    response = await http.get(CONFIGMAPS, params={"watch": "true"})
    await response.content.readline()  # the ADDED event of "first": the stream is live
    response.close()  # the client leaves without reading the rest
    for i in range(50):  # events the server goes on writing to the closed connection
        assert (await http.post(CONFIGMAPS, json=configmap(f"after-{i}"))).status == 201

    async def ended() -> bool:
        return len(emu.store._watchers) == watching

    await until(ended, timeout=30.0, step=0.05)
    assert [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"] == []
