"""The controller's HTTP endpoints for Prometheus and the kubelet: /metrics, /healthz,
/readyz, served by aiohttp on the controller's own event loop.

- /healthz (liveness): the event loop turns. A heartbeat task ticks every second; if it
  has not run for `stall_after` seconds the loop is starved (a step that never yields)
  and the answer is 503, so the kubelet restarts the process. A loop that is blocked
  outright cannot answer at all, which the probe's timeout catches.
- /readyz (readiness): every named check passes, for the controller: caches synced once,
  and the leader election past its first read (leader or standby both count: a standby
  with warm caches is what makes failover fast).
Failures answer 503 with one line per failed check, so `curl` says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import anyio
from aiohttp import web

from controller.kube.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from controller.kube.caches import ClusterCaches
    from controller.kube.leader import LeaderElector

Check = Callable[[], str | None]
"""None when fine, else what is wrong (one line)."""


def readiness(caches: ClusterCaches, elector: LeaderElector | None = None) -> dict[str, Check]:
    """The controller's readiness: caches synced once, and the election past its first
    read of the lease (without an elector this replica is the only one)."""

    def synced() -> str | None:
        if caches.ready.is_set():
            return None
        waiting = sorted(k for k, i in caches.informers.items() if not i.synced.is_set())
        return "not synced yet" + (f" (waiting for {', '.join(waiting)})" if waiting else "")

    checks: dict[str, Check] = {"caches": synced}
    if elector is not None:
        checks["leader election"] = lambda: (
            "lease not read yet" if elector.state == "starting" else None
        )
    return checks


class HealthServer:
    """`run()` serves until cancelled; `serving` is set once bound (`port` is then real)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        ready: Mapping[str, Check] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        beat_every: float = 1.0,
        stall_after: float = 30.0,
    ) -> None:
        self.metrics = metrics
        self.ready = dict(ready or {})
        self.host = host
        self.port = port
        self.beat_every = beat_every
        self.stall_after = stall_after
        self.last_beat = 0.0
        self.serving = anyio.Event()

    async def run(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = runner.addresses[0][1]
            self.last_beat = anyio.current_time()
            self.serving.set()
            while True:
                await anyio.sleep(self.beat_every)
                self.last_beat = anyio.current_time()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    def stalled_for(self) -> float:
        """Seconds since the heartbeat last ran."""
        return anyio.current_time() - self.last_beat

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        stalled = self.stalled_for()
        if stalled > self.stall_after:
            return _answer([f"event loop: no heartbeat for {stalled:.1f} s"])
        return _answer([])

    async def _readyz(self, request: web.Request) -> web.Response:
        failed = []
        for name, check in self.ready.items():
            try:
                problem = check()
            except Exception as exc:
                problem = f"check failed: {type(exc).__name__}: {exc}"
            if problem is not None:
                failed.append(f"{name}: {problem}")
        return _answer(failed)


def _answer(failed: list[str]) -> web.Response:
    if failed:
        return web.Response(status=503, text="\n".join(failed) + "\n")
    return web.Response(text="ok\n")
