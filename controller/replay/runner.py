"""Drive one live replay: cluster objects, kubelets, controller, jobs on the clock, outages,
then the wait for every job and the clean-up.

On the built-in emulator (no kubeconfig) the emulator runs in this process with our CRDs,
and its uids follow creation order (`Emulator(ordered_uids=True)`): jobs of one instant
are created in the simulator's order, so the controller breaks their tie (equal priority
and creationTimestamp) as the simulator does. With a kubeconfig nothing is installed:
the CRDs must be there already, and the replay refuses to touch nodes, Queues, namespaces
or a DeviceClass of the same names that it did not make.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from kubernetes_asyncio import client

from controller.kube import resources as r
from controller.kube.manager import ConfigError, Replica, configuration
from controller.kube.manager import run as run_controller
from controller.kube.rest import KubeError, Obj, Rest
from controller.replay.plan import RUN_LABEL, JobPlan, ReplayError, ReplayPlan, policy_settings
from controller.replay.record import Clock, CycleLog, CycleSeen, Watcher
from emulator.kubelet import Kubelet
from emulator.nodes import NOT_READY, UNREACHABLE

UNTHROTTLED = 1e9
CRDS = r.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CRD", False)


@dataclass
class Options:
    kubeconfig: Path | None = None
    """None: the built-in API emulator, in this process."""
    external_controller: bool = False
    """A controller already runs against the cluster: do not start one."""
    keep: bool = False
    """Leave everything in place at the end (and the emulator serving, until cancelled)."""
    qps: float | None = None
    """The in-process controller's client QPS (and burst); None: unthrottled."""
    stall_seconds: float = 30.0
    """Loop seconds with nothing running, nothing due and no event before giving up."""
    settle_seconds: float = 10.0
    """Loop seconds to wait, once all is done, for the last releases to show."""
    announce: Callable[[str], None] = print
    on_progress: Callable[[int, int], None] | None = None
    """(jobs done, jobs) as they finish."""
    kept: Callable[[LiveRun], Awaitable[None]] | None = None
    """With `keep`: awaited once the run is over, before anything stops (the CLI prints
    the report, then serves until interrupted)."""


