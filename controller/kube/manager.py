"""Wires the controller together: client configuration, caches, engine, decision loop.

Leader election and metrics plug in from outside (`leader`, `metrics`): with a leader,
the caches run all the time (a standby is warm) and the loop runs only while leading;
without one, this replica always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio import client, config

from controller.engine.cycle import Engine
from controller.engine.state import ClusterState
from controller.kube.caches import ClusterCaches
from controller.kube.loop import Controller, LoopOptions, Metrics
from controller.kube.ratelimit import TokenBucket
from controller.kube.rest import Rest
from controller.settings import Settings
from policies.routing import build as build_policies

log = structlog.get_logger("phalanx.manager")

Leader = Callable[[Callable[[], Awaitable[None]]], Coroutine[Any, Any, None]]
"""Runs the given coroutine function while this replica leads (leader.py provides it)."""


class ConfigError(Exception):
    """No usable cluster configuration; one line saying which and why."""


async def configuration(kubeconfig: Path | None) -> client.Configuration:
    """In-cluster configuration by default; a kubeconfig file when given."""
    conf = client.Configuration()
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            raise ConfigError(f"--kubeconfig {kubeconfig}: no such file")
        try:
            await config.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)
        except (config.ConfigException, OSError, ValueError) as exc:
            raise ConfigError(f"--kubeconfig {kubeconfig}: {exc}") from None
        return conf
    try:
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise ConfigError(
            f"not running in a cluster ({exc}); pass --kubeconfig to use a kubeconfig file"
        ) from None
    return conf


def engine_for(settings: Settings, state: ClusterState) -> Engine:
    chosen = build_policies(settings.policy_selection(), {}, "settings")
    return Engine(
        state,
        ordering=chosen.ordering,
        preemption=chosen.preemption,
        placement=chosen.placement,
        search_bound=settings.search_bound,
    )


@contextlib.asynccontextmanager
async def connected(conf: client.Configuration, settings: Settings) -> AsyncIterator[Rest]:
    conf.connection_pool_maxsize = max(conf.connection_pool_maxsize or 0, settings.burst)
    async with client.ApiClient(conf) as api_client:
        yield Rest(api_client, TokenBucket(settings.qps, settings.burst))


async def run(
    settings: Settings,
    conf: client.Configuration,
    *,
    stop: asyncio.Event | None = None,
    leader: Leader | None = None,
    metrics: Metrics | None = None,
    on_ready: Callable[[Controller], None] | None = None,
) -> None:
    """Run until `stop` is set (or cancelled); then stop every task and return."""
    async with connected(conf, settings) as rest:
        caches = await ClusterCaches.discover(
            rest,
            ClusterState(),
            inactivity_timeout=settings.watch_inactivity_seconds,
        )
        controller = Controller(
            rest,
            caches,
            engine_for(settings, caches.state),
            options=LoopOptions(
                workers=settings.workers,
                writes_in_flight=settings.burst,
                min_cycle_gap=settings.cycle_interval_seconds,
                instance=os.environ.get("POD_NAME") or socket.gethostname(),
                node_grace=settings.node_grace_seconds,
                requeue_backoff=(
                    settings.requeue_backoff_base_seconds,
                    settings.requeue_backoff_max_seconds,
                ),
                queue_status_gap=settings.queue_status_interval_seconds,
            ),
            metrics=metrics,
        )
        if on_ready is not None:
            on_ready(controller)
        async with asyncio.TaskGroup() as tasks:
            running = [
                tasks.create_task(caches.run()),
                tasks.create_task(
                    leader(controller.run) if leader is not None else controller.run()
                ),
            ]
            await (stop or asyncio.Event()).wait()
            log.info("shutting down")
            for task in running:
                task.cancel()


async def main(settings: Settings, kubeconfig: Path | None) -> None:
    """`phalanx controller`: run until SIGTERM or SIGINT, then shut down cleanly (the
    caches and loop stop; every step they were in is idempotent, so a successor
    resumes it)."""
    conf = await configuration(kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(settings, conf, stop=stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
