"""Controllers a real cluster runs that clients take for granted.

Only what is needed to use the emulator like a cluster: the bootstrap namespaces, and a
`default` ServiceAccount in every namespace (without it the ServiceAccount admission
rejects pods). The transcript replay runs without them, as the recording server did.
"""

from __future__ import annotations

import uuid

from emulator.api import Api
from emulator.clock import now_time
from emulator.resources import ResourceType
from emulator.store import Obj

BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _new(api_version: str, kind: str, name: str, namespace: str = "") -> Obj:
    meta: Obj = {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_time()}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


class ServiceAccounts:
    """Creates the `default` ServiceAccount when a namespace is created."""

    def __init__(self, api: Api) -> None:
        self.api = api
        api.on_write.append(self.on_write)

    def on_write(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        if rt.key != "namespaces" or verb != "create":
            return
        namespace = obj["metadata"]["name"]
        if self.api.store.peek("serviceaccounts", (namespace, "default")) is None:
            self.api.store.create(
                "serviceaccounts", _new("v1", "ServiceAccount", "default", namespace)
            )


def bootstrap(api: Api) -> None:
    """The namespaces every cluster has, each with its default ServiceAccount."""
    for name in BOOTSTRAP_NAMESPACES:
        if api.store.peek("namespaces", ("", name)) is None:
            namespace = _new("v1", "Namespace", name)
            namespace["metadata"]["labels"] = {"kubernetes.io/metadata.name": name}
            namespace["spec"] = {"finalizers": ["kubernetes"]}
            namespace["status"] = {"phase": "Active"}
            stored = api.store.create("namespaces", namespace)
            for hook in api.on_write:
                hook(api.registry.lookup("", "v1", "namespaces"), "create", stored)  # type: ignore[arg-type]