@dataclass
class LiveRun:
    """A finished replay: what the watcher saw, and how the run ended."""

    plan: ReplayPlan
    watcher: Watcher
    end: float
    """Scenario seconds when the run stopped (the horizon, or the last completion)."""
    stopped: str
    """Why: every job done, horizon, or stalled."""
    node_failures: int
    loop_seconds: float
    cycles: list[CycleSeen] = field(default_factory=list)
    in_process: bool = True
    held_at_end: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def replay(plan: ReplayPlan, options: Options) -> LiveRun:
    """Run the plan live; raises ReplayError for a cluster it cannot use."""
    async with contextlib.AsyncExitStack() as stack:
        kubeconfig = options.kubeconfig
        if kubeconfig is None:
            from emulator import Emulator

            # TLS only when kept: kubectl sends its token over HTTPS only
            emulator = await stack.enter_async_context(
                Emulator(controllers=True, ordered_uids=True, tls=options.keep)
            )
            kubeconfig = emulator.kubeconfig_path
        try:
            conf = await configuration(kubeconfig)
        except ConfigError as exc:
            raise ReplayError(str(exc)) from None
        clients = [await stack.enter_async_context(client.ApiClient(conf)) for _ in range(3)]
        if _loopback(conf):
            for api_client in clients:
                _local(api_client)
        rest, watching, kubelet_api = Rest(clients[0]), Rest(clients[1]), clients[2]
        if options.kubeconfig is None:
            await _install_crds(rest)
        await _refuse_taken_names(rest, plan)
        await _create_cluster(rest, plan)
        kubelet = Kubelet(kubelet_api, plan.nodes)
        await kubelet.start()
        stack.push_async_callback(kubelet.stop)
        await _until_schedulable(rest, plan)
        clock = Clock(plan.speed)
        watcher = Watcher(watching, plan, clock)
        watch_task = asyncio.create_task(watcher.run(), name="replay-watcher")
        stack.push_async_callback(_cancel, watch_task)
        await watcher.synced()
        batches = plan.batches()
        if batches and batches[0][0] == 0:
            await _submit(rest, [j.manifest for j in batches[0][1]])
            batches = batches[1:]
        log: CycleLog | None = None
        if not options.external_controller:
            log = await stack.enter_async_context(_controller(conf, plan, options, clock))
        clock.start()
        run = LiveRun(plan, watcher, 0.0, "", 0, 0.0, in_process=log is not None)
        started = asyncio.get_running_loop().time()
        try:
            await _drive(rest, plan, options, clock, watcher, kubelet, batches, run)
        finally:
            run.loop_seconds = asyncio.get_running_loop().time() - started
        if log is not None:
            run.cycles = list(log.cycles)
            watcher.link_cycles(run.cycles)
        if run.stopped == "every job done":
            run.held_at_end = await _settled(watcher, options.settle_seconds)
        if options.keep:
            options.announce(
                f"kept: the replay's objects are labelled {RUN_LABEL}={plan.run}; "
                f"KUBECONFIG={kubeconfig}"
            )
            if options.kept is not None:
                await options.kept(run)
        else:
            run.notes.extend(await _clean_up(rest, plan, watcher, in_process=log is not None))
        return run


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ---- setting up -------------------------------------------------------------------------
def _loopback(conf: client.Configuration) -> bool:
    """Whether the API server is on this machine (the emulator, in or out of process)."""
    host = urlsplit(conf.host).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _local(api_client: client.ApiClient) -> None:
    """A client of an API server on this machine (no proxy, no netrc to consult) skips
    aiohttp's look-ups of both in a worker thread on every request."""
    rest_client = api_client.rest_client
    old: aiohttp.ClientSession = rest_client.pool_manager
    rest_client.pool_manager = aiohttp.ClientSession(
        connector=old.connector, trust_env=False, read_bufsize=2**21
    )
    old.detach()


async def _install_crds(rest: Rest) -> None:
    """Our CRDs, as `phalanx crds` writes them (read from crds/ in a checkout)."""
    shipped = Path(__file__).parents[2] / "crds"
    if shipped.is_dir():
        texts = [p.read_text() for p in sorted(shipped.glob("*.yaml"))]
    else:
        from controller.api.crdgen import render_crds

        texts = list(render_crds().values())
    for text in texts:
        await rest.request("POST", CRDS.path(), body=yaml.safe_load(text))


async def _exists(rest: Rest, path: str) -> Obj | None:
    try:
        return await rest.get(path)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


async def _refuse_taken_names(rest: Rest, plan: ReplayPlan) -> None:
    """Names the replay would create that something else already has (or an earlier
    replay kept): one line each, then nothing is created."""
    try:
        await rest.get(r.GANG_JOBS.path(), {"limit": 1})
    except KubeError as exc:
        if exc.status == 404:
            raise ReplayError(
                "the cluster does not serve phalanx.dev/v1alpha1 GangJobs: install the CRDs "
                "first (kubectl apply -f crds/)"
            ) from None
        raise
    wanted = [
        *((r.NODES.path(name=n.name), f"node {n.name}") for n in plan.nodes),
        *((r.NAMESPACES.path(name=ns["metadata"]["name"]), "namespace") for ns in plan.namespaces),
        *((r.QUEUES.path(name=q["metadata"]["name"]), "Queue") for q in plan.queues),
        (r.DEVICE_CLASSES.path(name=plan.device_class["metadata"]["name"]), "DeviceClass"),
    ]
    found = await asyncio.gather(*(_exists(rest, path) for path, _ in wanted))
    taken = [
        f"{what} {obj['metadata']['name']} exists already"
        + (" (kept by an earlier replay: delete it first)" if _ours(obj, plan) else "")
        for (_, what), obj in zip(wanted, found, strict=True)
        if obj is not None
    ]
    if taken:
        shown = taken[:10] + ([f"and {len(taken) - 10} more"] if len(taken) > 10 else [])
        raise ReplayError("\n".join(shown))


