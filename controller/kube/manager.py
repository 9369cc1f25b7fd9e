"""Wires the controller together: client configuration, caches, engine, decision loop,
leader election, the admission webhook, the /metrics /healthz /readyz server and JSON logs.

The caches, the webhook and the HTTP server run all the time (a standby is warm, answers
probes and admission reviews);
the decision loop runs only while this replica holds the Lease, or always when leader
election is off (`PHALANX_LEADER_ELECT=false`, a single replica). On shutdown the loop
stops first, then the elector releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import structlog
from kubernetes_asyncio import client, config

from controller.engine.cycle import Engine
from controller.engine.state import ClusterState
from controller.kube.caches import ClusterCaches
from controller.kube.health import HealthServer, readiness
from controller.kube.leader import LeaderElector
from controller.kube.loop import Controller, LoopOptions
from controller.kube.metrics import Metrics
from controller.kube.ratelimit import TokenBucket
from controller.kube.rest import Rest, settle_environment
from controller.logs import configure_json_logs
from controller.runtime import freeze_heap
from controller.settings import Settings
from controller.webhook.run import Webhook, webhook_for
from policies.routing import build as build_policies

log = structlog.get_logger("phalanx.manager")


class ConfigError(Exception):
    """No usable cluster configuration; one line saying which and why."""


async def configuration(kubeconfig: Path | None) -> client.Configuration:
    """Where to find the cluster, in controller-runtime's order: the `--kubeconfig` file,
    else the first file of `$KUBECONFIG`, else the in-cluster service account."""
    conf = client.Configuration()
    where = "--kubeconfig"
    if kubeconfig is None and os.environ.get("KUBECONFIG"):
        first = os.environ["KUBECONFIG"].split(os.pathsep)[0]
        kubeconfig, where = Path(first), "$KUBECONFIG"
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            raise ConfigError(f"{where} {kubeconfig}: no such file")
        try:
            await config.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)
        except (config.ConfigException, OSError, ValueError) as exc:
            raise ConfigError(f"{where} {kubeconfig}: {exc}") from None
        return conf
    try:
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise ConfigError(
            f"not running in a cluster ({exc}); pass --kubeconfig or set KUBECONFIG"
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


def user_agent(settings: Settings) -> str:
    """`phalanx/<version> (<identity>)`: the API server's audit log and field managers
    name the product, and the identity tells replicas apart."""
    try:
        version = metadata.version("phalanx")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"phalanx/{version} ({settings.identity})"


MAX_IN_FLIGHT = 64
"""Requests in flight at most, whatever the burst: each needs its own HTTP/1.1
connection, and past what the API server answers at once more only queue there (a
cold start's first cycle opened a thousand connections, and ran slower for it)."""


def in_flight(settings: Settings) -> int:
    return min(settings.burst, MAX_IN_FLIGHT)


@contextlib.asynccontextmanager
async def connected(
    conf: client.Configuration, settings: Settings, metrics: Metrics
) -> AsyncIterator[Rest]:
    conf.connection_pool_maxsize = max(conf.connection_pool_maxsize or 0, in_flight(settings))
    async with client.ApiClient(conf) as api_client:
        api_client.user_agent = user_agent(settings)
        settle_environment(api_client)
        yield Rest(
            api_client, TokenBucket(settings.qps, settings.burst), on_error=metrics.api_error
        )


@dataclass(frozen=True)
class Replica:
    """One running controller's parts, for tests and tools that watch it run."""

    controller: Controller
    caches: ClusterCaches
    metrics: Metrics
    server: HealthServer
    elector: LeaderElector | None
    webhook: Webhook | None = None


async def run(
    settings: Settings,
    conf: client.Configuration,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Replica], None] | None = None,
    on_synced: Callable[[], None] | None = None,
) -> None:
    """Run until `stop` is set (or cancelled); then stop the loop, release the Lease, stop
    the caches and the server, and return. `on_synced` is called once the caches have
    synced and the state is built (the process freezes its heap then)."""
    metrics = Metrics()
    async with connected(conf, settings, metrics) as rest:
        caches = await ClusterCaches.discover(
            rest,
            ClusterState(),
            inactivity_timeout=settings.watch_inactivity_seconds,
            default_queue=settings.default_queue,
        )
        metrics.watch_state(caches.state)
        metrics.watch_informers(lambda: caches.informers)
        elector = LeaderElector.from_settings(rest, settings) if settings.leader_elect else None
        if elector is not None:
            elector.subscribe(metrics.leader_changed)
        else:
            metrics.leader_changed(True)
        controller = Controller(
            rest,
            caches,
            engine_for(settings, caches.state),
            options=LoopOptions(
                workers=settings.workers,
                writes_in_flight=in_flight(settings),
                min_cycle_gap=settings.cycle_interval_seconds,
                instance=os.environ.get("POD_NAME") or socket.gethostname(),
                node_grace=settings.node_grace_seconds,
                requeue_backoff=(
                    settings.requeue_backoff_base_seconds,
                    settings.requeue_backoff_max_seconds,
                ),
                queue_status_gap=settings.queue_status_interval_seconds,
            ),
            is_leader=elector.is_leader if elector is not None else None,
            metrics=metrics,
        )
        webhook = webhook_for(settings, rest, caches, metrics) if settings.webhook_enabled else None
        ready = readiness(caches, elector)
        if webhook is not None:
            ready["webhook"] = webhook.readiness()
        server = HealthServer(
            metrics, ready=ready, host=settings.health_host, port=settings.health_port
        )
        if on_ready is not None:
            on_ready(Replica(controller, caches, metrics, server, elector, webhook))
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(server.run())
            watching = tasks.create_task(caches.run())
            if on_synced is not None:
                tasks.create_task(_when_synced(caches, on_synced))
            admitting = tasks.create_task(webhook.run()) if webhook is not None else None
            deciding = tasks.create_task(
                elector.run(controller.run) if elector is not None else controller.run()
            )
            await (stop or asyncio.Event()).wait()
            log.info("shutting down")
            # In this order: the loop stops (and the Lease is released) while the
            # caches still run, then the rest.
            deciding.cancel()
            await asyncio.wait([deciding])
            watching.cancel()
            serving.cancel()
            if admitting is not None:
                admitting.cancel()


async def _when_synced(caches: ClusterCaches, then: Callable[[], None]) -> None:
    await caches.ready.wait()
    then()


async def until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `run(stop)` with `stop` set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def main(settings: Settings, kubeconfig: Path | None) -> None:
    """`phalanx controller`: JSON logs, then run until SIGTERM or SIGINT and shut down
    cleanly (every step the loop was in is idempotent, so a successor resumes it)."""
    configure_json_logs(settings.log_level)
    conf = await configuration(kubeconfig)
    await until_signalled(lambda stop: run(settings, conf, stop=stop, on_synced=freeze_heap))
