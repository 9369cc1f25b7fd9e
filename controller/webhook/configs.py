"""The webhook configurations Phalanx is installed with, and why each is as it is.

Paths on the webhook server (container port 9443, Service `phalanx-webhook`):
`/validate-phalanx-dev-v1alpha1-gangjob`, `/validate-phalanx-dev-v1alpha1-queue`,
`/mutate--v1-pod`, `/validate--v1-pod`.

failurePolicy, per webhook (the cost of each choice when the webhook is unreachable):
- gangjobs.phalanx.dev (validating GangJobs): Fail. Only GangJobs wait, and without
  Phalanx nothing admits them anyway; Ignore would let in jobs naming another tenant's
  queue or jobs that can never fit, which the engine would then hold pending for ever.
- queues.phalanx.dev (validating Queues): Fail. Queues are an administrator's, rarely
  written; one let in unchecked can orphan a subtree or close a cycle, which stops
  admission in that tree. An administrator can still delete the configuration.
- pods.phalanx.dev (mutating and validating Pods): Fail. Ignore would let GPU pods
  escape their queue's quota whenever Phalanx is restarting or unreachable, which is
  exactly the guarantee this webhook exists for. The blast radius is kept small instead:
  matchConditions send only pods that request extended resources or DRA claims, pods
  already addressed to Phalanx, and label changes of Phalanx pods (never status
  writes, finalizer removals or other pods), and the system namespaces are excluded.
  Such pods would wait for Phalanx to schedule them anyway.
`sideEffects: None` (the webhook only reads), `admissionReviewVersions: [v1]`,
`timeoutSeconds: 10`; the mutating webhook is reinvoked if a later mutating webhook
changes the pod (its patch is idempotent).
"""

from __future__ import annotations

import base64
from typing import Any

from controller.api.common import GROUP, VERSION
from controller.kube.foreign import GANG_LABEL, QUEUE_LABEL, SCHEDULER_NAME, SIZE_ANNOTATION

Obj = dict[str, Any]
VALIDATING_NAME = "phalanx-validating"
MUTATING_NAME = "phalanx-mutating"
GANGJOB_PATH = "/validate-phalanx-dev-v1alpha1-gangjob"
QUEUE_PATH = "/validate-phalanx-dev-v1alpha1-queue"
MUTATE_POD_PATH = "/mutate--v1-pod"
VALIDATE_POD_PATH = "/validate--v1-pod"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
LABELS = {
    "app.kubernetes.io/name": "phalanx",
    "app.kubernetes.io/component": "webhook",
    "app.kubernetes.io/part-of": "phalanx",
}

_DEVICES = (
    "(has(object.spec.resourceClaims) && size(object.spec.resourceClaims) > 0)"
    " || [object.spec.containers,"
    " has(object.spec.initContainers) ? object.spec.initContainers : []].exists(cs,"
    " cs.exists(c, has(c.resources) && ("
    "(has(c.resources.requests) && c.resources.requests.exists(r, r.contains('/')))"
    " || (has(c.resources.limits) && c.resources.limits.exists(r, r.contains('/'))))))"
)
"""The pod requests DRA claims or a domain-prefixed (extended) resource."""
_PHALANX = f"(has(object.spec.schedulerName) && object.spec.schedulerName == '{SCHEDULER_NAME}')"


def _label(var: str, key: str, where: str = "labels") -> str:
    return (
        f"(has({var}.metadata.{where}) && '{key}' in {var}.metadata.{where}"
        f" ? {var}.metadata.{where}['{key}'] : '')"
    )


