"""The webhook configurations: their matchConditions send the webhook exactly the pods
its rules care about (checked with the CEL runtime the emulator evaluates them with)."""

from __future__ import annotations

import copy

import cel
import pytest

from controller.webhook import configs, pods
from tests.webhook.cluster import pod

Obj = dict[str, object]

CREATED = [
    pod(),
    pod(gpus=1),
    pod(claim=True),
    pod(scheduler="phalanx"),
    pod(scheduler="volcano"),
    pod(labels={"phalanx.dev/gang": "g"}),
    pod(labels={"phalanx.dev/queue": "q"}),
    pod(labels={"app": "web"}),
    pod(gpus=2, nodeName="n0"),
]


def holds(expression: str, obj: Obj, old: Obj | None, operation: str) -> bool:
    context = {"object": obj, "oldObject": old, "request": {"operation": operation}}
    result = cel.evaluate(expression, context)
    assert isinstance(result, bool)
    return result


@pytest.mark.parametrize("created", CREATED)
def test_the_mutating_webhook_sees_every_pod_it_would_change(created: Obj) -> None:
    concerns = pods.needs_devices(created) or created["spec"]["schedulerName"] == "phalanx"  # type: ignore[index]
    assert holds(configs.POD_MUTATE_CONDITION, created, None, "CREATE") == concerns


@pytest.mark.parametrize("created", CREATED)
def test_the_validating_webhook_sees_every_created_pod_it_judges(created: Obj) -> None:
    labels = created["metadata"].get("labels") or {}  # type: ignore[attr-defined]
    concerns = (
        pods.needs_devices(created)
        or created["spec"]["schedulerName"] == "phalanx"  # type: ignore[index]
        or bool({"phalanx.dev/gang", "phalanx.dev/queue"} & set(labels))
    )
    assert holds(configs.POD_VALIDATE_CONDITION, created, None, "CREATE") == concerns


def phalanx_pod() -> Obj:
    return pod(
        scheduler="phalanx",
        labels={"phalanx.dev/gang": "g", "phalanx.dev/queue": "q", "app": "x"},
        annotations={"phalanx.dev/gang-size": "2"},
    )


@pytest.mark.parametrize(
    ("change", "sent"),
    [
        (lambda p: p["metadata"]["labels"].pop("phalanx.dev/gang"), True),
        (lambda p: p["metadata"]["labels"].update({"phalanx.dev/queue": "other"}), True),
        (lambda p: p["metadata"]["annotations"].update({"phalanx.dev/gang-size": "3"}), True),
        (lambda p: p["metadata"]["labels"].update({"app": "y"}), False),
        (lambda p: p["metadata"].update({"finalizers": []}), False),
    ],
)
def test_updates_reach_the_webhook_only_when_gang_keys_change(change: object, sent: bool) -> None:
    old = phalanx_pod()
    new = copy.deepcopy(old)
    change(new)  # type: ignore[operator]
    assert holds(configs.POD_VALIDATE_CONDITION, new, old, "UPDATE") == sent


def test_updates_of_other_schedulers_pods_never_reach_the_webhook() -> None:
    old = pod(labels={"phalanx.dev/gang": "g"})
    new = copy.deepcopy(old)
    del new["metadata"]["labels"]  # type: ignore[attr-defined]
    assert not holds(configs.POD_VALIDATE_CONDITION, new, old, "UPDATE")


def test_every_webhook_fails_closed_and_the_pod_webhooks_skip_system_namespaces() -> None:
    validating, mutating = configs.configurations(
        service=("phalanx-system", "phalanx-webhook", 443)
    )
    hooks = validating["webhooks"] + mutating["webhooks"]
    assert {h["failurePolicy"] for h in hooks} == {"Fail"}
    assert [h["clientConfig"]["service"]["path"] for h in hooks] == [
        "/validate-phalanx-dev-v1alpha1-gangjob",
        "/validate-phalanx-dev-v1alpha1-queue",
        "/validate--v1-pod",
        "/mutate--v1-pod",
    ]
    for hook in hooks[2:]:
        (expression,) = hook["namespaceSelector"]["matchExpressions"]
        assert expression["operator"] == "NotIn" and "kube-system" in expression["values"]
