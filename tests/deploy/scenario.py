"""One end-to-end run of `phalanx controller` (manager.run, as the command runs it, with
leader election) on the API emulator, with every request recorded (emulator/audit.py):
the workload of deploy/samples on a simulated cluster of 8 nodes x 8 GPUs, taken through
every path that makes a different kind of API call.

1. the sample DeviceClass and queue tree; the sample PyTorch DDP GangJob (4 pods x 8
   GPUs in team-a). Its first claim finalizer and its first binding answer 409 (as a
   stale cache would see), so the re-read paths run; the broken binding requeues the
   gang, which is admitted again. Its headless Service exists already (as an earlier
   leader leaves it): create answers 409, the controller reads it;
2. a node of the admitted job is deleted: the pods get the DisruptionTarget condition,
   are deleted, and the gang is admitted again on the other nodes; then the webhook's
   certificate Secret is spoilt, and the controller writes a new one (with cert-manager
   managing the certificates: cert-manager, played by the test, issues a new one and the
   controller's webhook serves it);
3. a gang of another controller's pods in team-b (gang labels, one GPU each): its
   record ConfigMap is created; its pods finish, a second attempt of the same gang is
   admitted and the record replaced;
4. a GangJob of team-a that names team-b's queue stays pending; the webhook is asked
   about a namespace its caches have not seen (as for a job submitted right after its
   namespace was made) and reads it from the API server;
5. the sample job is deleted: pods, claims and Service released, finalizer removed.

The install is deploy/default (the controller makes its own certificates) or
deploy/overlays/cert-manager (the test writes the Secret and the caBundles as
cert-manager and its CA injector would, before the controller starts); the controller runs
with the PHALANX_ settings the install's Deployment sets (but for addresses). The first
watch of every cache is refused with 400, as by a server without streaming lists, so the
caches take the list+watch path. Runs on its own looptime event loop (virtual time:
lease renewals, readiness, backoff).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import looptime
import yaml
from kubernetes_asyncio import client

from controller.kube import manager
from controller.kube import resources as r
from controller.kube.manager import Replica
from controller.kube.rest import KubeError, Obj, Rest
from controller.settings import Settings
from controller.webhook.certs import (
    SECRETS,
    Bundle,
    Policy,
    make_serving,
    renewed,
    service_hosts,
)
from emulator import Emulator, Fault
from emulator.audit import Request
from emulator.kubelet import Kubelet, NodeDescription
from tests.deploy.render import DEPLOY, NAMESPACE, kustomize, phalanx_settings
from tests.kube.controller_cluster import one_gpu_template

SAMPLES = DEPLOY / "samples"
CRDS = DEPLOY / "default" / "crds"
DRIVER = "gpu.nvidia.com"
NODES = [
    NodeDescription(
        f"gpu-{i}",
        cpu="64",
        memory="512Gi",
        gpus=8,
        driver=DRIVER,
        labels={"topology.kubernetes.io/zone": f"zone-{i // 4}"},
    )
    for i in range(8)
]
AGENT = "phalanx/"
"""The controller's User-Agent starts so (manager.user_agent); the test's clients differ."""
TIMEOUT = 600.0
INFORMED = (
    "namespaces",
    "nodes",
    "deviceclasses",
    "resourceslices",
    "queues",
    "resourceclaimtemplates",
    "gangjobs",
    "resourceclaims",
    "pods",
    "configmaps",
    "priorityclasses",
    "podgroups",
    "secrets",
)
"""Every resource the controller caches (and the webhook's Secret); the first watch of
each is refused."""
INSTALLS = ("default", "cert-manager")
"""The kustomizations the scenario runs as: the controller gets the settings their
Deployment gives it, and the requests are held to their RBAC."""
SECRET = SECRETS.path(NAMESPACE, "phalanx-webhook-tls")


@dataclass
class Run:
    """What the scenario saw: the controller's requests, and snapshots along the way."""

    install: str
    """deploy/default, or an overlay of it (its name): the RBAC the requests are held to."""
    requests: list[Request] = field(default_factory=list)
    first_pods: list[Obj] = field(default_factory=list)
    """The sample job's pods once first admitted whole."""
    readmitted_nodes: set[str] = field(default_factory=set)
    deleted_node: str = ""
    foreign_record: Obj = field(default_factory=dict)
    wrong_queue_job: Obj = field(default_factory=dict)
    unseen_namespace_labels: object = "not asked"
    """What the webhook found of a namespace its caches had not seen (it does not exist)."""
    job_gone: bool = False


def run_scenario(install: str = "default") -> Run:
    """The scenario on a fresh looptime loop (for a module-scoped fixture), as installed
    by `install` (a key of INSTALLS)."""
    loop = looptime.new_event_loop(start=0)
    try:
        return loop.run_until_complete(asyncio.wait_for(_scenario(Run(install)), TIMEOUT))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 300.0) -> None:
    """Poll (in loop time) until `check` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"scenario: not reached in {timeout} s: {what}")
        await asyncio.sleep(0.5)


async def apply(rest: Rest, path: Path) -> None:
    """Create every object of a manifest, as `kubectl apply` of new objects does."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            await create(rest, doc)


