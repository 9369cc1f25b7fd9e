"""`phalanx bench controller`: the whole controller against the API emulator.

Three processes, so each figure is its own: the emulator (with its controllers) serves in
one, the controller runs in a second exactly as `phalanx controller` does (settings,
client rate limiter, caches, decision loop), and this process builds the cluster
(`nodes` Nodes with a ResourceSlice of 8 GPUs each), submits `gangs` GangJobs of
`pods_per_gang` pods with one 1-GPU claim per pod, and watches the pods get bound.

Figures: pods bound per second (first submission to last binding); admission latency
per gang, p50 and p95, from the gang's submission (in GangJob mode the controller creates
the pods, so their creation is part of the latency) to all its pods bound; the
controller's API requests per pod by verb and resource, and its writes per pod without
the pod, claim and Service creations and the Events (the part a scheduler adds to what a
workload controller writes anyway); the controller's CPU seconds over the run and its peak
RSS, and the emulator's CPU seconds (the two share the machine's cores).

Foreign mode (pods with per-pod claims made by the bench, as a user of kube-scheduler
would) needs foreign gangs in the controller; until they exist it reports that instead
of figures.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from emulator.kubelet import NodeDescription, node_object, slice_object

MODES = ("gangjob", "foreign")
UNTHROTTLED = 1e9
"""QPS and burst that never make a request wait."""
TARGETS = {
    "pods_bound_per_s": 300.0,
    "admission_p95_ms": 1000.0,
    "scheduling_writes_per_pod": 2.2,
    "controller_peak_rss_mib": 300.0,
}
"""From issue 10: scheduling writes are claim /status and binding per pod (claims come
with their finalizer in GangJob mode), plus at most 0.2 per pod for the gang's record."""
NOT_SCHEDULING = ("POST pods", "POST resourceclaims", "POST services", "POST events")
"""Objects a workload controller makes anyway, and Events (kube-scheduler's Scheduled
events are not counted among its writes either)."""
CONCURRENCY = 16
CRDS = Path(__file__).parents[2] / "crds"


class NotSupported(Exception):
    """A mode the controller cannot run yet; the message says which."""


@dataclass(frozen=True)
class Shape:
    nodes: int = 100
    gpus_per_node: int = 8
    gangs: int = 100
    pods_per_gang: int = 8

    @property
    def pods(self) -> int:
        return self.gangs * self.pods_per_gang


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _serve_emulator(conn: Connection) -> None:
    """The API server process: our CRDs loaded, (url, kubeconfig) sent, serve until told
    "stop"; from "start" to "cpu" its CPU seconds are the run's (sent back on "cpu")."""
    from emulator.server import Emulator

    async def main() -> None:
        async with Emulator(controllers=True, token="bench") as emulator:
            for manifest in sorted(CRDS.glob("*.yaml")):
                await emulator.load(manifest)
            conn.send((emulator.url, emulator.token, str(emulator.kubeconfig_path)))
            loop = asyncio.get_running_loop()
            while (said := await loop.run_in_executor(None, conn.recv)) != "stop":
                if said == "start":
                    started = time.process_time()
                else:  # "cpu"
                    conn.send(time.process_time() - started)

    asyncio.run(main())


def _verb(method: str, path: str, query: object) -> str:
    """`METHOD resource[/subresource]`, or WATCH / LIST for reads of collections."""
    parts = path.strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    resource_name = "/".join([parts[0], *parts[2:3]]) if parts else path
    if method == "GET" and len(parts) == 1:
        watching = isinstance(query, dict) and query.get("watch")
        return f"{'WATCH' if watching else 'LIST'} {resource_name}"
    return f"{method} {resource_name}"


