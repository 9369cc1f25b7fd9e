"""Simulated kubelets: one agent that plays the kubelet of many nodes over the Kubernetes API.

It talks through kubernetes-asyncio only, so it runs against the emulator and against a
real test cluster alike. It registers each described node (a Node with capacity and a
Ready condition, a ResourceSlice of its GPUs, a Lease in `kube-node-lease` renewed every
`renew_seconds`), then follows the pods bound to its nodes:

- a pod is started only if every DRA claim it names is allocated and reserved for it, as
  the kubelet's DRA manager requires; otherwise it fails (phase Failed, reason
  `FailedPrepareDynamicResources`) with a Warning event saying which claim and why;
- a started pod is marked Running, then Ready `ready_seconds` later (in one status write
  when that is 0);
- it finishes `phalanx.dev/sim-duration-seconds` (annotation) after the kubelet took it
  (saw it bound to its node: its run is timed from its binding, as a simulated job's
  from its admission, not from the status writes that report it) with exit code
  `phalanx.dev/sim-exit-code` (default 0: Succeeded, else Failed), or when `finish` says so;
- a pod annotated `phalanx.dev/sim-checkpoint-seconds` saves its work that often: stopped
  early (deleted, or its node failed), it keeps the work of its last checkpoint, and the
  next pod of the same name and owner (its job run again) runs only what is left;
- a pod being deleted is stopped (Failed, exit 143 unless it had finished) and removed
  (grace 0, uid precondition), as the kubelet does once the containers are gone; its
  containers take `phalanx.dev/sim-stop-seconds` (annotation, default 0) to exit after
  the stop signal, and the pod stays Running and terminating meanwhile; past the
  deletion's grace period they are killed (exit 137);
- `fail_node` makes a node NotReady (Ready=Unknown, as the node lifecycle controller marks
  a silent kubelet) and its pods lost (Failed, reason `NodeLost`); `recover_node` undoes it.

Time goes through `clock` (event-loop time by default), so tests run it on looptime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from simulations.run import DRIVER, checkpointed

if TYPE_CHECKING:
    from simulations.scenario import NodeGroup

Obj = dict[str, Any]
DURATION_ANNOTATION = "phalanx.dev/sim-duration-seconds"
EXIT_CODE_ANNOTATION = "phalanx.dev/sim-exit-code"
CHECKPOINT_ANNOTATION = "phalanx.dev/sim-checkpoint-seconds"
STOP_ANNOTATION = "phalanx.dev/sim-stop-seconds"
LEASE_NAMESPACE = "kube-node-lease"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
COMPONENT = "kubelet"


class Clock(Protocol):
    async def sleep(self, seconds: float) -> None: ...

    def monotonic(self) -> float:
        """Seconds on the clock `sleep` waits on."""
        ...

    def now(self) -> datetime: ...


class LoopClock:
    """Event-loop time for waits (virtual under looptime), the wall clock for timestamps."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class NodeDescription:
    name: str
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = 110
    gpus: int = 0
    gpu_memory: str = "80Gi"
    labels: dict[str, str] = field(default_factory=dict)
    driver: str = DRIVER
    device_attributes: dict[str, str | int | bool] = field(default_factory=dict)
    """Attributes every GPU of the node carries in its ResourceSlice."""


def nodes_from_groups(groups: Iterable[NodeGroup]) -> list[NodeDescription]:
    """The simulator's node groups (scenario `cluster:`) as node descriptions: `<group>-<i>`."""
    return [
        NodeDescription(
            name=f"{group.name}-{i}",
            cpu=str(group.cpu),
            memory=str(group.memory),
            pods=group.pods,
            gpus=group.gpus,
            gpu_memory=str(group.gpu_memory),
            labels=dict(group.labels),
        )
        for group in groups
        for i in range(group.count)
    ]


async def api_client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def _attribute(value: str | int | bool) -> Obj:
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    return {"string": value}


def node_object(node: NodeDescription, now: str) -> Obj:
    resources = {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **node.labels,
            },
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": _node_conditions("True", now),
            "nodeInfo": {"kubeletVersion": "v1.36.2-phalanx-sim", "operatingSystem": "linux"},
        },
    }


