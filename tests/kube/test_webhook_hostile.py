"""Hostile input over HTTP: to the webhook server directly (not a review, nested without
end, too large) and through the API server (10,000 pods, a 1 MiB template, a deep queue
tree, unicode names). Each is refused clearly or handled; the webhook keeps answering and
the controller keeps admitting."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from controller.kube import resources as r
from controller.kube.rest import KubeError, Obj, Rest
from controller.webhook.configs import GANGJOB_PATH
from controller.webhook.queue import MAX_DEPTH
from emulator import Emulator
from tests.kube.controller_cluster import gang_job, until
from tests.kube.controller_env import create, emulator, rest
from tests.kube.webhook_cluster import Installed, build_cluster, install_configurations

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime


@pytest.fixture
async def installed(emulator: Emulator, rest: Rest) -> AsyncIterator[Installed]:
    await build_cluster(emulator, rest)
    await install_configurations(rest)
    running = Installed(emulator, rest)
    await running.start(controller=True)
    yield running
    await running.stop()


@pytest.fixture
async def webhook_http(installed: Installed) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    assert installed.webhook is not None
    context = ssl.create_default_context(cadata=(await installed.bundle()).ca_crt.decode())
    context.check_hostname = False  # the server is reached by address here
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session, f"https://127.0.0.1:{installed.webhook.server.port}"


def job(name: str, sets: list[tuple[str, int]], **kwargs: object) -> Obj:
    made = gang_job(name, sets, queue_name="team-a", **kwargs)  # type: ignore[arg-type]
    made["metadata"]["namespace"] = "team-a"
    return made


async def refused(rest: Rest, resource: r.Resource, obj: Obj) -> KubeError:
    with pytest.raises(KubeError) as refusal:
        await create(rest, resource, obj)
    return refusal.value


async def until_admitted(rest: Rest, name: str) -> None:
    """Wait until the controller has written the GangJob's admission record."""

    async def admitted() -> bool:
        found = await rest.get(r.GANG_JOBS.path("team-a", name))
        return bool((found.get("status") or {}).get("admission"))

    await until(admitted)


async def still_admitting(rest: Rest) -> None:
    """An ordinary job submitted after the hostile ones is admitted: the webhook and the
    controller are up."""
    await create(rest, r.GANG_JOBS, job("after", [("w", 1)]))
    await until_admitted(rest, "after")


def named_queue(name: str, **spec: object) -> Obj:
    return {
        "apiVersion": "phalanx.dev/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": spec,
    }


def review(obj: Obj) -> Obj:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "phalanx.dev", "version": "v1alpha1", "kind": "GangJob"},
            "resource": {"group": "phalanx.dev", "version": "v1alpha1", "resource": "gangjobs"},
            "namespace": "team-a",
            "operation": "CREATE",
            "object": obj,
        },
    }


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (b"not json", "not an AdmissionReview: Expecting value"),
        (b"[" * 100_000 + b"]" * 100_000, "not an AdmissionReview: too deeply nested"),
        (b'{"apiVersion": "v1", "kind": "Pod"}', "not an AdmissionReview: expected apiVersion"),
    ],
    ids=["not-json", "nested-without-end", "not-a-review"],
)
async def test_what_is_not_a_review_gets_400_and_the_server_keeps_answering(
    webhook_http: tuple[aiohttp.ClientSession, str], body: bytes, answer: str
) -> None:
    session, base = webhook_http
    async with session.post(base + GANGJOB_PATH, data=body) as bad:
        assert (bad.status, (await bad.text()).startswith(answer)) == (400, True)
    async with session.post(base + GANGJOB_PATH, json=review(job("ok", [("w", 1)]))) as good:
        assert good.status == 200
        assert (await good.json())["response"]["allowed"] is True


async def test_a_body_larger_than_any_api_server_sends_is_refused_unread(
    webhook_http: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = webhook_http
    async with session.post(base + GANGJOB_PATH, data=b" " * (33 << 20)) as huge:
        assert huge.status == 413


async def test_ten_thousand_pods_are_refused_by_the_schema_or_the_webhook(
    installed: Installed,
) -> None:
    rest = installed.rest
    one_set = await refused(rest, r.GANG_JOBS, job("one", [("w", 10_000)]))
    assert (one_set.status, "spec.podSets[0].replicas" in one_set.message) == (422, True)
    three_sets = job("three", [("a", 3334), ("b", 3334), ("c", 3334)], cpu="1m")
    spread = await refused(rest, r.GANG_JOBS, three_sets)
    assert 'admission webhook "gangjobs.phalanx.dev" denied the request' in spread.message
    assert "can never fit" in spread.message
    await still_admitting(rest)


async def test_a_one_mebibyte_template_is_admitted_and_run(installed: Installed) -> None:
    rest = installed.rest
    fat = job("fat", [("w", 2)])
    container = fat["spec"]["podSets"][0]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "BLOB", "value": "x" * (1 << 20)}]
    await create(rest, r.GANG_JOBS, fat)
    await until_admitted(rest, "fat")

    async def bound() -> bool:
        pods = await rest.get(r.PODS.path("team-a"), {"labelSelector": "phalanx.dev/gang=fat"})
        return len(pods["items"]) == 2 and all(p["spec"].get("nodeName") for p in pods["items"])

    await until(bound)


async def test_a_unicode_queue_name_is_refused_by_the_webhook_at_its_field(
    installed: Installed,
) -> None:
    rest = installed.rest
    unicode_queue = job("train", [("w", 1)])
    unicode_queue["spec"]["queueName"] = "队列"
    refusal = await refused(rest, r.GANG_JOBS, unicode_queue)
    assert refusal.status == 422
    assert "denied the request: spec.queueName: Invalid value: must be a DNS subdomain" in (
        refusal.message
    )
    await still_admitting(rest)


async def test_unicode_and_overlong_object_names_are_refused_before_the_webhook(
    installed: Installed,
) -> None:
    """The API server checks a custom resource's name itself, before validating webhooks
    are called."""
    rest = installed.rest
    for resource, bad, problem in (
        (r.GANG_JOBS, job("x" * 300, [("w", 1)]), "must be no more than 253 characters"),
        (r.QUEUES, named_queue("队列"), "a lowercase RFC 1123 subdomain must consist of"),
        (r.QUEUES, named_queue("q" * 300), "must be no more than 253 characters"),
    ):
        refusal = await refused(rest, resource, bad)
        assert refusal.status == 422
        assert "metadata.name: Invalid value: " in refusal.message
        assert problem in refusal.message and "denied the request" not in refusal.message
    await still_admitting(rest)


async def test_a_queue_tree_deeper_than_the_limit_is_refused_at_the_level_too_many(
    installed: Installed,
) -> None:
    rest = installed.rest
    parent = None
    for level in range(1, MAX_DEPTH + 1):
        q = named_queue(f"deep-{level}", **({"parent": parent} if parent else {}))
        await create(rest, r.QUEUES, q)
        parent = f"deep-{level}"
    refusal = await refused(rest, r.QUEUES, named_queue("deep-bottom", parent=parent))
    assert refusal.message.endswith(
        f'spec.parent: Invalid value: "deep-{MAX_DEPTH}": the queue tree would be '
        f"{MAX_DEPTH + 1} levels deep; at most {MAX_DEPTH} are allowed"
    )
    await still_admitting(rest)
