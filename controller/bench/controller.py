"""`phalanx bench controller`: the whole controller against the API emulator.

Three processes, so each figure is its own: the emulator (with its controllers) serves in
one, the controller runs in a second exactly as `phalanx controller` does (settings,
client rate limiter, caches, decision loop), and this process builds the cluster
(`nodes` Nodes with a ResourceSlice of 8 GPUs each), submits `gangs` gangs of
`pods_per_gang` pods with one 1-GPU claim per pod, and watches the pods get bound.

Two modes. GangJob: the bench submits GangJobs, the controller makes their pods and
claims (claims with the delete-protection finalizer already set). Foreign: the bench
makes each gang's ResourceClaims (without the finalizer, as a user of kube-scheduler
would) and then its pods (`schedulerName: phalanx`, the gang labels and size annotation),
and the controller only allocates, reserves and binds.

Figures: pods bound per second (first submission to last binding); admission latency
per gang, p50 and p95, as issue 10 defines it: from the gang's last pod created to all
its pods bound. Both ends are read from one watch on pods that the bench holds: a gang's
start is when the watch first shows its last pod (the pod exists on the API server from
then on), its end when the watch shows its last pod bound. In GangJob mode the
controller creates the pods, so this leaves out the time from the GangJob's submission
to its pods' creation: with all 100 gangs submitted at once, mostly the wait of a gang
behind those admitted before it. That wait is reported too, in a column of its own, as
the latency from the GangJob's submission (`admission_from_submission_p50_ms` /
`_p95_ms`): what a user who submits 100 gangs at once waits for them. Then the
controller's API requests per pod by verb and resource, and its writes per pod without
the pod, claim and Service creations and the Events (the part a scheduler adds to what a
workload controller writes anyway); the controller's CPU seconds over the run and its
peak RSS, and the emulator's CPU seconds (the two share the machine's cores). The driver
(this process) shares them too: its CPU seconds, and the seconds it took to submit every
gang (`driver_submitting_s`): where the pods are bound about as fast as it makes them
(foreign mode), pods bound per second is partly the driver's pace.
`profile` (`--profile DIR`) writes a pyinstrument profile of each of the two processes
over the same span (its sampling slows them: time the run without it).

The figures measured, what they depend on (the load of the machine above all) and where
the CPU goes are in README.md (Benchmarks), not here: they change with the code and the
machine.

Cold start (`cold_start`): the cluster and `gangs` pending GangJobs are in the API server
before the controller starts; figures are the seconds from starting the controller's
process to its caches synced, to its first cycle decided, and to that cycle done (its
admissions written), with its requests by verb, CPU seconds and peak RSS.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from controller import jsonio
from controller.kube.foreign import GANG_LABEL, QUEUE_LABEL, SIZE_ANNOTATION
from controller.runtime import freeze_heap, loop_factory, serve, settle_heap
from emulator.kubelet import NodeDescription, node_object, slice_object

Obj = dict[str, Any]
GANG_JOBS = "/apis/phalanx.dev/v1alpha1/namespaces/default/gangjobs"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"
PODS = "/api/v1/namespaces/default/pods"
ONE_GPU = {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}}

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
FOREIGN_TARGETS = {**TARGETS, "scheduling_writes_per_pod": 3.2}
"""What kube-scheduler writes for a pod whose claim lacks the delete-protection finalizer
(the update adding it, the /status write of allocation and reservedFor, the binding),
plus at most 0.2 per pod for the gang's record."""
COLD_START_TARGETS = {"first_cycle_done_s": 20.0, "controller_peak_rss_mib": 300.0}
COLD_START_SHAPE = (1000, 2000)
"""Nodes and pending GangJobs of the cold start (issue 10)."""
NOT_SCHEDULING = ("POST pods", "POST resourceclaims", "POST services", "POST events")
"""Objects a workload controller makes anyway, and Events (kube-scheduler's Scheduled
events are not counted among its writes either)."""
CONCURRENCY = 16
CRDS = Path(__file__).parents[2] / "crds"


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


