"""Every refused request reaches the metrics through the client's error hook."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio import client

from controller.kube.metrics import Metrics
from controller.kube.rest import KubeError, Rest
from emulator import Emulator, Fault
from tests.kube.controller_env import CONFIG_MAPS, emulator, rest

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime


def errors(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["verb"], s.labels["code"]): s.value
        for family in metrics.registry.collect()
        if family.name == "phalanx_api_errors"
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_refused_requests_count_by_verb_and_status(emulator: Emulator, rest: Rest) -> None:
    metrics = Metrics()
    hooked = Rest(rest.api_client, on_error=metrics.api_error)
    emulator.inject_fault(Fault("watch", "configmaps", code=429, times=1))
    for _ in range(2):
        with pytest.raises(KubeError):
            await hooked.get(CONFIG_MAPS.path("default", "missing"))
    with pytest.raises(KubeError):
        async with hooked.watch(CONFIG_MAPS.path(), {}):
            pass
    assert errors(metrics) == {("get", "404"): 2, ("watch", "429"): 1}


async def test_a_request_nobody_answers_counts_as_status_0() -> None:
    metrics = Metrics()
    configuration = client.Configuration(host="http://127.0.0.1:1")
    async with client.ApiClient(configuration) as api_client:
        hooked = Rest(api_client, on_error=metrics.api_error)
        with pytest.raises(aiohttp.ClientError):
            await hooked.get("/api/v1/namespaces")
    assert errors(metrics) == {("get", "0"): 1}
