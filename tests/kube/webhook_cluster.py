"""A cluster with Phalanx's webhook installed: the emulator calls it through the
`phalanx-webhook` Service, as an API server would, with the configurations of
controller/webhook/configs.py and the certificates the webhook made itself.

The cluster: namespaces team-a and team-b (labelled `team`), two nodes with 4 GPUs each
(DRA) and room for 110 pods, a claim template `one-gpu` in every namespace, a parent
queue `teams` (16 cpu, 8 devices/gpu) and one leaf per team selecting its namespace.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from controller.engine.cycle import Engine
from controller.engine.state import ClusterState
from controller.kube import resources as r
from controller.kube.caches import ClusterCaches
from controller.kube.loop import Controller, LoopOptions
from controller.kube.rest import Obj, Rest
from controller.settings import Settings
from controller.webhook.certs import MUTATING, SECRETS, VALIDATING, Bundle
from controller.webhook.configs import configurations
from controller.webhook.run import Webhook, webhook_for
from emulator import Emulator
from tests.kube.controller_cluster import gpu_cluster, one_gpu_template, queue
from tests.kube.controller_env import create, load_crds

SYSTEM = "phalanx-system"
SERVICE = (SYSTEM, "phalanx-webhook", 443)


def namespace(name: str, **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def team_queue(team: str, **nominal: str) -> Obj:
    q = queue(f"team-{team}", **nominal)
    q["spec"] |= {"parent": "teams", "namespaceSelector": {"matchLabels": {"team": team}}}
    return q


async def build_cluster(emulator: Emulator, rest: Rest) -> None:
    await load_crds(emulator)
    for ns in (namespace(SYSTEM), namespace("team-a", team="a"), namespace("team-b", team="b")):
        await create(rest, r.NAMESPACES, ns)
    await gpu_cluster(rest, 2, 4)
    for team in ("team-a", "team-b"):
        template = one_gpu_template()
        template["metadata"]["namespace"] = team
        await create(rest, r.CLAIM_TEMPLATES, template)
    await create(rest, r.QUEUES, queue("teams", cpu="16", devices__gpu="8"))
    for team in "ab":
        await create(rest, r.QUEUES, team_queue(team, cpu="8", devices__gpu="4"))


async def install_configurations(rest: Rest, ca_bundle: bytes = b"") -> None:
    validating, mutating = configurations(service=SERVICE, ca_bundle=ca_bundle)
    await create(rest, VALIDATING, validating)
    await create(rest, MUTATING, mutating)


def settings(**values: Any) -> Settings:
    return Settings.load(**({"webhook_host": "127.0.0.1", "webhook_port": 0} | values))


@dataclass
class Installed:
    """The webhook (and, when asked, the controller) running on one set of caches."""

    emulator: Emulator
    rest: Rest
    webhook: Webhook | None = None
    caches: ClusterCaches | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, chosen: Settings | None = None, *, controller: bool = False) -> Webhook:
        self.caches = await ClusterCaches.discover(self.rest, ClusterState())
        webhook = webhook_for(chosen or settings(), self.rest, self.caches)
        self.webhook = webhook
        self.tasks = [
            asyncio.create_task(self.caches.run()),
            asyncio.create_task(webhook.run()),
        ]
        if controller:
            loop = Controller(
                self.rest,
                self.caches,
                Engine(self.caches.state),
                options=LoopOptions(instance="test"),
            )
            self.tasks.append(asyncio.create_task(loop.run()))
        await asyncio.wait_for(self.caches.ready.wait(), 60)
        await asyncio.wait_for(webhook.server.serving.wait(), 60)
        if webhook.certs is not None:
            await asyncio.wait_for(webhook.certs.settled.wait(), 60)
        self.emulator.route_service(*SERVICE, ("127.0.0.1", webhook.server.port))
        return webhook

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def bundle(self) -> Bundle:
        secret = await self.rest.get(SECRETS.path(SYSTEM, "phalanx-webhook-tls"))
        found = Bundle.from_secret(secret)
        assert found is not None
        return found

    async def served_serial(self) -> int:
        """The serial number of the certificate a new TLS connection is given."""
        assert self.webhook is not None
        context = ssl.create_default_context(cadata=(await self.bundle()).ca_crt.decode())
        _, writer = await asyncio.open_connection(
            "127.0.0.1",
            self.webhook.server.port,
            ssl=context,
            server_hostname="phalanx-webhook.phalanx-system.svc",
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number
