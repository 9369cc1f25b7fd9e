"""Controllers a real cluster runs that clients take for granted, and the loop that runs them.

`Emulator(controllers=True)` (and `phalanx emulator`) runs them as a controller-manager
would: the bootstrap namespaces and a `default` ServiceAccount per namespace (at once, as
the ServiceAccount admission needs it before the first pod), and, from a work queue that
runs beside the server, the resourceclaim controller (claims.py), garbage collection
(garbage.py), namespace deletion (namespaces.py), PodGroup protection (podgroups.py) and the
node lifecycle taint (nodes.py). The transcript replay runs without them, as the recording
server did.

Controllers see every write through `Api.on_write`, queue keys, and act later through the
same `Api` verbs a client would use, so their writes get resourceVersions, watch events,
validation and faults like anyone's. A failed action is retried a second (of loop time)
later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Hashable
from typing import Any

from emulator.api import Api
from emulator.clock import now_time
from emulator.errors import ApiError
from emulator.resources import ResourceType
from emulator.store import Obj, obj_key

BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
RETRY_SECONDS = 1.0
_log = logging.getLogger(__name__)


def _new(api_version: str, kind: str, name: str, namespace: str = "") -> Obj:
    meta: Obj = {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_time()}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def removed(api: Api, rt: ResourceType, verb: str, obj: Obj) -> bool:
    """Whether this write took the object out of the store (not just marked it deleting)."""
    if verb != "delete":
        return False
    stored = api.store.peek(rt.key, obj_key(obj))
    return stored is None or stored["metadata"]["uid"] != obj["metadata"]["uid"]


def builtin(api: Api, group: str, plural: str) -> ResourceType:
    version = {"": "v1", "scheduling.k8s.io": "v1alpha2"}.get(group, "v1")
    rt = api.registry.lookup(group, version, plural)
    assert rt is not None, (group, plural)
    return rt


class Controller:
    """One controller: `on_write` queues keys, `sync` brings one key to the wanted state."""

    name = "controller"

    def __init__(self, manager: ControllerManager) -> None:
        self.manager = manager
        self.api = manager.api

    def enqueue(self, key: Hashable) -> None:
        self.manager.enqueue(self, key)

    def on_write(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        raise NotImplementedError

    async def sync(self, key: Any) -> None:
        raise NotImplementedError

    async def record_event(self, obj: Obj, kind: str, reason: str, message: str) -> None:
        """A core v1 Event about `obj`, as controllers record them."""
        await record_event(self.api, self.name, obj, kind, reason, message)


async def record_event(
    api: Api, component: str, obj: Obj, kind: str, reason: str, message: str, type_: str = "Warning"
) -> None:
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    stamp = now_time()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": kind,
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": None,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": "",
    }
    await api.create(builtin(api, "", "events"), namespace, event, {}, component, [])


class ControllerManager:
    """The controllers' shared work queue: each (controller, key) once, in arrival order."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.controllers: list[Controller] = []
        self._pending: dict[tuple[Controller, Hashable], None] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._retries = 0
        api.on_write.append(self._dispatch)

    def add(self, controller_type: type[Controller]) -> Controller:
        controller = controller_type(self)
        self.controllers.append(controller)
        return controller

    def _dispatch(self, rt: ResourceType, verb: str, obj: Obj) -> None:
        for controller in self.controllers:
            controller.on_write(rt, verb, obj)

    def enqueue(self, controller: Controller, key: Hashable) -> None:
        self._pending[(controller, key)] = None
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._wake.set()
            self._task = asyncio.create_task(self._run(), name="emulator-controllers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._wake = None

    async def idle(self) -> None:
        """Wait until no work is queued, running or waiting to be retried (for tests)."""
        while self._pending or self._busy or self._retries:
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                controller, key = next(iter(self._pending))
                del self._pending[(controller, key)]
                self._busy = True
                try:
                    await controller.sync(key)
                except ApiError as exc:
                    if exc.code != 404:
                        self._retries += 1
                        loop.call_later(RETRY_SECONDS, self._retry, controller, key)
                except Exception:  # a controller bug must not stop the others
                    _log.exception("%s failed on %r", controller.name, key)
                finally:
                    self._busy = False
                await asyncio.sleep(0)

    def _retry(self, controller: Controller, key: Hashable) -> None:
        self._retries -= 1
        self.enqueue(controller, key)


class ServiceAccounts:
    """Creates the `default` ServiceAccount when a namespace is created (synchronously)."""

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
                hook(builtin(api, "", "namespaces"), "create", stored)