def _node_conditions(ready: str, now: str) -> list[Obj]:
    reason, message = {
        "True": ("KubeletReady", "kubelet is posting ready status"),
        "Unknown": ("NodeStatusUnknown", "Kubelet stopped posting node status."),
    }[ready]
    pressure = [
        {
            "type": kind,
            "status": "False" if ready == "True" else "Unknown",
            "reason": f"KubeletHasNo{kind}" if ready == "True" else "NodeStatusUnknown",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]
    return [
        *pressure,
        {
            "type": "Ready",
            "status": ready,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        },
    ]


def slice_object(node: NodeDescription) -> Obj:
    attributes = {k: _attribute(v) for k, v in node.device_attributes.items()}
    devices = [
        {
            "name": f"gpu-{i}",
            **({"attributes": attributes} if attributes else {}),
            "capacity": {"memory": {"value": node.gpu_memory}},
        }
        for i in range(node.gpus)
    ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node.name}-gpus"},
        "spec": {
            "driver": node.driver,
            "pool": {"name": node.name, "generation": 1, "resourceSliceCount": 1},
            "nodeName": node.name,
            "devices": devices,
        },
    }


async def _json(call: Awaitable[Any]) -> Any:
    """Run a kubernetes-asyncio call made with `_preload_content=False`; the body as JSON."""
    response = await call
    try:
        body = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise ApiException(status=response.status, reason=body.decode(errors="replace"))
    return json.loads(body) if body else None


Work = tuple[str, str, str]
"""(namespace, pod name, owner uid): a pod's work, which a later pod of that name and owner
resumes from its last checkpoint."""


@dataclass
class _Pod:
    uid: str
    node: str
    work: Work
    duration: float | None = None
    """Seconds of work (None: it runs until stopped)."""
    every: float | None = None
    """Seconds between checkpoints (none if None)."""
    taken: float = 0.0
    """When the kubelet took the pod (clock seconds): its run starts there."""
    task: asyncio.Task[None] | None = None
    started: str = ""
    done: bool = False
    stopping: bool = False
    saved: bool = False
    """Its progress was counted (it finished, or was stopped)."""


def _work(pod: Obj) -> Work:
    meta = pod["metadata"]
    owner = next(
        (str(r.get("uid")) for r in meta.get("ownerReferences") or () if r.get("controller")), ""
    )
    return meta["namespace"], meta["name"], owner


def _seconds(pod: Obj, annotation: str) -> float | None:
    value = (pod["metadata"].get("annotations") or {}).get(annotation)
    return None if value is None else float(value)