async def create(rest: Rest, obj: Obj) -> Obj:
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = {
        "Namespace": "namespaces",
        "DeviceClass": "deviceclasses",
        "ResourceClaimTemplate": "resourceclaimtemplates",
        "Queue": "queues",
        "GangJob": "gangjobs",
        "Pod": "pods",
        "Service": "services",
    }[obj["kind"]]
    namespace = obj["metadata"].get("namespace")
    resource = r.Resource(group, version, plural, obj["kind"], namespace is not None)
    return await rest.request("POST", resource.path(namespace), body=obj)


async def items(rest: Rest, resource: r.Resource, namespace: str, **query: str) -> list[Obj]:
    found = await rest.get(resource.path(namespace), query or None)
    return list(found.get("items") or [])


async def _scenario(run: Run) -> Run:
    async with Emulator(controllers=True) as emu:
        audit = emu.start_audit()
        for crd in sorted(CRDS.glob("*.yaml")):
            await emu.load(crd)
        conf = await manager.configuration(emu.kubeconfig_path)
        async with client.ApiClient(conf) as api:
            rest = Rest(api)
            for ns in (NAMESPACE, "team-a", "team-b", "team-c"):
                await create(
                    rest, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                )
            await apply(rest, SAMPLES / "device-class.yaml")
            await apply(rest, SAMPLES / "queues.yaml")
            issuer = _CertManager(rest) if run.install == "cert-manager" else None
            ca_bundle = (await issuer.issue()).ca_crt if issuer is not None else b""
            for config in _webhook_configurations(ca_bundle):
                await rest.request("POST", _WEBHOOK_CONFIGS[config["kind"]].path(), body=config)
            deployed = phalanx_settings(kustomize(run.install))
            kubelet = Kubelet(api, NODES, ready_seconds=5, renew_seconds=60)
            await kubelet.start()
            try:
                async with _controller(emu, conf, deployed) as replica:
                    await _steps(rest, emu, kubelet, replica, run, issuer)
            finally:
                await kubelet.stop()
    run.requests = [q for q in audit if q.user_agent.startswith(AGENT)]
    return run


