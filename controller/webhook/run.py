"""Wiring the webhook: inside `phalanx controller` (on the controller's caches, on every
replica: only the leader schedules, but any replica answers reviews), or alone as
`phalanx webhook` (on shape-only caches of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from kubernetes_asyncio import client

from controller.engine.state import ClusterState
from controller.kube.caches import ClusterCaches
from controller.kube.health import Check, HealthServer
from controller.kube.metrics import NO_METRICS, Metrics, Recorder
from controller.kube.rest import Rest
from controller.logs import configure_json_logs
from controller.settings import Settings
from controller.webhook.certs import CertManager, Policy, service_hosts
from controller.webhook.cluster import CacheView
from controller.webhook.server import SecretWatch, WebhookServer

log = structlog.get_logger("phalanx.webhook")


@dataclass
class Webhook:
    """The webhook's parts: the server, the Secret watch, and (self-signed) the certificates."""

    server: WebhookServer
    watch: SecretWatch
    certs: CertManager | None
    check_every: float

    def readiness(self) -> Check:
        def serving() -> str | None:
            if self.server.serving.is_set():
                return None
            if not self.server.loaded.is_set():
                return "no certificate loaded yet (Secret not there or not valid)"
            return "not listening yet"

        return serving

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.server.run)
            tasks.start_soon(self.watch.run)
            if self.certs is not None:
                tasks.start_soon(self.certs.run, self.check_every)


def webhook_for(
    settings: Settings, rest: Rest, caches: ClusterCaches, metrics: Recorder = NO_METRICS
) -> Webhook:
    server = WebhookServer(
        CacheView(caches),
        rest,
        host=settings.webhook_host,
        port=settings.webhook_port,
        observe=metrics.webhook_review,
    )
    certs = None
    if settings.webhook_certificates == "self-signed":
        certs = CertManager(
            rest,
            namespace=settings.webhook_namespace,
            secret=settings.webhook_secret,
            configurations=(
                settings.webhook_validating_configuration,
                settings.webhook_mutating_configuration,
            ),
            policy=Policy(
                tuple(
                    service_hosts(
                        settings.webhook_service,
                        settings.webhook_namespace,
                        settings.webhook_cert_extra_hosts,
                    )
                ),
                settings.webhook_cert_days,
                settings.webhook_renew_before_days,
                settings.webhook_ca_days,
                settings.webhook_ca_renew_before_days,
            ),
            on_bundle=server.load,
        )
    watch = SecretWatch(rest, server, settings.webhook_namespace, settings.webhook_secret)
    return Webhook(server, watch, certs, settings.webhook_cert_check_seconds)


async def run(
    settings: Settings,
    conf: client.Configuration,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Webhook], None] | None = None,
) -> None:
    """`phalanx webhook`: shape-only caches, the webhook, /healthz /readyz /metrics.
    `on_ready` is handed the webhook before it serves (its server's `serving` and `port`
    then tell where it listens: with port 0, the port the system gave it)."""
    from controller.kube.caches import OPTIONAL, served
    from controller.kube.health import readiness
    from controller.kube.manager import connected

    metrics = Metrics()
    async with connected(conf, settings, metrics) as rest:
        optional = tuple([res for res in OPTIONAL if await served(rest, res)])
        caches = ClusterCaches(
            rest,
            ClusterState(),
            optional=optional,
            shape_only=True,
            inactivity_timeout=settings.watch_inactivity_seconds,
        )
        webhook = webhook_for(settings, rest, caches, metrics)
        health = HealthServer(
            metrics,
            ready={**readiness(caches), "webhook": webhook.readiness()},
            host=settings.health_host,
            port=settings.health_port,
        )
        if on_ready is not None:
            on_ready(webhook)
        async with asyncio.TaskGroup() as tasks:
            running = [
                tasks.create_task(health.run()),
                tasks.create_task(caches.run()),
                tasks.create_task(webhook.run()),
            ]
            await (stop or asyncio.Event()).wait()
            log.info("shutting down")
            for task in running:
                task.cancel()


async def main(settings: Settings, kubeconfig: Path | None) -> None:
    """Run `phalanx webhook` until SIGTERM or SIGINT."""
    from controller.kube.manager import configuration, until_signalled

    configure_json_logs(settings.log_level)
    conf = await configuration(kubeconfig)
    await until_signalled(lambda stop: run(settings, conf, stop=stop))