class _Profile:
    """A pyinstrument profile of this process from `start()` to `write()` (nothing if no
    folder was given): `name`.txt is the call tree, `name`-flat.txt the functions by their
    own time."""

    def __init__(self, folder: str | None, name: str) -> None:
        self.path = Path(folder) / name if folder else None
        self.profiler: Any = None

    def start(self) -> None:
        if self.path is not None:
            from pyinstrument import Profiler

            self.profiler = Profiler(interval=0.0005, async_mode="disabled")
            self.profiler.start()

    def write(self) -> None:
        if self.profiler is None or self.path is None:
            return
        session = self.profiler.stop()
        self.profiler = None
        tree = self._render(session, flat=False)
        self.path.with_suffix(".txt").write_text(tree)
        flat = self._render(session, flat=True)
        self.path.with_name(f"{self.path.name}-flat.txt").write_text(flat)

    @staticmethod
    def _render(session: Any, *, flat: bool) -> str:
        from pyinstrument.renderers import ConsoleRenderer

        renderer = ConsoleRenderer(unicode=True, color=False, show_all=False, flat=flat)
        return str(renderer.render(session))


def _serve_emulator(conn: Connection, profile: str | None) -> None:
    """The API server process: our CRDs loaded, (url, kubeconfig) sent, serve until told
    "stop"; from "start" to "cpu" its CPU seconds are the run's (sent back on "cpu"), and
    the profile's (`profile`: a folder, or None)."""
    from emulator.server import Emulator

    profiler = _Profile(profile, "emulator")

    async def main() -> None:
        async with Emulator(controllers=True, token="bench") as emulator:
            for manifest in sorted(CRDS.glob("*.yaml")):
                await emulator.load(manifest)
            conn.send((emulator.url, emulator.token, str(emulator.kubeconfig_path)))
            loop = asyncio.get_running_loop()
            while (said := await loop.run_in_executor(None, conn.recv)) != "stop":
                if said == "start":
                    started = time.process_time()
                    profiler.start()
                else:  # "cpu"
                    conn.send(time.process_time() - started)
                    profiler.write()

    serve(main())


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


def _serve_controller(
    conn: Connection, kubeconfig: str, qps: float, burst: int, cold: bool, profile: str | None
) -> None:
    """The controller process: `phalanx controller` without leader election; counts its
    requests by verb. Sends ("ready", when) once its caches synced and ("cycle", decided,
    done, admitted) after its first cycle (times on the system's monotonic clock). Unless
    `cold`, the counts and CPU time start at "start"; at "stop" it sends ("figures",
    counts, cpu seconds, peak RSS), having written its profile (`profile`: a folder, or
    None) of the same span."""
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

    def watch(replica: Replica) -> None:
        rest, controller = replica.controller.rest, replica.controller
        send, decide, cycle = rest._send, controller.engine.cycle, controller.cycle
        decided: list[tuple[float, int]] = []

        async def counted(method: str, path: str, query: Any, *args: Any) -> Any:
            counts[_verb(method, path, query)] += 1
            return await send(method, path, query, *args)

        def timed_decide(*args: Any, **kwargs: Any) -> Any:
            result = decide(*args, **kwargs)
            if not decided:
                decided.append((time.monotonic(), len(result.admitted)))
            return result

        async def timed_cycle() -> Any:
            first = not decided
            result = await cycle()
            if first:
                conn.send(("cycle", decided[0][0], time.monotonic(), decided[0][1]))
            return result

        # instance wrappers, not patches: this process's controller only
        setattr(rest, "_send", counted)  # noqa: B010
        setattr(controller.engine, "cycle", timed_decide)  # noqa: B010
        setattr(controller, "cycle", timed_cycle)  # noqa: B010
        waiting.append(loop.create_task(ready(replica)))

    async def ready(replica: Replica) -> None:
        await replica.caches.ready.wait()
        conn.send(("ready", time.monotonic()))
        started = 0.0
        if not cold:
            await loop.run_in_executor(None, conn.recv)  # "start"
            counts.clear()
            started = time.process_time()
            profiler.start()
        await loop.run_in_executor(None, conn.recv)  # "stop"
        cpu[0] = time.process_time() - started
        profiler.write()
        stop.set()

    async def main() -> None:
        conf = await manager.configuration(Path(kubeconfig))
        await manager.run(settings, conf, stop=stop, on_ready=watch, on_synced=freeze_heap)

    cpu = [0.0]
    profiler = _Profile(profile, "controller")
    waiting: list[asyncio.Task[None]] = []
    settle_heap()
    loop = loop_factory()()
    stop = asyncio.Event()
    loop.run_until_complete(main())
    conn.send(("figures", dict(counts), cpu[0], _rss_mib()))