@contextlib.asynccontextmanager
async def _controller(emu: Emulator, conf: client.Configuration, deployed: dict[str, str]) -> Any:
    here = {
        "identity": "replica-a",
        "health_host": "127.0.0.1",
        "health_port": 0,
        "requeue_backoff_base_seconds": 1.0,
        "webhook_host": "127.0.0.1",
        "webhook_port": 0,
        "webhook_cert_check_seconds": 30.0,
    }
    settings = Settings.load(**{**deployed, **here})
    stop = asyncio.Event()
    ready: list[Replica] = []
    for informer in INFORMED:
        # as a server without streaming lists answers: the caches list, then watch
        emu.inject_fault(Fault("watch", informer, code=400, times=1, agent=AGENT))
    task = asyncio.create_task(manager.run(settings, conf, stop=stop, on_ready=ready.append))
    try:
        while not ready:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        await ready[0].caches.ready.wait()
        assert ready[0].elector is not None
        while not ready[0].elector.is_leader():
            await asyncio.sleep(0.5)
        yield ready[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


_WEBHOOK_CONFIGS = {
    kind: r.Resource("admissionregistration.k8s.io", "v1", kind.lower() + "s", kind, False)
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
}


def _webhook_configurations(ca_bundle: bytes) -> list[Obj]:
    """deploy/'s webhook configurations, each webhook narrowed to objects with a label
    nothing has: the controller keeps their caBundle (get, update) as on a cluster, while
    the calls themselves are tested with a served webhook in tests/kube. `ca_bundle`, if
    any, injected (as cert-manager's CA injector does)."""
    configs = [
        d
        for d in yaml.safe_load_all((DEPLOY / "default" / "webhooks.yaml").read_text())
        if d and d["kind"] in _WEBHOOK_CONFIGS
    ]
    for config in configs:
        for hook in config["webhooks"]:
            hook["objectSelector"] = {"matchLabels": {"phalanx.dev/scenario": "never"}}
            if ca_bundle:
                hook["clientConfig"]["caBundle"] = base64.b64encode(ca_bundle).decode()
    return configs


class _CertManager:
    """What cert-manager does with deploy/overlays/cert-manager's Certificate: a Secret
    with tls.crt, tls.key and ca.crt (no CA key), the serving pair issued again by the
    same CA on renewal."""

    def __init__(self, rest: Rest) -> None:
        self.rest = rest
        self.policy = Policy(tuple(service_hosts("phalanx-webhook", NAMESPACE)))
        self.ca: Bundle | None = None

    async def issue(self) -> Bundle:
        now = datetime.datetime.now(datetime.UTC)
        if self.ca is None:
            made = renewed(None, now, self.policy)
            assert made is not None
            self.ca = made[0]
        crt, key = make_serving(self.ca.ca_crt, self.ca.ca_key, self.policy.hosts, now, 90)
        bundle = Bundle(crt, key, self.ca.ca_crt, b"")
        data = {k: v for k, v in bundle.data().items() if k != "ca.key"}
        secret: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "phalanx-webhook-tls",
                "namespace": NAMESPACE,
                "annotations": {"cert-manager.io/certificate-name": "phalanx-webhook"},
            },
            "type": "kubernetes.io/tls",
            "data": data,
        }
        try:
            found = await self.rest.get(SECRET)
        except KubeError as exc:
            if exc.status != 404:
                raise
            await self.rest.request("POST", SECRETS.path(NAMESPACE), body=secret)
        else:
            secret["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
            await self.rest.request("PUT", SECRET, body=secret)
        return bundle


async def _job(rest: Rest, namespace: str, name: str) -> Obj | None:
    try:
        return await rest.get(r.GANG_JOBS.path(namespace, name))
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


async def _admitted_pods(rest: Rest, namespace: str, job: str, count: int) -> list[Obj] | None:
    """The job's pods once `count` exist, all bound, of its current admission."""
    current = await _job(rest, namespace, job)
    admission = ((current or {}).get("status") or {}).get("admission") or {}
    pods = await items(rest, r.PODS, namespace, labelSelector=f"phalanx.dev/gang={job}")
    live = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and p["metadata"].get("annotations", {}).get("phalanx.dev/admission-id")
        == admission.get("admissionId")
    ]
    if admission and len(live) == count and all(p["spec"].get("nodeName") for p in live):
        return live
    return None


