"""The emulator calls admission webhooks as the API server does: which webhooks a request
reaches, in what order, over TLS checked against caBundle, within timeoutSeconds, what a
refusal or a failure looks like to the client, and what failurePolicy changes."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from emulator import Emulator
from tests.kube.client import emu, http
from tests.kube.webhooks import Scripted, configuration, patch_of, refusing_port, webhook

__all__ = ["emu", "http"]

pytestmark = pytest.mark.looptime

Obj = dict[str, Any]
CM = "/api/v1/namespaces/t/configmaps"
VALIDATING = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
MUTATING = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def cm(name: str, **labels: str) -> Obj:
    meta: Obj = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


async def install(http: aiohttp.ClientSession, kind: str, *hooks: Obj, name: str = "c") -> None:
    path = VALIDATING if kind == "Validating" else MUTATING
    answer = await http.post(path, json=configuration(kind, name, *hooks))
    assert answer.status == 201, await answer.text()


async def create(http: aiohttp.ClientSession, obj: Obj) -> tuple[int, Obj]:
    answer = await http.post(CM, json=obj)
    return answer.status, await answer.json()


async def test_a_refusal_reads_as_the_api_server_words_it(http: aiohttp.ClientSession) -> None:
    def no(request: Obj) -> Obj:
        return {"allowed": False, "status": {"message": "configmaps need an owner"}}

    async with Scripted(no) as hook:
        await install(http, "Validating", webhook("owners.example.com", hook.url, hook.ca_bundle))
        status, body = await create(http, cm("a"))
    assert (status, body) == (
        403,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'configmaps "a" is forbidden: admission webhook "owners.example.com" '
            "denied the request: configmaps need an owner",
            "reason": "Forbidden",
            "details": {"name": "a", "kind": "configmaps"},
            "code": 403,
        },
    )


async def test_a_refusal_keeps_the_webhook_s_code_reason_and_causes(
    http: aiohttp.ClientSession,
) -> None:
    status_ = {
        "message": "data.k: Invalid value",
        "reason": "Invalid",
        "code": 422,
        "details": {"causes": [{"field": "data.k", "message": "Invalid value"}]},
    }
    async with Scripted(lambda r: {"allowed": False, "status": status_}) as hook:
        await install(http, "Validating", webhook("strict.example.com", hook.url, hook.ca_bundle))
        status, body = await create(http, cm("a"))
    assert (status, body["reason"], body["details"]) == (422, "Invalid", status_["details"])
    assert body["message"].endswith("denied the request: data.k: Invalid value")


async def test_a_refusal_without_a_message_says_so(http: aiohttp.ClientSession) -> None:
    async with Scripted(lambda r: {"allowed": False}) as hook:
        await install(http, "Validating", webhook("mute.example.com", hook.url, hook.ca_bundle))
        _, body = await create(http, cm("a"))
    assert body["message"] == (
        'configmaps "a" is forbidden: admission webhook "mute.example.com" denied the request '
        "without explanation"
    )


async def test_the_mutating_webhook_s_patch_is_stored_and_validating_webhooks_see_it(
    http: aiohttp.ClientSession,
) -> None:
    label = {"op": "add", "path": "/metadata/labels", "value": {"stamped": "yes"}}
    async with (
        Scripted(lambda r: patch_of([label])) as mutator,
        Scripted() as checker,
    ):
        await install(
            http, "Mutating", webhook("stamp.example.com", mutator.url, mutator.ca_bundle)
        )
        await install(
            http, "Validating", webhook("see.example.com", checker.url, checker.ca_bundle)
        )
        status, body = await create(http, cm("a"))
    assert (status, body["metadata"]["labels"]) == (201, {"stamped": "yes"})
    assert checker.reviews[0]["object"]["metadata"]["labels"] == {"stamped": "yes"}
    assert mutator.reviews[0]["oldObject"] is None


async def test_the_review_describes_the_request(http: aiohttp.ClientSession) -> None:
    async with Scripted() as hook:
        await install(
            http,
            "Validating",
            webhook("see.example.com", hook.url, hook.ca_bundle, operations=("CREATE", "UPDATE")),
        )
        await create(http, cm("a"))
        await http.put(f"{CM}/a", json=cm("a", x="1"))
    created, updated = hook.reviews
    assert {k: created[k] for k in ("kind", "resource", "name", "namespace", "operation")} == {
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "name": "a",
        "namespace": "t",
        "operation": "CREATE",
    }
    assert (updated["operation"], updated["oldObject"]["metadata"].get("labels")) == (
        "UPDATE",
        None,
    )
    assert updated["object"]["metadata"]["labels"] == {"x": "1"}


async def test_rules_select_operations_and_resources(http: aiohttp.ClientSession) -> None:
    async with Scripted(lambda r: {"allowed": False}) as hook:
        await install(
            http,
            "Validating",
            webhook("deletes.example.com", hook.url, hook.ca_bundle, operations=("DELETE",)),
            webhook("secrets.example.com", hook.url, hook.ca_bundle, resources=("secrets",)),
        )
        created, _ = await create(http, cm("a"))
        deleted = (await http.delete(f"{CM}/a")).status
    assert (created, deleted, len(hook.reviews)) == (201, 403, 1)


async def test_a_status_write_reaches_only_webhooks_for_the_subresource(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}
    assert (await http.post("/api/v1/nodes", json=node)).status == 201
    async with Scripted() as main, Scripted() as status:
        await install(
            http,
            "Validating",
            webhook(
                "nodes.example.com",
                main.url,
                main.ca_bundle,
                operations=("UPDATE",),
                resources=("nodes",),
            ),
            webhook(
                "status.example.com",
                status.url,
                status.ca_bundle,
                operations=("UPDATE",),
                resources=("nodes/status",),
            ),
        )
        await http.patch(
            "/api/v1/nodes/n/status",
            json={"status": {"capacity": {"cpu": "1"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert (len(main.reviews), len(status.reviews)) == (0, 1)
    assert status.reviews[0]["subResource"] == "status"


async def test_namespace_and_object_selectors_skip_what_they_do_not_match(
    http: aiohttp.ClientSession,
) -> None:
    async with Scripted(lambda r: {"allowed": False}) as hook:
        await install(
            http,
            "Validating",
            webhook(
                "apps.example.com",
                hook.url,
                hook.ca_bundle,
                namespaceSelector={"matchLabels": {"tier": "apps"}},
                objectSelector={"matchExpressions": [{"key": "guarded", "operator": "Exists"}]},
            ),
        )
        free, _ = await create(http, cm("a"))
        guarded, _ = await create(http, cm("b", guarded="yes"))
    assert (free, guarded) == (201, 403)


async def test_match_conditions_decide_whether_the_webhook_is_called(
    http: aiohttp.ClientSession,
) -> None:
    condition = {"name": "big", "expression": "object.data.k == 'big'"}
    async with Scripted(lambda r: {"allowed": False}) as hook:
        await install(
            http,
            "Validating",
            webhook("big.example.com", hook.url, hook.ca_bundle, matchConditions=[condition]),
        )
        small, _ = await create(http, cm("a"))
        big = cm("b")
        big["data"]["k"] = "big"
        refused, _ = await create(http, big)
    assert (small, refused, len(hook.reviews)) == (201, 403, 1)


async def test_an_unreachable_webhook_fails_the_request_with_policy_fail(
    http: aiohttp.ClientSession,
) -> None:
    with refusing_port() as port:
        url = f"https://127.0.0.1:{port}/v"
        await install(http, "Validating", webhook("gone.example.com", url))
        status, body = await create(http, cm("a"))
    assert (status, body["reason"]) == (500, "InternalError")
    assert body["message"] == (
        'Internal error occurred: failed calling webhook "gone.example.com": failed to call '
        f'webhook: Post "https://127.0.0.1:{port}/v?timeout=10s": dial tcp 127.0.0.1:{port}: '
        "connect: connection refused"
    )


async def test_an_unreachable_webhook_is_skipped_with_policy_ignore(
    http: aiohttp.ClientSession,
) -> None:
    with refusing_port() as port:
        url = f"https://127.0.0.1:{port}/v"
        await install(http, "Validating", webhook("gone.example.com", url, failurePolicy="Ignore"))
        status, _ = await create(http, cm("a"))
    assert status == 201


async def test_a_webhook_slower_than_its_timeout_fails_or_is_ignored(
    http: aiohttp.ClientSession,
) -> None:
    async with Scripted(hang=True) as hook:
        slow = webhook("slow.example.com", hook.url, hook.ca_bundle, timeoutSeconds=2)
        await install(http, "Validating", slow)
        status, body = await create(http, cm("a"))
        assert (status, body["message"]) == (
            500,
            'Internal error occurred: failed calling webhook "slow.example.com": failed to call '
            f'webhook: Post "{hook.url}?timeout=2s": context deadline exceeded',
        )
        ignore = {**slow, "failurePolicy": "Ignore"}
        config = configuration("Validating", "c", ignore)
        config["metadata"]["resourceVersion"] = (await (await http.get(f"{VALIDATING}/c")).json())[
            "metadata"
        ]["resourceVersion"]
        assert (await http.put(f"{VALIDATING}/c", json=config)).status == 200
        status, _ = await create(http, cm("b"))
    assert status == 201


async def test_a_certificate_not_signed_by_the_ca_bundle_is_not_trusted(
    http: aiohttp.ClientSession,
) -> None:
    async with Scripted() as hook, Scripted() as stranger:
        await install(http, "Validating", webhook("tls.example.com", hook.url, stranger.ca_bundle))
        status, body = await create(http, cm("a"))
    assert status == 500
    assert body["message"].endswith(
        "tls: failed to verify certificate: x509: certificate signed by unknown authority"
    )


async def test_a_service_reference_reaches_the_address_the_test_gives(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    refuse = {"allowed": False, "status": {"message": "via service"}}
    async with Scripted(lambda r: refuse, host="guard.t.svc") as hook:
        hook_entry = webhook("svc.example.com", hook.url, hook.ca_bundle)
        hook_entry["clientConfig"] = {
            "service": {"namespace": "t", "name": "guard", "path": "/check"},
            "caBundle": hook.ca_bundle,
        }
        await install(http, "Validating", hook_entry)
        unrouted, body = await create(http, cm("a"))
        assert body["message"].endswith(
            'Post "https://guard.t.svc:443/check?timeout=10s": service "guard" not found'
        )
        emu.route_service("t", "guard", 443, ("127.0.0.1", hook.port))
        _, body = await create(http, cm("b"))
    assert unrouted == 500
    assert body["message"].endswith("denied the request: via service")


async def test_an_answer_for_another_request_is_an_invalid_response(
    http: aiohttp.ClientSession,
) -> None:
    async with Scripted() as hook:
        hook.answer = lambda r: {"allowed": True, "uid": "someone-else"}
        await install(http, "Validating", webhook("uid.example.com", hook.url, hook.ca_bundle))
        status, body = await create(http, cm("a"))
    assert status == 500
    assert 'received invalid webhook response: expected response.uid="' in body["message"]


async def test_webhook_configurations_themselves_never_go_to_webhooks(
    http: aiohttp.ClientSession,
) -> None:
    async with Scripted(lambda r: {"allowed": False}) as hook:
        everything = webhook(
            "all.example.com",
            hook.url,
            hook.ca_bundle,
            operations=("*",),
            resources=("*",),
            group="*",
        )
        await install(http, "Validating", everything)
        deleted = await http.delete(f"{VALIDATING}/c")
    assert deleted.status == 200 and not hook.reviews


async def test_a_configuration_with_an_http_url_is_invalid(http: aiohttp.ClientSession) -> None:
    answer = await http.post(
        VALIDATING,
        json=configuration("Validating", "c", webhook("plain.example.com", "http://x/v")),
    )
    body = await answer.json()
    assert (answer.status, body["details"]["causes"][0]["field"]) == (
        422,
        "webhooks[0].clientConfig.url",
    )


async def test_secret_string_data_is_stored_as_base64_data(http: aiohttp.ClientSession) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    secret["stringData"] = {"token": "hunter2"}  # type: ignore[assignment]
    answer = await http.post("/api/v1/namespaces/t/secrets", json=secret)
    body = await answer.json()
    assert (answer.status, body["data"], body["type"]) == (201, {"token": "aHVudGVyMg=="}, "Opaque")
    assert "stringData" not in body
