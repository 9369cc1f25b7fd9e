"""`phalanx bench emulator`: is the API emulator fast enough to benchmark a scheduler on?

The emulator (with its controllers, as `phalanx emulator` runs it) serves from a process of
its own, so its figures are one core's; the client drives it from this process over HTTP
(64 requests in flight): it opens `watchers` watches on all pods, creates `nodes` Nodes
and `pods` Pods, binds every
pod, reads some back (get, list), then makes `probes` single writes one at a time and times
how long each takes to reach every watcher. Figures: requests per second by verb as the
client saw them; writes (creates and bindings) per second of the server's CPU time, which
is what one core sustains whatever the client and the machine's other load; watch
delivery p50/p95 (from the probe request leaving the client
to the event arriving at each watcher; with 20 watchers that is 20 samples per probe), and
the server process's peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

TARGETS = {"simple_writes_per_s": 2000.0, "watch_p95_ms": 10.0, "server_peak_rss_mib": 500.0}
CONCURRENCY = 64


@dataclass
class EmulatorFigures:
    nodes: int
    pods: int
    watchers: int
    create_node_per_s: float
    create_pod_per_s: float
    bind_per_s: float
    simple_writes_per_s: float
    """Writes per second of server CPU: what one core sustains (the target)."""
    client_writes_per_s: float
    """Writes per second of wall time as this client saw them (bounded by the client)."""
    server_cpu_us_per_write: float
    get_per_s: float
    list_per_s: float
    watch_events_delivered: int
    watch_p50_ms: float
    watch_p95_ms: float
    server_peak_rss_mib: float
    client_peak_rss_mib: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def verdicts(self) -> dict[str, bool]:
        return {
            "simple_writes_per_s": self.simple_writes_per_s >= TARGETS["simple_writes_per_s"],
            "watch_p95_ms": self.watch_p95_ms < TARGETS["watch_p95_ms"],
            "server_peak_rss_mib": self.server_peak_rss_mib < TARGETS["server_peak_rss_mib"],
        }


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _serve(conn: Connection, profile: str | None) -> None:
    """The server process: start the emulator, send (url, token), answer "cpu" with its CPU
    time so far, serve until told to stop, then send the peak RSS."""
    from emulator.server import Emulator

    async def main() -> None:
        async with Emulator(controllers=True, token="bench") as emulator:
            conn.send((emulator.url, emulator.token))
            loop = asyncio.get_running_loop()
            while await loop.run_in_executor(None, conn.recv) == "cpu":
                conn.send(time.process_time())

    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        with profiler:
            asyncio.run(main())
        Path(profile).write_text(profiler.output_text(unicode=True, show_all=False))
    else:
        asyncio.run(main())
    conn.send(_rss_mib())


def _node(name: str) -> dict[str, Any]:
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": resources, "allocatable": resources},
    }


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                }
            ]
        },
    }


async def _timed(calls: list[Callable[[], Awaitable[Any]]]) -> float:
    """Run the calls CONCURRENCY at a time; their rate per second."""
    queue = iter(calls)
    started = time.perf_counter()

    async def worker() -> None:
        for call in queue:
            await call()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(calls) / (time.perf_counter() - started)


class _Watcher:
    """A watch on all pods that only counts lines, noting when the next one arrives."""

    def __init__(self) -> None:
        self.lines = 0
        self.waiting: asyncio.Future[float] | None = None

    async def follow(self, session: aiohttp.ClientSession, rv: str) -> None:
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "3600"}
        async with session.get("/api/v1/pods", params=params) as response:
            async for _ in response.content:
                self.lines += 1
                if self.waiting is not None and not self.waiting.done():
                    self.waiting.set_result(time.perf_counter())


async def _drive(
    url: str,
    token: str,
    nodes: int,
    pods: int,
    watchers: int,
    probes: int,
    server_cpu: Callable[[], float],
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + watchers + 4)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:

        async def call(method: str, path: str, body: Any = None, ok: int = 200) -> Any:
            async with session.request(method, path, json=body) as response:
                payload = await response.read()
                if response.status != ok:
                    raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
                return payload

        listed = json.loads(await call("GET", "/api/v1/pods"))
        followers = [_Watcher() for _ in range(watchers)]
        tasks = [
            asyncio.create_task(w.follow(session, listed["metadata"]["resourceVersion"]))
            for w in followers
        ]
        await asyncio.sleep(0.2)
        pods_path = "/api/v1/namespaces/default/pods"
        rates: dict[str, float] = {}
        cpu_before = server_cpu()
        rates["create_node"] = await _timed(
            [partial(call, "POST", "/api/v1/nodes", _node(f"n{i}"), 201) for i in range(nodes)]
        )
        rates["create_pod"] = await _timed(
            [partial(call, "POST", pods_path, _pod(f"p{i}"), 201) for i in range(pods)]
        )
        rates["bind"] = await _timed(
            [
                partial(
                    call,
                    "POST",
                    f"{pods_path}/p{i}/binding",
                    {"target": {"kind": "Node", "name": f"n{i % nodes}"}},
                    201,
                )
                for i in range(pods)
            ]
        )
        write_cpu = server_cpu() - cpu_before
        rates["get"] = await _timed(
            [partial(call, "GET", f"{pods_path}/p{i}") for i in range(0, pods, 10)]
        )
        rates["list"] = await _timed([partial(call, "GET", pods_path) for _ in range(5)])
        while min(w.lines for w in followers) < 2 * pods:  # each pod: ADDED, bound
            await asyncio.sleep(0.05)
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        for i in range(probes):
            for w in followers:
                w.waiting = loop.create_future()
            sent = time.perf_counter()
            patch = {"metadata": {"labels": {"probe": str(i)}}}
            async with session.patch(
                f"{pods_path}/p{i % pods}",
                json=patch,
                headers={"Content-Type": "application/merge-patch+json"},
            ) as response:
                await response.read()
            for w in followers:
                assert w.waiting is not None
                latencies.append((await w.waiting - sent) * 1000)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        delivered = sum(w.lines for w in followers)
    latencies.sort()
    return {
        "rates": rates,
        "write_cpu": write_cpu,
        "delivered": delivered,
        "p50": statistics.median(latencies) if latencies else 0.0,
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0,
    }


def run(
    nodes: int = 1000,
    pods: int = 10_000,
    watchers: int = 20,
    probes: int = 200,
    profile: Path | None = None,
) -> EmulatorFigures:
    """Start the server process, drive it, stop it, collect the figures."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=_serve, args=(child, str(profile) if profile else None))
    server.start()
    try:
        url, token = parent.recv()

        def server_cpu() -> float:
            parent.send("cpu")
            return float(parent.recv())

        driven = asyncio.run(_drive(url, token, nodes, pods, watchers, probes, server_cpu))
        parent.send("stop")
        server_rss = float(parent.recv())
    finally:
        server.join(timeout=30)
        if server.is_alive():
            server.kill()
    rates = driven["rates"]
    writes = nodes + 2 * pods
    write_seconds = nodes / rates["create_node"] + pods / rates["create_pod"] + pods / rates["bind"]
    return EmulatorFigures(
        nodes=nodes,
        pods=pods,
        watchers=watchers,
        create_node_per_s=round(rates["create_node"], 1),
        create_pod_per_s=round(rates["create_pod"], 1),
        bind_per_s=round(rates["bind"], 1),
        simple_writes_per_s=round(writes / driven["write_cpu"], 1),
        client_writes_per_s=round(writes / write_seconds, 1),
        server_cpu_us_per_write=round(driven["write_cpu"] / writes * 1e6, 1),
        get_per_s=round(rates["get"], 1),
        list_per_s=round(rates["list"], 2),
        watch_events_delivered=driven["delivered"],
        watch_p50_ms=round(driven["p50"], 2),
        watch_p95_ms=round(driven["p95"], 2),
        server_peak_rss_mib=round(server_rss, 1),
        client_peak_rss_mib=round(_rss_mib(), 1),
    )