_GANG_KEYS_CHANGED = " || ".join(
    f"{_label('object', key, where)} != {_label('oldObject', key, where)}"
    for key, where in (
        (GANG_LABEL, "labels"),
        (QUEUE_LABEL, "labels"),
        (SIZE_ANNOTATION, "annotations"),
    )
)
_CREATE_CONCERNS_US = (
    f"{_DEVICES} || {_PHALANX} || {_label('object', GANG_LABEL)} != ''"
    f" || {_label('object', QUEUE_LABEL)} != ''"
)
POD_MUTATE_CONDITION = f"{_DEVICES} || {_PHALANX}"
POD_VALIDATE_CONDITION = (
    f"request.operation == 'CREATE' ? ({_CREATE_CONCERNS_US})"
    f" : (has(oldObject.spec.schedulerName) && oldObject.spec.schedulerName == "
    f"'{SCHEDULER_NAME}' && ({_GANG_KEYS_CHANGED}))"
)


def client_config(
    path: str,
    *,
    service: tuple[str, str, int] | None = None,
    url: str | None = None,
    ca_bundle: bytes = b"",
) -> Obj:
    """A clientConfig reaching `path` through a Service (namespace, name, port) or a base URL."""
    config: Obj = {}
    if service is not None:
        namespace, name, port = service
        config["service"] = {"namespace": namespace, "name": name, "path": path, "port": port}
    else:
        assert url is not None
        config["url"] = url.rstrip("/") + path
    if ca_bundle:
        config["caBundle"] = base64.b64encode(ca_bundle).decode()
    return config


def _common(name: str, config: Obj) -> Obj:
    return {
        "name": name,
        "clientConfig": config,
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 10,
        "matchPolicy": "Equivalent",
    }


def _rule(operations: tuple[str, ...], group: str, version: str, resource: str, scope: str) -> Obj:
    return {
        "operations": list(operations),
        "apiGroups": [group],
        "apiVersions": [version],
        "resources": [resource],
        "scope": scope,
    }


def _pod_namespaces(extra: tuple[str, ...]) -> Obj:
    """Every namespace but the system ones (and `extra`)."""
    names = [*SYSTEM_NAMESPACES, *(n for n in extra if n not in SYSTEM_NAMESPACES)]
    return {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": names}
        ]
    }


def configurations(
    *,
    service: tuple[str, str, int] | None = None,
    url: str | None = None,
    ca_bundle: bytes = b"",
    system_namespaces: tuple[str, ...] = (),
) -> tuple[Obj, Obj]:
    """(ValidatingWebhookConfiguration, MutatingWebhookConfiguration); `system_namespaces`
    adds namespaces to keep out of the pod webhooks (the controller's own, say)."""

    def cc(path: str) -> Obj:
        return client_config(path, service=service, url=url, ca_bundle=ca_bundle)

    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VALIDATING_NAME, "labels": LABELS},
        "webhooks": [
            {
                **_common(f"gangjobs.{GROUP}", cc(GANGJOB_PATH)),
                "rules": [_rule(("CREATE", "UPDATE"), GROUP, VERSION, "gangjobs", "Namespaced")],
            },
            {
                **_common(f"queues.{GROUP}", cc(QUEUE_PATH)),
                "rules": [
                    _rule(("CREATE", "UPDATE", "DELETE"), GROUP, VERSION, "queues", "Cluster")
                ],
            },
            {
                **_common(f"pods.{GROUP}", cc(VALIDATE_POD_PATH)),
                "rules": [_rule(("CREATE", "UPDATE"), "", "v1", "pods", "Namespaced")],
                "namespaceSelector": _pod_namespaces(system_namespaces),
                "matchConditions": [
                    {"name": "concerns-phalanx", "expression": POD_VALIDATE_CONDITION}
                ],
            },
        ],
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATING_NAME, "labels": LABELS},
        "webhooks": [
            {
                **_common(f"pods.{GROUP}", cc(MUTATE_POD_PATH)),
                "rules": [_rule(("CREATE",), "", "v1", "pods", "Namespaced")],
                "namespaceSelector": _pod_namespaces(system_namespaces),
                "matchConditions": [
                    {"name": "requests-devices-or-phalanx", "expression": POD_MUTATE_CONDITION}
                ],
                "reinvocationPolicy": "IfNeeded",
            }
        ],
    }
    return validating, mutating
