"""Request timeouts of the controller's client: a request nobody answers times out (and
counts as status 0), and one cancelled at the very moment it times out is cancelled.
aiohttp's own timer turns such a cancellation into a TimeoutError
(aio-libs/aiohttp#5979); a reconcile worker catching it would carry on, and a controller
told to stop would never stop. Loop time makes "the same moment" exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from controller.kube.metrics import Metrics
from controller.kube.rest import Rest
from tests.kube.test_controller_api_errors import errors

pytestmark = pytest.mark.looptime

TIMEOUT = 60.0


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def silent(metrics: Metrics) -> AsyncIterator[Rest]:
    """A client of a server that accepts connections and never answers."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    async with client.ApiClient(configuration) as api_client:
        yield Rest(api_client, on_error=metrics.api_error)
    server.close()


async def test_a_request_nobody_answers_times_out_and_counts_as_status_0(
    silent: Rest, metrics: Metrics
) -> None:
    with pytest.raises(TimeoutError):
        await silent.request("GET", "/x", timeout=TIMEOUT)
    assert errors(metrics) == {("get", "0"): 1}


async def test_a_request_cancelled_as_it_times_out_is_cancelled(silent: Rest) -> None:
    request = asyncio.create_task(silent.request("GET", "/x", timeout=TIMEOUT))
    await asyncio.sleep(TIMEOUT)  # wakes in the same instant as the request's timeout
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