def _serve_controller(conn: Connection, kubeconfig: str, qps: float, burst: int) -> None:
    """The controller process: `phalanx controller` without leader election; counts its
    requests by verb; "ready" once its caches synced; from "start" to "stop" the counts
    and CPU time are the run's, then (counts, cpu seconds, peak RSS) are sent."""
    from controller.kube import manager
    from controller.kube.manager import Replica
    from controller.logs import configure_json_logs
    from controller.settings import Settings

    configure_json_logs("error")
    settings = Settings(
        kubeconfig=Path(kubeconfig),
        qps=qps,
        burst=burst,
        leader_elect=False,
        health_host="127.0.0.1",
        health_port=0,
    )
    counts: Counter[str] = Counter()

    def count(replica: Replica) -> None:
        rest = replica.controller.rest
        send = rest._send

        async def counted(method: str, path: str, query: Any, *args: Any) -> Any:
            counts[_verb(method, path, query)] += 1
            return await send(method, path, query, *args)

        setattr(rest, "_send", counted)  # noqa: B010 (an instance wrapper, not a patch)
        waiting.append(loop.create_task(ready(replica)))

    async def ready(replica: Replica) -> None:
        await replica.caches.ready.wait()
        conn.send("ready")
        await loop.run_in_executor(None, conn.recv)  # "start"
        counts.clear()
        started = time.process_time()
        await loop.run_in_executor(None, conn.recv)  # "stop"
        cpu[0] = time.process_time() - started
        stop.set()

    async def main() -> None:
        conf = await manager.configuration(Path(kubeconfig))
        await manager.run(settings, conf, stop=stop, on_ready=count)

    cpu = [0.0]
    waiting: list[asyncio.Task[None]] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    loop.run_until_complete(main())
    conn.send((dict(counts), cpu[0], _rss_mib()))


def _basics(shape: Shape) -> list[tuple[str, dict[str, Any]]]:
    """Device class, claim template and queue (room for every gang)."""
    one_gpu = {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}}
    return [
        (
            "/apis/resource.k8s.io/v1/deviceclasses",
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "DeviceClass",
                "metadata": {"name": "gpu"},
                "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.bench'"}}]},
            },
        ),
        (
            "/apis/resource.k8s.io/v1/namespaces/default/resourceclaimtemplates",
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaimTemplate",
                "metadata": {"name": "one-gpu", "namespace": "default"},
                "spec": {"spec": one_gpu},
            },
        ),
        (
            "/apis/phalanx.dev/v1alpha1/queues",
            {
                "apiVersion": "phalanx.dev/v1alpha1",
                "kind": "Queue",
                "metadata": {"name": "bench"},
                "spec": {"quota": [{"resource": "devices/gpu", "nominal": shape.pods}]},
            },
        ),
    ]


def _gang_job(name: str, pods: int) -> dict[str, Any]:
    pod_spec = {
        "containers": [
            {"name": "train", "image": "trainer", "resources": {"requests": {"cpu": "100m"}}}
        ],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
    }
    return {
        "apiVersion": "phalanx.dev/v1alpha1",
        "kind": "GangJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "queueName": "bench",
            "podSets": [{"name": "w", "replicas": pods, "template": {"spec": pod_spec}}],
        },
    }


async def _each(calls: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:
            await call()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


class _Bindings:
    """A watch on pods noting when each gang's last pod was bound."""

    def __init__(self, pods_per_gang: int) -> None:
        self.pods_per_gang = pods_per_gang
        self.bound: dict[str, set[str]] = {}
        self.done: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self.gangs = 0

    async def follow(self, session: aiohttp.ClientSession, rv: str) -> None:
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "3600"}
        async with session.get("/api/v1/pods", params=params) as response:
            async for line in response.content:
                pod = json.loads(line).get("object") or {}
                if not (pod.get("spec") or {}).get("nodeName"):
                    continue
                gang = (pod["metadata"].get("labels") or {}).get("phalanx.dev/gang", "")
                names = self.bound.setdefault(gang, set())
                names.add(pod["metadata"]["name"])
                if len(names) == self.pods_per_gang and gang not in self.done:
                    self.done[gang] = time.perf_counter()
                    if len(self.done) == self.gangs:
                        self.all_done.set()