class _Messages:
    """What the controller process sends, by tag (messages may come in any order)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.said: set[str] = set()

    def say(self, word: str) -> None:
        """Send "start" or "stop", once each."""
        if word not in self.said:
            self.said.add(word)
            self.conn.send(word)

    def expect(self, tag: str, timeout: float) -> tuple[Any, ...]:
        while tag not in self.seen:
            if not self.conn.poll(timeout):
                raise RuntimeError(f"the controller sent no {tag!r} in {timeout:g} s")
            message = self.conn.recv()
            self.seen[message[0]] = message[1:]
        return self.seen[tag]


def _basics(shape: Shape) -> list[tuple[str, dict[str, Any]]]:
    """Device class, claim template and queue (room for every gang)."""
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
                "spec": {"spec": ONE_GPU},
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


def _foreign_gang(name: str, pods: int) -> tuple[list[Obj], list[Obj]]:
    """A gang as a user of kube-scheduler makes it: one ResourceClaim per pod (no
    finalizer), then pods naming them, with the gang labels and size annotation."""
    claims, made = [], []
    for index in range(pods):
        pod = f"{name}-{index}"
        claims.append(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": f"{pod}-gpu", "namespace": "default"},
                "spec": ONE_GPU,
            }
        )
        made.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": "default",
                    "labels": {GANG_LABEL: name, QUEUE_LABEL: "bench"},
                    "annotations": {SIZE_ANNOTATION: str(pods)},
                },
                "spec": {
                    "schedulerName": "phalanx",
                    "containers": [
                        {
                            "name": "train",
                            "image": "trainer",
                            "resources": {"requests": {"cpu": "100m"}},
                        }
                    ],
                    "resourceClaims": [{"name": "gpu", "resourceClaimName": f"{pod}-gpu"}],
                },
            }
        )
    return claims, made


async def _each(calls: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:
            await call()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


class _Bindings:
    """A watch on pods noting, for each gang, when its last pod was first seen (it exists
    on the API server from then on) and when its last pod was bound. Both ends are seen
    through this one watch, so its delivery delay is on both sides of a latency."""

    def __init__(self, pods_per_gang: int, gangs: int) -> None:
        self.pods_per_gang = pods_per_gang
        self.gangs = gangs
        self.seen: dict[str, set[str]] = {}
        self.created: dict[str, float] = {}
        self.bound: dict[str, set[str]] = {}
        self.done: dict[str, float] = {}
        self.all_done = asyncio.Event()

    async def follow(self, session: aiohttp.ClientSession, rv: str) -> None:
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "3600"}
        async with session.get("/api/v1/pods", params=params) as response:
            async for line in response.content:
                self.note(jsonio.loads(line).get("object") or {}, time.perf_counter())

    def note(self, pod: Obj, now: float) -> None:
        gang = (pod["metadata"].get("labels") or {}).get(GANG_LABEL, "")
        name = pod["metadata"]["name"]
        if self._complete(self.seen, gang, name) and gang not in self.created:
            self.created[gang] = now
        if not (pod.get("spec") or {}).get("nodeName"):
            return
        if self._complete(self.bound, gang, name) and gang not in self.done:
            self.done[gang] = now
            if len(self.done) == self.gangs:
                self.all_done.set()

    def _complete(self, names: dict[str, set[str]], gang: str, name: str) -> bool:
        """Add the pod; whether the gang has all its pods now."""
        pods = names.setdefault(gang, set())
        pods.add(name)
        return len(pods) == self.pods_per_gang


Call = Callable[..., Awaitable[Any]]


@asynccontextmanager
async def _client(url: str, token: str) -> AsyncIterator[tuple[Call, aiohttp.ClientSession]]:
    """(`call(method, path, body=None, **kw)`: the answer's JSON, RuntimeError if not
    2xx; the session, for watches)."""
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + 4)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:

        async def call(method: str, path: str, body: Any = None, **kw: Any) -> Any:
            if body is not None:
                kw["data"] = jsonio.dumps(body)
                kw["headers"] = {"Content-Type": "application/json", **kw.get("headers", {})}
            async with session.request(method, path, **kw) as response:
                payload = await response.read()
                if response.status >= 300:
                    raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
                return jsonio.loads(payload)

        yield call, session


async def _build(call: Call, shape: Shape) -> None:
    """Device class, claim template, queue; Nodes (Ready, untainted) and their slices."""
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


async def _submit_gang_jobs(call: Call, shape: Shape, submitted: dict[str, float]) -> None:
    async def submit(name: str) -> None:
        submitted[name] = time.perf_counter()
        await call("POST", GANG_JOBS, _gang_job(name, shape.pods_per_gang))

    await _each([partial(submit, f"g{g}") for g in range(shape.gangs)])


async def _drive(
    url: str, token: str, shape: Shape, mode: str, start: Callable[[], None], timeout: float
) -> dict[str, Any]:
    async with _client(url, token) as (call, session):
        await _build(call, shape)
        rv = (await call("GET", "/api/v1/pods"))["metadata"]["resourceVersion"]
        bindings = _Bindings(shape.pods_per_gang, shape.gangs)
        following = asyncio.create_task(bindings.follow(session, rv))
        start()
        submitted: dict[str, float] = {}
        first = time.perf_counter()
        cpu = time.process_time()

        async def submit_foreign(name: str) -> None:
            claims, pods = _foreign_gang(name, shape.pods_per_gang)
            await asyncio.gather(*(call("POST", CLAIMS, c) for c in claims))
            await asyncio.gather(*(call("POST", PODS, p) for p in pods))

        if mode == "foreign":
            await _each([partial(submit_foreign, f"g{g}") for g in range(shape.gangs)])
        else:
            await _submit_gang_jobs(call, shape, submitted)
        submitting = time.perf_counter() - first
        try:
            await asyncio.wait_for(bindings.all_done.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"only {len(bindings.done)} of {shape.gangs} gangs bound in {timeout:g} s"
            ) from None
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
    done = bindings.done
    figures = {
        "seconds": max(done.values()) - first,
        "submitting": submitting,
        "cpu": time.process_time() - cpu,
    }
    figures |= _percentiles("", [done[g] - bindings.created[g] for g in done])
    if submitted:
        figures |= _percentiles("from_submission_", [done[g] - submitted[g] for g in done])
    return figures


def _percentiles(prefix: str, seconds: list[float]) -> dict[str, float]:
    latencies = sorted(s * 1000 for s in seconds)
    return {
        f"{prefix}p50": statistics.median(latencies),
        f"{prefix}p95": latencies[int(0.95 * (len(latencies) - 1))],
    }


async def _cold_cluster(url: str, token: str, shape: Shape) -> None:
    """The cluster and every GangJob, before the controller starts."""
    async with _client(url, token) as (call, _):
        await _build(call, shape)
        await _submit_gang_jobs(call, shape, {})


@contextmanager
def _processes(
    qps: float, burst: int, cold: bool, profile: Path | None = None
) -> Iterator[tuple[str, str, Connection, _Messages, Callable[[], None]]]:
    """The emulator process started; yields (url, token, emulator pipe, controller
    messages, start the controller process)."""
    folder = None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        folder = str(profile)
    context = multiprocessing.get_context("spawn")
    api_end, api_child = context.Pipe()
    ctl_end, ctl_child = context.Pipe()
    server = context.Process(target=_serve_emulator, args=(api_child, folder))
    server.start()
    processes = [server]
    messages = _Messages(ctl_end)
    try:
        url, token, kubeconfig = api_end.recv()

        def start_controller() -> None:
            controller = context.Process(
                target=_serve_controller,
                args=(ctl_child, kubeconfig, qps, burst, cold, folder),
            )
            controller.start()
            processes.append(controller)

        yield url, token, api_end, messages, start_controller
    finally:
        if len(processes) > 1:
            messages.say("stop")
        api_end.send("stop")
        for process in reversed(processes):
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def run(
    shape: Shape,
    *,
    mode: str = "gangjob",
    qps: float = 50.0,
    burst: int = 100,
    timeout: float = 600.0,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Start the emulator and the controller processes, drive them, return the figures;
    with `profile` (a folder), each process's pyinstrument profile of the measured span
    is written there (emulator.txt, controller.txt and their -flat.txt)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    with _processes(qps, burst, False, profile) as (
        url,
        token,
        api_end,
        messages,
        start_controller,
    ):
        start_controller()
        messages.expect("ready", timeout)

        def start() -> None:
            api_end.send("start")
            messages.say("start")

        driven = asyncio.run(_drive(url, token, shape, mode, start, timeout))
        messages.say("stop")
        api_end.send("cpu")
        counts, cpu, rss = messages.expect("figures", timeout)
        api_cpu = api_end.recv()
    pods = shape.pods
    writes = sum(n for verb, n in counts.items() if not verb.startswith(("GET", "LIST", "WATCH")))
    scheduling = writes - sum(counts.get(verb, 0) for verb in NOT_SCHEDULING)
    figures: dict[str, Any] = {
        "mode": mode,
        **_rate(qps, burst),
        "nodes": shape.nodes,
        "gangs": shape.gangs,
        "pods": pods,
        "pods_bound_per_s": round(pods / driven["seconds"], 1),
        "admission_p50_ms": round(driven["p50"], 1),
        "admission_p95_ms": round(driven["p95"], 1),
        **{
            f"admission_{key}_ms": round(driven[key], 1)
            for key in ("from_submission_p50", "from_submission_p95")
            if key in driven
        },
        "writes_per_pod": round(writes / pods, 3),
        "scheduling_writes_per_pod": round(scheduling / pods, 3),
    }
    for verb in sorted(counts):
        figures[f"requests_per_pod[{verb}]"] = round(counts[verb] / pods, 3)
    figures["controller_cpu_s"] = round(cpu, 2)
    figures["controller_peak_rss_mib"] = round(rss, 1)
    figures["emulator_cpu_s"] = round(api_cpu, 2)
    figures["driver_submitting_s"] = round(driven["submitting"], 3)  # a tiny run takes ms
    figures["driver_cpu_s"] = round(driven["cpu"], 3)
    return figures


def run_cold_start(
    shape: Shape, *, qps: float = 50.0, burst: int = 100, timeout: float = 600.0
) -> dict[str, Any]:
    """Build the cluster and its pending GangJobs, then start the controller: seconds to
    its caches synced, its first cycle decided and that cycle done."""
    with _processes(qps, burst, cold=True) as (url, token, _, messages, start_controller):
        asyncio.run(_cold_cluster(url, token, shape))
        started = time.monotonic()
        start_controller()
        (ready,) = messages.expect("ready", timeout)
        decided, done, admitted = messages.expect("cycle", timeout)
        messages.say("stop")
        counts, cpu, rss = messages.expect("figures", timeout)
    figures: dict[str, Any] = {
        "mode": "gangjob (cold start)",
        **_rate(qps, burst),
        "nodes": shape.nodes,
        "pending_gangs": shape.gangs,
        "caches_synced_s": round(ready - started, 2),
        "first_cycle_decided_s": round(decided - started, 2),
        "first_cycle_done_s": round(done - started, 2),
        "admitted_in_first_cycle": admitted,
    }
    for verb in sorted(counts):
        figures[f"requests[{verb}]"] = counts[verb]
    figures["controller_cpu_s"] = round(cpu, 2)
    figures["controller_peak_rss_mib"] = round(rss, 1)
    return figures


def _rate(qps: float, burst: int) -> dict[str, Any]:
    return {
        "qps": "unthrottled" if qps >= UNTHROTTLED else qps,
        "burst": "unthrottled" if burst >= UNTHROTTLED else burst,
    }


def targets(figures: dict[str, Any]) -> dict[str, float]:
    """The targets the figures of this run are held to (by mode)."""
    if "first_cycle_done_s" in figures:
        return COLD_START_TARGETS
    return FOREIGN_TARGETS if figures["mode"] == "foreign" else TARGETS


def verdicts(figures: dict[str, Any]) -> dict[str, bool]:
    """Throughputs (`_per_s`) are floors, the rest ceilings (writes per pod inclusive)."""
    met = {}
    for name, target in targets(figures).items():
        value = figures[name]
        if name.endswith("_per_s"):
            met[name] = value >= target
        elif name == "scheduling_writes_per_pod":
            met[name] = value <= target
        else:
            met[name] = value < target
    return met
