"""Phalanx's admission webhook as the emulator calls it, like an API server: valid objects
pass, each invalid one gets its message, a GPU pod lands in its namespace's queue and is
admitted by the controller, bypasses are refused, a webhook that is down fails closed,
certificates are renewed and reloaded without a restart."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509

from controller.kube import resources as r
from controller.kube.rest import KubeError, Obj, Rest
from controller.webhook.certs import (
    MUTATING,
    SECRETS,
    VALIDATING,
    Policy,
    make_ca,
    make_serving,
    renewed,
    service_hosts,
)
from emulator import Emulator
from tests.kube.controller_cluster import gang_job, until
from tests.kube.controller_env import create, emulator, rest
from tests.kube.webhook_cluster import (
    SERVICE,
    SYSTEM,
    Installed,
    build_cluster,
    install_configurations,
    settings,
    team_queue,
)
from tests.kube.webhooks import refusing_port

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime

JSON_PATCH = "application/json-patch+json"


@pytest.fixture
async def cluster(emulator: Emulator, rest: Rest) -> Rest:
    await build_cluster(emulator, rest)
    await install_configurations(rest)
    return rest


@pytest.fixture
async def installed(emulator: Emulator, cluster: Rest) -> AsyncIterator[Installed]:
    running = Installed(emulator, cluster)
    yield running
    await running.stop()


def job(name: str, namespace: str = "team-a", **kwargs: Any) -> Obj:
    made = gang_job(name, [("worker", 2)], queue_name=f"team-{namespace[-1]}", **kwargs)
    made["metadata"]["namespace"] = namespace
    return made


def gpu_pod(name: str, namespace: str = "team-a", **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
            **spec,
        },
    }


async def refusal(rest: Rest, resource: r.Resource, obj: Obj) -> KubeError:
    with pytest.raises(KubeError) as refused:
        await create(rest, resource, obj)
    return refused.value


def denied(resource: str, name: str, webhook: str) -> str:
    return f'{resource} "{name}" is forbidden: admission webhook "{webhook}" denied the request: '


async def test_valid_gangjobs_queues_and_pods_pass(installed: Installed) -> None:
    await installed.start()
    rest = installed.rest
    assert (await create(rest, r.GANG_JOBS, job("train")))["metadata"]["name"] == "train"
    assert (await create(rest, r.QUEUES, team_queue("c", cpu="1")))["metadata"]["name"] == "team-c"
    plain = copy.deepcopy(gpu_pod("web"))
    del plain["spec"]["resourceClaims"]
    made = await create(rest, r.PODS, plain)
    assert made["spec"]["schedulerName"] == "default-scheduler"


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            {"queueName": "nope"},
            422,
            'spec.queueName: Not found: "nope": no Queue named nope; queues that take jobs '
            "from namespace team-a: team-a",
        ),
        (
            {"queueName": "team-b"},
            403,
            "spec.queueName: Forbidden: queue team-b does not take GangJobs from namespace "
            "team-a (its namespaceSelector does not match the namespace's labels); queues "
            "that take jobs from namespace team-a: team-a",
        ),
        (
            {"queueName": "teams"},
            422,
            'spec.queueName: Invalid value: "teams": queue teams is not a leaf queue; only '
            "leaf queues take gangs; queues that take jobs from namespace team-a: team-a",
        ),
    ],
)
async def test_each_invalid_gangjob_gets_its_message(
    installed: Installed, change: Obj, code: int, message: str
) -> None:
    await installed.start()
    bad = job("train")
    bad["spec"] |= change
    refused = await refusal(installed.rest, r.GANG_JOBS, bad)
    assert refused.status == code
    assert refused.message == denied("gangjobs.phalanx.dev", "train", "gangjobs.phalanx.dev") + (
        message
    )


async def test_a_gangjob_that_can_never_fit_is_refused_with_the_numbers(
    installed: Installed,
) -> None:
    await installed.start()
    greedy = gang_job("greedy", [("worker", 9)], gpu=True, queue_name="team-a")
    greedy["metadata"]["namespace"] = "team-a"
    refused = await refusal(installed.rest, r.GANG_JOBS, greedy)
    assert refused.message.startswith(
        denied("gangjobs.phalanx.dev", "greedy", "gangjobs.phalanx.dev")
        + "spec.podSets: Invalid value: can never fit: needs 9 devices/gpu; the cluster has 8"
    )


async def test_queue_changes_that_break_the_tree_are_refused(installed: Installed) -> None:
    await installed.start()
    orphan = team_queue("c", cpu="1")
    orphan["spec"]["parent"] = "nowhere"
    refused = await refusal(installed.rest, r.QUEUES, orphan)
    assert refused.message == denied("queues.phalanx.dev", "team-c", "queues.phalanx.dev") + (
        'spec.parent: Not found: "nowhere": create the parent queue first'
    )
    with pytest.raises(KubeError) as deleting:
        await installed.rest.request("DELETE", r.QUEUES.path(name="teams"))
    assert deleting.value.status == 403
    assert "queue teams is the parent of team-a, team-b" in deleting.value.message


async def test_a_gpu_pod_lands_in_its_namespace_queue_and_the_controller_admits_it(
    installed: Installed,
) -> None:
    await installed.start(controller=True)
    rest = installed.rest
    made = await create(rest, r.PODS, gpu_pod("trainer"))
    assert made["spec"]["schedulerName"] == "phalanx"
    assert made["metadata"]["labels"] == {
        "phalanx.dev/gang": "pod.trainer",
        "phalanx.dev/queue": "team-a",
    }
    assert made["metadata"]["annotations"] == {"phalanx.dev/gang-size": "1"}
    path = r.PODS.path("team-a", "trainer")

    async def bound() -> bool:
        return bool((await rest.get(path))["spec"].get("nodeName"))

    await until(bound)
    record = await rest.get(r.CONFIG_MAPS.path("team-a", "phalanx-gang-pod.trainer"))
    assert json.loads(record["data"]["admission"])["queue"] == "team-a"


async def test_a_gpu_pod_that_picks_its_node_is_refused_with_how_to_submit(
    installed: Installed,
) -> None:
    await installed.start()
    refused = await refusal(installed.rest, r.PODS, gpu_pod("sneaky", nodeName="n0"))
    assert refused.status == 403
    assert refused.message == denied("pods", "sneaky", "pods.phalanx.dev") + (
        "spec.nodeName: Forbidden: a pod that requests GPUs or DRA devices in namespace "
        "team-a may not choose its node: Phalanx places it within its queue's quota; leave "
        "spec.schedulerName and spec.nodeName unset (use a nodeSelector to narrow placement) "
        "and Phalanx schedules the pod as a one-pod gang, or submit a GangJob"
    )


async def test_removing_the_gang_label_of_a_running_gpu_pod_is_refused(
    installed: Installed,
) -> None:
    await installed.start()
    rest = installed.rest
    await create(rest, r.PODS, gpu_pod("trainer"))
    with pytest.raises(KubeError) as refused:
        await rest.request(
            "PATCH",
            r.PODS.path("team-a", "trainer"),
            body=[{"op": "remove", "path": "/metadata/labels/phalanx.dev~1gang"}],
            content_type=JSON_PATCH,
        )
    assert refused.value.status == 403
    assert "metadata.labels[phalanx.dev/gang]: Forbidden:" in refused.value.message


async def test_with_the_webhook_down_gpu_pods_and_gangjobs_wait_and_other_pods_do_not(
    emulator: Emulator, installed: Installed
) -> None:
    await installed.start()
    with refusing_port() as port:
        emulator.route_service(*SERVICE, ("127.0.0.1", port))
        rest = installed.rest
        refused = await refusal(rest, r.GANG_JOBS, job("train"))
        assert refused.status == 500
        assert refused.message.startswith(
            'Internal error occurred: failed calling webhook "gangjobs.phalanx.dev": failed to '
            'call webhook: Post "https://phalanx-webhook.phalanx-system.svc:443/'
            'validate-phalanx-dev-v1alpha1-gangjob?timeout=10s": dial tcp'
        )
        assert (await refusal(rest, r.PODS, gpu_pod("trainer"))).status == 500
        plain = gpu_pod("web")
        del plain["spec"]["resourceClaims"]
        assert (await create(rest, r.PODS, plain))["metadata"]["name"] == "web"


async def test_a_webhook_set_to_ignore_failures_lets_requests_through_while_down(
    emulator: Emulator, installed: Installed
) -> None:
    await installed.start()
    with refusing_port() as port:
        emulator.route_service(*SERVICE, ("127.0.0.1", port))
        rest = installed.rest
        config = await rest.get(VALIDATING.path(name="phalanx-validating"))
        config["webhooks"][0]["failurePolicy"] = "Ignore"
        await rest.request("PUT", VALIDATING.path(name="phalanx-validating"), body=config)
        assert (await create(rest, r.GANG_JOBS, job("train")))["metadata"]["name"] == "train"


async def test_the_webhook_makes_its_certificate_and_patches_the_ca_bundles(
    installed: Installed,
) -> None:
    await installed.start()
    bundle = await installed.bundle()
    for resource, name in ((VALIDATING, "phalanx-validating"), (MUTATING, "phalanx-mutating")):
        config = await installed.rest.get(resource.path(name=name))
        assert {h["clientConfig"]["caBundle"] for h in config["webhooks"]} == {
            bundle.data()["ca.crt"]
        }
    assert await installed.served_serial() == bundle.serving().serial_number


async def test_a_renewed_certificate_is_served_without_a_restart_and_still_trusted(
    installed: Installed,
) -> None:
    webhook = await installed.start()
    assert webhook.certs is not None
    before = await installed.served_serial()
    # the day comes when fewer days are left than the renewal threshold
    webhook.certs.policy = dataclasses.replace(webhook.certs.policy, renew_before_days=400)
    await webhook.certs.reconcile()
    after = await installed.served_serial()
    assert after != before and after == (await installed.bundle()).serving().serial_number
    assert (await create(installed.rest, r.GANG_JOBS, job("train")))["metadata"]["name"]


async def test_with_cert_manager_the_server_follows_the_secret_someone_else_writes(
    installed: Installed,
) -> None:
    rest = installed.rest
    policy = Policy(tuple(service_hosts("phalanx-webhook", SYSTEM)))
    now = datetime.datetime.now(datetime.UTC)

    async def publish(found: Obj | None) -> int:
        """What cert-manager and its CA injector do: a Secret, and caBundles."""
        change = renewed(None, now, policy)
        assert change is not None
        bundle = change[0]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "phalanx-webhook-tls", "namespace": SYSTEM},
            "type": "kubernetes.io/tls",
            "data": bundle.data(),
        }
        if found is None:
            await create(rest, SECRETS, secret)
        else:
            secret["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
            await rest.request("PUT", SECRETS.path(SYSTEM, "phalanx-webhook-tls"), body=secret)
        for resource, name in ((VALIDATING, "phalanx-validating"), (MUTATING, "phalanx-mutating")):
            config = await rest.get(resource.path(name=name))
            for hook in config["webhooks"]:
                hook["clientConfig"]["caBundle"] = bundle.data()["ca.crt"]
            await rest.request("PUT", resource.path(name=name), body=config)
        return bundle.serving().serial_number

    first = await publish(None)
    webhook = await installed.start(settings(webhook_certificates="cert-manager"))
    assert webhook.certs is None and await installed.served_serial() == first
    second = await publish(await rest.get(SECRETS.path(SYSTEM, "phalanx-webhook-tls")))

    async def reloaded() -> bool:
        return webhook.server.serial == second

    await until(reloaded)
    assert await installed.served_serial() == second
    assert (await create(rest, r.GANG_JOBS, job("train")))["metadata"]["name"] == "train"


def cert_manager_secret(now: datetime.datetime) -> Obj:
    """A Secret as cert-manager writes it for a Certificate of a CA Issuer: the serving
    pair and the CA's certificate, no CA key, its annotations and label."""
    ca_crt, ca_key = make_ca(now, 3650)
    hosts = service_hosts("phalanx-webhook", SYSTEM)
    tls_crt, tls_key = make_serving(ca_crt, ca_key, hosts, now, 90)
    blobs = {"tls.crt": tls_crt, "tls.key": tls_key, "ca.crt": ca_crt}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "phalanx-webhook-tls",
            "namespace": SYSTEM,
            "labels": {"controller.cert-manager.io/fao": "true"},
            "annotations": {
                "cert-manager.io/certificate-name": "phalanx-webhook",
                "cert-manager.io/issuer-name": "phalanx-ca",
                "cert-manager.io/issuer-kind": "Issuer",
            },
        },
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in blobs.items()},
    }