async def _drive(
    url: str, token: str, shape: Shape, start: Callable[[], None], timeout: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + 4)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:

        async def call(method: str, path: str, body: Any = None, **kw: Any) -> Any:
            async with session.request(method, path, json=body, **kw) as response:
                payload = await response.read()
                if response.status >= 300:
                    raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
                return json.loads(payload)

        for path, body in _basics(shape):
            await call("POST", path, body)
        nodes = [
            NodeDescription(f"n{i}", gpus=shape.gpus_per_node, driver="gpu.bench")
            for i in range(shape.nodes)
        ]
        names = [n.name for n in nodes]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        untaint = {"spec": {"taints": None}}
        merge = {"Content-Type": "application/merge-patch+json"}
        await _each([partial(call, "POST", "/api/v1/nodes", node_object(n, now)) for n in nodes])
        slices = "/apis/resource.k8s.io/v1/resourceslices"
        await _each(
            [partial(call, "PATCH", f"/api/v1/nodes/{n}", untaint, headers=merge) for n in names]
            + [partial(call, "POST", slices, slice_object(n)) for n in nodes]
        )
        rv = (await call("GET", "/api/v1/pods"))["metadata"]["resourceVersion"]
        bindings = _Bindings(shape.pods_per_gang)
        bindings.gangs = shape.gangs
        following = asyncio.create_task(bindings.follow(session, rv))
        start()
        submitted: dict[str, float] = {}
        first = time.perf_counter()

        async def submit(name: str) -> None:
            submitted[name] = time.perf_counter()
            await call(
                "POST",
                "/apis/phalanx.dev/v1alpha1/namespaces/default/gangjobs",
                _gang_job(name, shape.pods_per_gang),
            )

        await _each([partial(submit, f"g{g}") for g in range(shape.gangs)])
        try:
            await asyncio.wait_for(bindings.all_done.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"only {len(bindings.done)} of {shape.gangs} gangs bound in {timeout:g} s"
            ) from None
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
    latencies = sorted((bindings.done[g] - submitted[g]) * 1000 for g in submitted)
    return {
        "seconds": max(bindings.done.values()) - first,
        "p50": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
    }


def run(
    shape: Shape,
    *,
    mode: str = "gangjob",
    qps: float = 50.0,
    burst: int = 100,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Start the emulator and the controller processes, drive them, return the figures."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "foreign":
        raise NotSupported(
            "foreign mode: not supported yet (the controller does not admit foreign gangs)"
        )
    context = multiprocessing.get_context("spawn")
    api_end, api_child = context.Pipe()
    ctl_end, ctl_child = context.Pipe()
    server = context.Process(target=_serve_emulator, args=(api_child,))
    server.start()
    controller = None
    try:
        url, token, kubeconfig = api_end.recv()
        controller = context.Process(
            target=_serve_controller, args=(ctl_child, kubeconfig, qps, burst)
        )
        controller.start()
        if ctl_end.recv() != "ready":
            raise RuntimeError("the controller did not start")

        def start() -> None:
            api_end.send("start")
            ctl_end.send("start")

        driven = asyncio.run(_drive(url, token, shape, start, timeout))
        ctl_end.send("stop")
        api_end.send("cpu")
        counts, cpu, rss = ctl_end.recv()
        api_cpu = api_end.recv()
    finally:
        api_end.send("stop")
        for process in (controller, server):
            if process is None:
                continue
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    pods = shape.pods
    writes = sum(n for verb, n in counts.items() if not verb.startswith(("GET", "LIST", "WATCH")))
    scheduling = writes - sum(counts.get(verb, 0) for verb in NOT_SCHEDULING)
    figures: dict[str, Any] = {
        "mode": mode,
        "qps": "unthrottled" if qps >= UNTHROTTLED else qps,
        "burst": "unthrottled" if burst >= UNTHROTTLED else burst,
        "nodes": shape.nodes,
        "gangs": shape.gangs,
        "pods": pods,
        "pods_bound_per_s": round(pods / driven["seconds"], 1),
        "admission_p50_ms": round(driven["p50"], 1),
        "admission_p95_ms": round(driven["p95"], 1),
        "writes_per_pod": round(writes / pods, 3),
        "scheduling_writes_per_pod": round(scheduling / pods, 3),
    }
    for verb in sorted(counts):
        figures[f"requests_per_pod[{verb}]"] = round(counts[verb] / pods, 3)
    figures["controller_cpu_s"] = round(cpu, 2)
    figures["controller_peak_rss_mib"] = round(rss, 1)
    figures["emulator_cpu_s"] = round(api_cpu, 2)
    return figures


def verdicts(figures: dict[str, Any]) -> dict[str, bool]:
    return {
        "pods_bound_per_s": figures["pods_bound_per_s"] >= TARGETS["pods_bound_per_s"],
        "admission_p95_ms": figures["admission_p95_ms"] < TARGETS["admission_p95_ms"],
        "scheduling_writes_per_pod": figures["scheduling_writes_per_pod"]
        <= TARGETS["scheduling_writes_per_pod"],
        "controller_peak_rss_mib": figures["controller_peak_rss_mib"]
        < TARGETS["controller_peak_rss_mib"],
    }