def _ours(obj: Obj, plan: ReplayPlan) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(RUN_LABEL) == plan.run


async def _create_cluster(rest: Rest, plan: ReplayPlan) -> None:
    for resource, objects in (
        (r.NAMESPACES, plan.namespaces),
        (r.DEVICE_CLASSES, [plan.device_class]),
        (r.QUEUES, plan.queues),
        (r.CLAIM_TEMPLATES, plan.templates),
    ):
        for obj in objects:
            await rest.request("POST", resource.path(obj["metadata"].get("namespace")), body=obj)


async def _until_schedulable(rest: Rest, plan: ReplayPlan, seconds: float = 60.0) -> None:
    """Wait for the node lifecycle controller to lift the not-ready taints of new nodes."""
    names = {n.name for n in plan.nodes}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        nodes = (await rest.get(r.NODES.path(), {"labelSelector": f"{RUN_LABEL}={plan.run}"}))[
            "items"
        ]
        tainted = [
            n["metadata"]["name"]
            for n in nodes
            if any(
                t.get("key") in (NOT_READY, UNREACHABLE)
                for t in (n.get("spec") or {}).get("taints") or ()
            )
        ]
        if not tainted and names <= {n["metadata"]["name"] for n in nodes}:
            return
        if loop.time() > deadline:
            raise ReplayError(
                f"nodes still tainted not-ready after {seconds:g} s: {', '.join(tainted[:5])}"
            )
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _controller(
    conf: client.Configuration, plan: ReplayPlan, options: Options, clock: Clock
) -> AsyncIterator[CycleLog]:
    """`phalanx controller` in this process: the scenario's policies, its cycle interval
    scaled, no leader election, nodes evicted as soon as they are NotReady (the simulator
    kills a failed node's jobs at once), no admission webhook (the replay registers none, and
    its certificate work would only take the event loop from the replay). Yields once its
    caches are in sync."""
    from controller.settings import Settings, SettingsError

    qps = options.qps or UNTHROTTLED
    try:
        settings = Settings.load(
            leader_elect=False,
            health_host="127.0.0.1",
            health_port=0,
            cycle_interval_seconds=plan.cycle_interval,
            queue_status_interval_seconds=plan.cycle_interval,
            node_grace_seconds=0.0,
            webhook_enabled=False,
            qps=qps,
            burst=max(1, int(min(qps, UNTHROTTLED))),
            **policy_settings(plan.scenario.policies),
        )
    except SettingsError as exc:
        raise ReplayError(str(exc)) from None
    ready: asyncio.Future[CycleLog] = asyncio.get_running_loop().create_future()

    def hook(replica: Replica) -> None:
        if _loopback(conf):
            _local(replica.controller.rest.api_client)
        log = CycleLog(replica.controller.metrics, clock, replica.caches.state)
        replica.controller.metrics = log

        async def synced() -> None:
            await replica.caches.ready.wait()
            if not ready.done():
                ready.set_result(log)

        waiting.append(asyncio.create_task(synced()))

    waiting: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_controller(settings, conf, stop=stop, on_ready=hook))
    try:
        first: set[asyncio.Future[Any]] = {task, ready}
        done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            raise ReplayError("the controller stopped before its caches were in sync")
        yield ready.result()
    finally:
        stop.set()
        await asyncio.gather(task, *waiting, return_exceptions=True)


# ---- running ----------------------------------------------------------------------------
async def _submit(rest: Rest, manifests: list[Obj]) -> None:
    """Create GangJobs one after another (so creation order, and with ordered uids the
    tie-break, is the simulator's arrival order)."""
    for manifest in manifests:
        await rest.request(
            "POST", r.GANG_JOBS.path(manifest["metadata"]["namespace"]), body=manifest
        )