async def test_built_in_certificates_leave_a_cert_manager_secret_alone_and_trust_its_ca(
    installed: Installed,
) -> None:
    rest = installed.rest
    made = await create(rest, SECRETS, cert_manager_secret(datetime.datetime.now(datetime.UTC)))
    webhook = await installed.start()

    assert webhook.certs is not None and webhook.certs.rotations == 0
    assert await rest.get(SECRETS.path(SYSTEM, "phalanx-webhook-tls")) == made
    for resource, name in ((VALIDATING, "phalanx-validating"), (MUTATING, "phalanx-mutating")):
        config = await rest.get(resource.path(name=name))
        assert {h["clientConfig"]["caBundle"] for h in config["webhooks"]} == {
            made["data"]["ca.crt"]
        }
    served = x509.load_pem_x509_certificate(base64.b64decode(made["data"]["tls.crt"]))
    assert webhook.server.serial == served.serial_number
    assert (await create(rest, r.GANG_JOBS, job("train")))["metadata"]["name"] == "train"


async def test_two_replicas_settle_on_one_certificate(installed: Installed) -> None:
    await installed.start()
    other = Installed(installed.emulator, installed.rest)
    try:
        second = await other.start()
        assert second.certs is not None and second.certs.rotations == 0
        assert second.server.serial == (await installed.bundle()).serving().serial_number
    finally:
        await other.stop()


async def test_the_standalone_webhook_command_judges_from_its_own_caches(
    emulator: Emulator, cluster: Rest
) -> None:
    from controller.webhook.run import Webhook, run

    started: list[Webhook] = []
    stop = asyncio.Event()
    conf_settings = settings(webhook_port=0, health_port=0, health_host="127.0.0.1")
    configuration = await _configuration(emulator)
    task = asyncio.create_task(
        run(conf_settings, configuration, stop=stop, on_ready=started.append)
    )
    try:

        async def listening() -> bool:
            return bool(started) and started[0].server.serving.is_set()

        await until(listening)  # on the port the system gave it
        emulator.route_service(*SERVICE, ("127.0.0.1", started[0].server.port))
        bad = job("train")
        bad["spec"]["queueName"] = "team-b"

        async def refused_by_the_webhook() -> bool:
            try:
                await create(cluster, r.GANG_JOBS, bad)
            except KubeError as exc:
                return exc.status == 403
            return False

        await until(refused_by_the_webhook)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _configuration(emulator: Emulator) -> Any:
    from kubernetes_asyncio import client, config

    conf = client.Configuration()
    await config.load_kube_config(
        config_file=str(emulator.kubeconfig_path), client_configuration=conf
    )
    return conf