class Kubelet:
    """The kubelets of `nodes`. `async with Kubelet(api, nodes):` registers and runs them."""

    def __init__(
        self,
        api: client.ApiClient,
        nodes: Iterable[NodeDescription],
        *,
        clock: Clock | None = None,
        renew_seconds: float = 10.0,
        lease_seconds: int = 40,
        ready_seconds: float = 0.0,
    ) -> None:
        self.api = api
        # Any: bodies are plain dicts and answers raw JSON (`_preload_content=False`), which
        # the generated clients' model-typed signatures do not describe.
        self.core: Any = client.CoreV1Api(api)
        self.resource: Any = client.ResourceV1Api(api)
        self.coordination: Any = client.CoordinationV1Api(api)
        self.nodes = {n.name: n for n in nodes}
        self.clock = clock or LoopClock()
        self.renew_seconds = renew_seconds
        self.lease_seconds = lease_seconds
        self.ready_seconds = ready_seconds
        self.failed: set[str] = set()
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.progress: dict[Work, float] = {}
        """Seconds of work kept by the checkpoints of pods stopped early."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._node_uids: dict[str, str] = {}

    async def __aenter__(self) -> Kubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _stamp(self) -> str:
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _micro(self) -> str:
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # --- registration ----------------------------------------------------------------------

    async def start(self) -> None:
        for node in self.nodes.values():
            await self.register(node)
        self._tasks = [
            asyncio.create_task(self._renew_leases(), name="kubelet-leases"),
            asyncio.create_task(self._follow_pods(), name="kubelet-pods"),
        ]

    async def stop(self) -> None:
        tasks = [
            *self._tasks,
            *self._stopping,
            *(p.task for p in self.pods.values() if p.task is not None),
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def register(self, node: NodeDescription) -> None:
        """The Node (status kept on create), its ResourceSlice and its Lease."""
        try:
            created = await _json(
                self.core.create_node(node_object(node, self._stamp()), _preload_content=False)
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            created = await self._node_status(node.name, "True")
        self._node_uids[node.name] = created["metadata"]["uid"]
        if node.gpus:
            with contextlib.suppress(ApiException):
                await _json(
                    self.resource.create_resource_slice(slice_object(node), _preload_content=False)
                )
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": node.name,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": node.name,
                        "uid": created["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "holderIdentity": node.name,
                "leaseDurationSeconds": self.lease_seconds,
                "renewTime": self._micro(),
            },
        }
        try:
            await _json(
                self.coordination.create_namespaced_lease(
                    LEASE_NAMESPACE, lease, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            await self._renew(node.name)

    async def _node_status(self, name: str, ready: str) -> Obj:
        body = {"status": {"conditions": _node_conditions(ready, self._stamp())}}
        node: Obj = await _json(
            self.core.patch_node_status(name, body, _content_type=STRATEGIC, _preload_content=False)
        )
        return node

    async def _renew(self, name: str) -> None:
        await _json(
            self.coordination.patch_namespaced_lease(
                name,
                LEASE_NAMESPACE,
                {"spec": {"renewTime": self._micro()}},
                _content_type=MERGE,
                _preload_content=False,
            )
        )

    async def _renew_leases(self) -> None:
        while True:
            await self.clock.sleep(self.renew_seconds)
            for name in self.nodes:
                if name not in self.failed:
                    with contextlib.suppress(ApiException):
                        await self._renew(name)

    # --- following pods --------------------------------------------------------------------

    async def _follow_pods(self) -> None:
        """List, then watch from the list's resourceVersion; re-list when the watch ends."""
        rv = ""
        while True:
            if not rv:
                listed = await _json(self.core.list_pod_for_all_namespaces(_preload_content=False))
                for pod in listed["items"]:
                    self._on_pod("ADDED", pod)
                rv = listed["metadata"]["resourceVersion"]
            response = await self.core.list_pod_for_all_namespaces(
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=300,
                _preload_content=False,
            )
            try:
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        rv = ""
                        break
                    rv = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._on_pod(event["type"], event["object"])
            finally:
                response.release()

    def _on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self.nodes:
            return
        key = (meta["namespace"], meta["name"])
        known = self.pods.get(key)
        if known is not None and known.uid != meta["uid"]:
            self._forget(key)
            known = None
        if kind == "DELETED":
            self._forget(key)
            return
        phase = (pod.get("status") or {}).get("phase")
        if known is None:
            known = self.pods[key] = _Pod(
                meta["uid"],
                node,
                _work(pod),
                _seconds(pod, DURATION_ANNOTATION),
                _seconds(pod, CHECKPOINT_ANNOTATION),
            )
            known.done = phase in ("Succeeded", "Failed")
            if not known.done and node not in self.failed and not meta.get("deletionTimestamp"):
                known.taken = self.clock.monotonic()
                known.task = asyncio.create_task(self._run(pod, known), name=f"pod {key}")
        if meta.get("deletionTimestamp") and not known.stopping:
            known.stopping = True
            stopping = asyncio.create_task(self._stop_pod(key, pod), name=f"stop {key}")
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    def _forget(self, key: tuple[str, str]) -> None:
        known = self.pods.pop(key, None)
        if known is not None and known.task is not None:
            known.task.cancel()
            self._interrupted(known)

    def _interrupted(self, known: _Pod) -> None:
        """A pod stopped before its end keeps the work of its last checkpoint (counted
        once, and only for a pod that was running)."""
        if known.done or known.saved or known.task is None:
            return
        if not known.every or known.duration is None:
            return
        known.saved = True
        done = self.progress.get(known.work, 0.0)
        ran = self.clock.monotonic() - known.taken
        self.progress[known.work] = done + checkpointed(ran, known.every, known.duration - done)

    # --- a pod's life ----------------------------------------------------------------------

    async def _run(self, pod: Obj, known: _Pod) -> None:
        """Start the pod (taken at `known.taken`), run what is left of its work, end it."""
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        problem = await self._claims_problem(pod)
        if problem:
            await self._event(pod, "FailedPrepareDynamicResources", problem)
            await self._set_status(
                pod, self._failed_status(pod, "FailedPrepareDynamicResources", problem)
            )
            self.pods[key].done = True
            return
        started = self._stamp()
        self.pods[key].started = started
        if self.ready_seconds:
            await self._set_status(pod, self._running_status(pod, started, ready=False))
            await self.clock.sleep(self.ready_seconds)
        await self._set_status(pod, self._running_status(pod, started, ready=True))
        if known.duration is None:
            return
        left = known.duration - self.progress.get(known.work, 0.0)
        await self.clock.sleep(known.taken + left - self.clock.monotonic())
        exit_code = int((meta.get("annotations") or {}).get(EXIT_CODE_ANNOTATION, "0"))
        await self._terminate(key, pod, exit_code)

    async def _claims_problem(self, pod: Obj) -> str:
        """Why the pod's DRA claims do not let it start ("" when they do)."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        recorded = {
            s.get("name"): s.get("resourceClaimName")
            for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
        }
        for pod_claim in spec.get("resourceClaims") or []:
            name = pod_claim.get("resourceClaimName") or recorded.get(pod_claim.get("name"))
            if not name:
                return (
                    f"pod claim {pod_claim.get('name')}: no ResourceClaim was created "
                    "from its template yet"
                )
            try:
                claim = await _json(
                    self.resource.read_namespaced_resource_claim(
                        name, meta["namespace"], _preload_content=False
                    )
                )
            except ApiException as exc:
                if exc.status == 404:
                    return f"resourceclaim {meta['namespace']}/{name} not found"
                raise
            status = claim.get("status") or {}
            if not status.get("allocation"):
                return f"resourceclaim {meta['namespace']}/{name} is not allocated"
            if meta["uid"] not in {r.get("uid") for r in status.get("reservedFor") or []}:
                return (
                    f"resourceclaim {meta['namespace']}/{name} is not reserved for pod "
                    f"{meta['name']} ({meta['uid']})"
                )
        return ""

    async def finish(self, namespace: str, name: str, exit_code: int = 0) -> None:
        """End a running pod now: Succeeded with exit code 0, else Failed."""
        key = (namespace, name)
        known = self.pods.get(key)
        if known is None or known.done:
            raise ValueError(f"pod {namespace}/{name} is not running on these kubelets")
        if known.task is not None:
            known.task.cancel()
        pod = await _json(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
        await self._terminate(key, pod, exit_code)

    async def _terminate(self, key: tuple[str, str], pod: Obj, exit_code: int) -> None:
        known = self.pods.get(key)
        if known is None or known.done:
            return
        known.done = True
        if exit_code == 0:  # its work is done: nothing to resume
            known.saved = True
            self.progress.pop(known.work, None)
        await self._set_status(pod, self._finished_status(pod, known.started, exit_code))

    async def _stop_pod(self, key: tuple[str, str], pod: Obj) -> None:
        """Graceful deletion: stop the containers, then remove the pod (grace 0, uid)."""
        known = self.pods.get(key)
        if known is None:
            return
        self._interrupted(known)  # at the stop signal: what it saved by then is kept
        if known.task is not None and not known.task.done():
            known.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await known.task
        exit_code = 143  # stopped by SIGTERM
        if not known.done and known.started:
            seconds, killed = _stopping(pod)
            await self.clock.sleep(seconds)
            exit_code = 137 if killed else exit_code
        with contextlib.suppress(ApiException):
            if not known.done and known.started:
                await self._terminate(key, pod, exit_code)
            await _json(
                self.core.delete_namespaced_pod(
                    key[1],
                    key[0],
                    body={"gracePeriodSeconds": 0, "preconditions": {"uid": known.uid}},
                    _preload_content=False,
                )
            )

    # --- nodes failing ---------------------------------------------------------------------

    async def fail_node(self, name: str) -> None:
        """The node goes NotReady (lease no longer renewed) and its pods are lost."""
        if name not in self.nodes:
            raise ValueError(f"node {name} is not one of these kubelets' nodes")
        self.failed.add(name)
        lost = [k for k, known in self.pods.items() if known.node == name and not known.done]
        for key in lost:
            known = self.pods[key]
            self._interrupted(known)
            if known.task is not None:
                known.task.cancel()
            known.done = True
        await self._node_status(name, "Unknown")
        for key in lost:
            with contextlib.suppress(ApiException):
                pod = await _json(
                    self.core.read_namespaced_pod(key[1], key[0], _preload_content=False)
                )
                await self._set_status(
                    pod, self._failed_status(pod, "NodeLost", f"node {name} failed")
                )

    async def recover_node(self, name: str) -> None:
        self.failed.discard(name)
        await self._node_status(name, "True")
        await self._renew(name)

    # --- status documents ------------------------------------------------------------------

    async def _set_status(self, pod: Obj, status: Obj) -> None:
        meta = pod["metadata"]
        await _json(
            self.core.patch_namespaced_pod_status(
                meta["name"],
                meta["namespace"],
                {"status": status},
                _content_type=MERGE,
                _preload_content=False,
            )
        )

    async def _event(self, pod: Obj, reason: str, message: str) -> None:
        meta = pod["metadata"]
        stamp = self._stamp()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": COMPONENT, "host": pod["spec"]["nodeName"]},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": COMPONENT,
            "reportingInstance": pod["spec"]["nodeName"],
        }
        await _json(
            self.core.create_namespaced_event(meta["namespace"], event, _preload_content=False)
        )

    def _conditions(self, pod: Obj, ready: bool, reason: str = "") -> list[Obj]:
        stamp = self._stamp()
        scheduled = [
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") == "PodScheduled"
        ] or [{"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp}]

        def condition(kind: str, status: bool, why: str = "") -> Obj:
            found: Obj = {
                "type": kind,
                "status": "True" if status else "False",
                "lastProbeTime": None,
                "lastTransitionTime": stamp,
            }
            if why and not status:
                found["reason"] = why
            return found

        not_ready = reason or "ContainersNotReady"
        return [
            condition("PodReadyToStartContainers", not reason),
            condition("Initialized", True),
            condition("Ready", ready, not_ready),
            condition("ContainersReady", ready, not_ready),
            *scheduled,
        ]

    def _container_statuses(self, pod: Obj, state: Obj, ready: bool) -> list[Obj]:
        return [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": c.get("image", ""),
                "containerID": f"sim://{pod['metadata']['uid']}/{c['name']}",
                "ready": ready,
                "started": "running" in state,
                "restartCount": 0,
                "state": state,
            }
            for c in (pod.get("spec") or {}).get("containers") or []
        ]

    def _running_status(self, pod: Obj, started: str, *, ready: bool) -> Obj:
        host = pod["spec"]["nodeName"]
        return {
            "phase": "Running",
            "hostIP": host,
            "podIP": host,
            "startTime": started,
            "conditions": self._conditions(pod, ready),
            "containerStatuses": self._container_statuses(
                pod, {"running": {"startedAt": started}}, ready
            ),
        }

    def _finished_status(self, pod: Obj, started: str, exit_code: int) -> Obj:
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started or self._stamp(),
            "finishedAt": self._stamp(),
        }
        return {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": self._conditions(pod, False, "PodCompleted"),
            "containerStatuses": self._container_statuses(pod, {"terminated": terminated}, False),
        }

    def _failed_status(self, pod: Obj, reason: str, message: str) -> Obj:
        return {
            "phase": "Failed",
            "reason": reason,
            "message": message,
            "conditions": self._conditions(pod, False, reason),
        }


def _stopping(pod: Obj) -> tuple[float, bool]:
    """How long a deleted pod's containers take to exit (its stop annotation), and whether
    the grace period ran out first (then they are killed when it ends)."""
    meta = pod["metadata"]
    wanted = float((meta.get("annotations") or {}).get(STOP_ANNOTATION, 0))
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is not None and wanted > float(grace):
        return float(grace), True
    return wanted, False