async def _sleep_until(clock: Clock, at: float) -> None:
    delay = clock.loop_time(at) - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _drive(
    rest: Rest,
    plan: ReplayPlan,
    options: Options,
    clock: Clock,
    watcher: Watcher,
    kubelet: Kubelet,
    batches: list[tuple[float, list[JobPlan]]],
    run: LiveRun,
) -> None:
    async def submitting() -> None:
        for at, jobs in batches:
            await _sleep_until(clock, at)
            await _submit(rest, [j.manifest for j in jobs])

    async def outage(node: str, start: float, length: float) -> None:
        await _sleep_until(clock, start)
        await kubelet.fail_node(node)
        run.node_failures += 1
        await _sleep_until(clock, start + length)
        await kubelet.recover_node(node)

    tasks = [asyncio.create_task(submitting(), name="replay-submit")]
    tasks += [asyncio.create_task(outage(o.node, o.start, o.length)) for o in plan.outages]
    loop = asyncio.get_running_loop()
    horizon = plan.scenario.horizon
    wanted = [j for j in watcher.jobs.values() if j.name not in plan.never_fit]
    quiet_since = loop.time()
    done = 0
    try:
        while True:
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            finished = sum(1 for j in wanted if j.succeeded is not None or j.failed is not None)
            if finished != done:
                done = finished
                if options.on_progress is not None:
                    options.on_progress(done, len(wanted))
            if done == len(wanted) and all(t.done() for t in tasks[:1]):
                run.stopped, run.end = "every job done", _last_end(watcher, horizon)
                return
            now = clock.now()
            if horizon is not None and now >= horizon:
                run.stopped, run.end = "horizon", horizon
                return
            idle = all(t.done() for t in tasks) and not any(j.current for j in wanted)
            if idle and loop.time() - quiet_since > options.stall_seconds:
                run.stopped, run.end = "stalled", now
                return
            watcher.changed.clear()
            wait = options.stall_seconds
            if horizon is not None:
                wait = min(wait, max(0.0, clock.loop_time(horizon) - loop.time()))
            try:
                await asyncio.wait_for(watcher.changed.wait(), max(wait, 0.001))
                quiet_since = loop.time()
            except TimeoutError:
                pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _last_end(watcher: Watcher, horizon: float | None) -> float:
    if horizon is not None:
        return horizon
    ends = [j.succeeded or j.failed or 0.0 for j in watcher.jobs.values()]
    return max(ends, default=0.0)


async def _settled(watcher: Watcher, seconds: float) -> list[str]:
    """What is still held once the last releases had `seconds` to show (nothing, when
    every release returned what its admission took)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (held := watcher.held()) and loop.time() < deadline:
        watcher.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.changed.wait(), max(0.001, deadline - loop.time()))
    return held


async def _clean_up(
    rest: Rest, plan: ReplayPlan, watcher: Watcher, *, in_process: bool
) -> list[str]:
    """Delete what the replay made: GangJobs first, while the controller still runs to
    release them, then the rest. Returns what could not be removed."""
    notes = []
    for job in plan.jobs:
        with contextlib.suppress(KubeError):
            await rest.request("DELETE", r.GANG_JOBS.path(job.namespace, job.spec.name))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    while watcher.informers["gangjobs"].cache and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if watcher.informers["gangjobs"].cache:
        notes.append(
            f"{len(watcher.informers['gangjobs'].cache)} GangJobs not removed in 30 s"
            + ("" if in_process else " (is the controller running?)")
        )
    deletions = [
        *(r.NAMESPACES.path(name=ns["metadata"]["name"]) for ns in plan.namespaces),
        *(r.QUEUES.path(name=q["metadata"]["name"]) for q in plan.queues),
        r.DEVICE_CLASSES.path(name=plan.device_class["metadata"]["name"]),
        *(r.RESOURCE_SLICES.path(name=f"{n.name}-gpus") for n in plan.nodes if n.gpus),
        *(r.NODES.path(name=n.name) for n in plan.nodes),
    ]
    for path in deletions:
        try:
            await rest.request("DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                notes.append(f"DELETE {path}: {exc}")
    return notes