async def _steps(
    rest: Rest,
    emu: Emulator,
    kubelet: Kubelet,
    replica: Replica,
    run: Run,
    issuer: _CertManager | None,
) -> None:
    # 1. the sample job; the first claim protection and the first binding meet a 409
    emu.inject_fault(Fault("patch", "resourceclaims", code=409, times=1, agent=AGENT))
    emu.inject_fault(Fault("bind", "pods", code=409, times=1, agent=AGENT))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "llama-ddp", "namespace": "team-a"},
        "spec": {"clusterIP": "None", "selector": {"phalanx.dev/gang": "llama-ddp"}},
    }
    await create(rest, service)  # left by an earlier leader
    await apply(rest, SAMPLES / "pytorch-ddp.yaml")
    first: list[Obj] = []

    async def admitted_whole() -> bool:
        found = await _admitted_pods(rest, "team-a", "llama-ddp", 4)
        first[:] = found or []
        return found is not None

    await until(admitted_whole, "the sample job admitted whole")
    run.first_pods = first

    # 2. a node of the job deleted: evicted, admitted again elsewhere
    run.deleted_node = first[0]["spec"]["nodeName"]
    await rest.request("DELETE", r.NODES.path(name=run.deleted_node))
    before = {p["metadata"]["uid"] for p in first}

    async def readmitted() -> bool:
        found = await _admitted_pods(rest, "team-a", "llama-ddp", 4)
        if found is None or {p["metadata"]["uid"] for p in found} & before:
            return False
        run.readmitted_nodes = {p["spec"]["nodeName"] for p in found}
        return True

    await until(readmitted, "the sample job admitted again after losing a node")

    # 2b. a new serving certificate: the controller's own (it finds the Secret spoilt), or
    # cert-manager's renewal, which the controller's webhook then serves
    if issuer is None:
        await _spoil_certificate(rest)
    else:
        await _renewed_by_cert_manager(issuer, replica)

    # 3. a gang of another controller's pods, twice
    await create(rest, _one_gpu_template("team-b"))
    for attempt in ("a", "b"):
        for i in range(2):
            await create(rest, _foreign_pod(f"etl-{attempt}-{i}"))

        async def foreign_bound(attempt: str = attempt) -> bool:
            pods = await items(rest, r.PODS, "team-b", labelSelector="phalanx.dev/gang=etl")
            mine = [p for p in pods if p["metadata"]["name"].startswith(f"etl-{attempt}-")]
            return len(mine) == 2 and all(p["spec"].get("nodeName") for p in mine)

        await until(foreign_bound, f"foreign gang attempt {attempt} bound")
        for i in range(2):
            await kubelet.finish("team-b", f"etl-{attempt}-{i}")

        async def finished(attempt: str = attempt) -> bool:
            pods = await items(rest, r.PODS, "team-b", labelSelector="phalanx.dev/gang=etl")
            mine = [p for p in pods if p["metadata"]["name"].startswith(f"etl-{attempt}-")]
            return all((p.get("status") or {}).get("phase") == "Succeeded" for p in mine)

        await until(finished, f"foreign gang attempt {attempt} finished")
    records = await items(rest, r.CONFIG_MAPS, "team-b", labelSelector="phalanx.dev/record=gang")
    run.foreign_record = records[0] if records else {}

    # 4. team-a's job naming team-b's queue
    wrong = _tiny_job("sneaky", "team-a", queue="team-b")
    await create(rest, wrong)

    async def judged() -> bool:
        job = await _job(rest, "team-a", "sneaky")
        return bool(((job or {}).get("status") or {}).get("conditions"))

    await until(judged, "the job on another team's queue judged")
    run.wrong_queue_job = await _job(rest, "team-a", "sneaky") or {}
    assert replica.webhook is not None
    run.unseen_namespace_labels = await replica.webhook.server.namespace_labels("team-new")

    # 5. the sample job deleted
    await rest.request("DELETE", r.GANG_JOBS.path("team-a", "llama-ddp"))

    async def gone() -> bool:
        return await _job(rest, "team-a", "llama-ddp") is None

    await until(gone, "the sample job deleted and released")
    run.job_gone = True


async def _spoil_certificate(rest: Rest) -> None:
    """Spoil the Secret's serving certificate; return once the controller wrote a new one."""
    spoilt = "bm90IGEgY2VydGlmaWNhdGU="  # "not a certificate"
    await rest.request(
        "PATCH",
        SECRET,
        body={"data": {"tls.crt": spoilt}},
        content_type="application/merge-patch+json",
    )

    async def certificate_renewed() -> bool:
        return bool((await rest.get(SECRET))["data"]["tls.crt"] != spoilt)

    await until(certificate_renewed, "the spoilt webhook certificate written anew")


async def _renewed_by_cert_manager(issuer: _CertManager, replica: Replica) -> None:
    """cert-manager renews the serving certificate; return once the webhook serves it."""
    assert replica.webhook is not None
    assert replica.webhook.certs is None, (
        "the install runs the controller's own certificate manager beside cert-manager: "
        "both would write the Secret (PHALANX_WEBHOOK_CERTIFICATES=cert-manager missing)"
    )
    server = replica.webhook.server
    renewed_serial = (await issuer.issue()).serving().serial_number

    async def served() -> bool:
        return server.serial == renewed_serial

    await until(served, "cert-manager's renewed webhook certificate served")


def _one_gpu_template(namespace: str) -> Obj:
    """The one-GPU ResourceClaimTemplate of the controller tests, in `namespace`."""
    template = one_gpu_template()
    template["metadata"]["namespace"] = namespace
    return template


def _foreign_pod(name: str) -> Obj:
    """A pod of another controller (an Indexed Job, say) joining gang `etl` of 2."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "team-b",
            "labels": {"phalanx.dev/gang": "etl", "phalanx.dev/queue": "team-b"},
            "annotations": {"phalanx.dev/gang-size": "2"},
        },
        "spec": {
            "schedulerName": "phalanx",
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "etl", "resources": {"requests": {"cpu": "1"}}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
        },
    }


def _tiny_job(name: str, namespace: str, queue: str) -> Obj:
    container = {"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}
    return {
        "apiVersion": "phalanx.dev/v1alpha1",
        "kind": "GangJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "queueName": queue,
            "podSets": [
                {"name": "w", "replicas": 1, "template": {"spec": {"containers": [container]}}}
            ],
        },
    }
