"""deploy/default and its overlays, rendered by `kubectl kustomize`: valid for Kubernetes
1.36, and the install the README promises (restricted namespace, hardened pods, probes
on what the controller serves, the agreed webhook wiring)."""

from __future__ import annotations

from typing import Any

import cel
import pytest
import yaml

from controller.api.crdgen import check_crds
from controller.settings import Settings
from controller.webhook import configs, manifests
from tests.deploy.netpol import ANYONE, EVERY_PORT, admitted
from tests.deploy.podsecurity import restricted_violations
from tests.deploy.render import (
    LOADER,
    NAMESPACE,
    OVERLAYS,
    REPO,
    Obj,
    find,
    is_built_in,
    key,
    kustomize,
    phalanx_settings,
    schema_problem,
    schema_problems,
)

RENDERS = ("default", *OVERLAYS)
CRDS = REPO / "crds"
EXTRA_KINDS = {
    "default": set(),
    "dev": set(),
    "prometheus": {"ServiceMonitor", "PrometheusRule"},
    "cert-manager": {"Issuer", "Certificate"},
}
WEBHOOK_PATHS = {
    ("phalanx-validating", "gangjobs.phalanx.dev"): "/validate-phalanx-dev-v1alpha1-gangjob",
    ("phalanx-validating", "queues.phalanx.dev"): "/validate-phalanx-dev-v1alpha1-queue",
    ("phalanx-validating", "pods.phalanx.dev"): "/validate--v1-pod",
    ("phalanx-mutating", "pods.phalanx.dev"): "/mutate--v1-pod",
}


def controller_pod(objects: list[Obj]) -> Obj:
    spec: Obj = find(objects, "Deployment", "phalanx-controller")["spec"]["template"]
    return spec


def container(objects: list[Obj]) -> Obj:
    containers = controller_pod(objects)["spec"]["containers"]
    assert [c["name"] for c in containers] == ["controller"]
    c: Obj = containers[0]
    return c


def selects_controller(selector: Obj, objects: list[Obj]) -> bool:
    """Whether a label selector (matchLabels only) picks the controller's pods."""
    labels = controller_pod(objects)["metadata"]["labels"]
    return set(selector) == {"matchLabels"} and selector["matchLabels"].items() <= labels.items()


def env(objects: list[Obj]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def controller_settings(objects: list[Obj]) -> Settings:
    """The settings the Deployment's literal PHALANX_ variables give the controller."""
    return Settings.load(**phalanx_settings(objects))


def webhooks(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {
        (o["metadata"]["name"], w["name"]): w
        for o in objects
        if o["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
        for w in o["webhooks"]
    }


@pytest.mark.parametrize("name", RENDERS)
def test_each_kustomization_renders_without_duplicate_objects(name: str) -> None:
    objects = kustomize(name)
    keys = [key(o) for o in objects]
    assert objects and len(keys) == len(set(keys))


@pytest.mark.parametrize("name", RENDERS)
def test_every_built_in_object_matches_the_kubernetes_1_36_schema(name: str) -> None:
    objects = kustomize(name)
    assert schema_problems(objects) == []
    assert {o["kind"] for o in objects if not is_built_in(o)} == EXTRA_KINDS[name]


def test_the_schema_check_refuses_an_unknown_field() -> None:
    deployment = find(kustomize("default"), "Deployment", "phalanx-controller")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    assert "securityContex" in str(schema_problem(deployment))


@pytest.mark.parametrize("name", RENDERS)
def test_every_namespaced_object_lives_in_phalanx_system(name: str) -> None:
    namespaces = {o["metadata"].get("namespace") for o in kustomize(name)}
    assert namespaces == {NAMESPACE, None}


def test_the_base_installs_exactly_the_crds_of_the_repository() -> None:
    installed = [o for o in kustomize("default") if o["kind"] == "CustomResourceDefinition"]
    generated = [yaml.load(p.read_text(), Loader=LOADER) for p in sorted(CRDS.glob("*.yaml"))]
    assert generated and sorted(installed, key=key) == sorted(generated, key=key)


@pytest.mark.parametrize("copy", ["deploy/default/crds", "deploy/helm/phalanx/crds"])
def test_the_install_copies_of_the_crds_are_up_to_date(copy: str) -> None:
    assert check_crds(REPO / copy) == [], f"{copy} is stale: regenerate with `phalanx crds`"


def test_the_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = find(kustomize("default"), "Namespace", NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("name", RENDERS)
def test_the_controller_pod_is_admitted_under_the_restricted_profile(name: str) -> None:
    assert restricted_violations(controller_pod(kustomize(name))["spec"]) == []


def test_the_restricted_check_refuses_a_pod_that_may_run_as_root() -> None:
    spec = controller_pod(kustomize("default"))["spec"]
    del spec["securityContext"]["runAsNonRoot"]
    del spec["containers"][0]["securityContext"]["runAsNonRoot"]
    spec["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    assert restricted_violations(spec) == [
        "container controller: capabilities must drop ALL",
        "container controller: may add only NET_BIND_SERVICE, adds ['SYS_ADMIN']",
        "container controller: runAsNonRoot must be true",
    ]


def test_the_controller_runs_read_only_without_capabilities() -> None:
    security = container(kustomize("default"))["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_deployment_runs_two_replicas_with_limits_and_leader_election() -> None:
    objects = kustomize("default")
    deployment = find(objects, "Deployment", "phalanx-controller")
    resources = container(objects)["resources"]
    assert deployment["spec"]["replicas"] == 2
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert env(objects)["PHALANX_LEADER_ELECT"] == "true"
    assert container(objects)["args"] == ["controller"]


@pytest.mark.parametrize("name", RENDERS)
def test_probes_and_metrics_are_on_the_port_the_controller_serves(name: str) -> None:
    objects = kustomize(name)
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == int(env(objects)["PHALANX_HEALTH_PORT"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@pytest.mark.parametrize("name", RENDERS)
def test_every_phalanx_variable_the_pod_sets_is_a_controller_setting(name: str) -> None:
    objects = kustomize(name)
    settings = {k for k in env(objects) if k.startswith("PHALANX_")}
    assert settings <= {f"PHALANX_{f.upper()}" for f in Settings.model_fields}
    controller_settings(objects)


def test_the_services_reach_the_controller_pods_on_named_ports() -> None:
    objects = kustomize("default")
    pod_labels = controller_pod(objects)["metadata"]["labels"]
    port_names = {p["name"] for p in container(objects)["ports"]}
    for name, port, target in (
        ("phalanx-metrics", 8080, "metrics"),
        ("phalanx-webhook", 443, "webhook"),
    ):
        spec = find(objects, "Service", name)["spec"]
        assert spec["selector"].items() <= pod_labels.items()
        assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(port, target)]
        assert target in port_names
    assert {p["containerPort"] for p in container(objects)["ports"] if p["name"] == "webhook"} == {
        9443
    }


def test_the_disruption_budget_keeps_one_replica_and_lets_a_single_one_drain() -> None:
    objects = kustomize("default")
    spec = find(objects, "PodDisruptionBudget", "phalanx-controller")["spec"]
    assert selects_controller(spec["selector"], objects)
    assert spec == {**spec, "maxUnavailable": 1} and "minAvailable" not in spec


@pytest.mark.parametrize("name", RENDERS)
def test_every_webhook_calls_the_controller_service_on_its_agreed_path(name: str) -> None:
    found = webhooks(kustomize(name))
    assert set(found) == set(WEBHOOK_PATHS)
    for where, hook in found.items():
        service = hook["clientConfig"]["service"]
        assert service == {
            "name": "phalanx-webhook",
            "namespace": NAMESPACE,
            "path": WEBHOOK_PATHS[where],
            "port": 443,
        }
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["failurePolicy"] == "Fail"


@pytest.mark.parametrize("name", RENDERS)
def test_the_webhook_configurations_are_those_configs_py_builds(name: str) -> None:
    built = configs.configurations(
        service=(NAMESPACE, "phalanx-webhook", 443), system_namespaces=(NAMESPACE,)
    )
    for config in built:
        installed = find(kustomize(name), config["kind"], config["metadata"]["name"])
        assert installed["metadata"]["labels"] == config["metadata"]["labels"]
        assert installed["webhooks"] == config["webhooks"]


def test_deploy_holds_the_webhook_configurations_generated_now() -> None:
    assert manifests.stale(REPO) == [], "regenerate with `phalanx webhook-configs`"


def test_pod_webhooks_never_see_system_namespaces_or_the_webhooks_own_pods() -> None:
    for where, hook in webhooks(kustomize("default")).items():
        if where[1] != "pods.phalanx.dev":
            continue
        [expression] = hook["namespaceSelector"]["matchExpressions"]
        assert expression["operator"] == "NotIn"
        assert {"kube-system", NAMESPACE} <= set(expression["values"])


def _sent(hook: Obj, pod: Obj, old: Obj | None = None) -> bool:
    request = {"operation": "CREATE" if old is None else "UPDATE"}
    return all(
        cel.evaluate(c["expression"], {"object": pod, "oldObject": old, "request": request})
        for c in hook["matchConditions"]
    )


def _pod(resources: Obj | None = None, **spec: Any) -> Obj:
    container = {"name": "c", "image": "i", "resources": resources or {}}
    return {"metadata": {"name": "p"}, "spec": {"containers": [container], **spec}}


@pytest.mark.parametrize("configuration", ["phalanx-validating", "phalanx-mutating"])
def test_pod_webhooks_are_sent_pods_that_ask_for_devices_or_name_phalanx(
    configuration: str,
) -> None:
    hook = webhooks(kustomize("default"))[(configuration, "pods.phalanx.dev")]
    gpu = _pod({"limits": {"nvidia.com/gpu": "1"}})
    claims = _pod(resourceClaims=[{"name": "gpu", "resourceClaimTemplateName": "t"}])
    ours = _pod(schedulerName="phalanx")
    plain = _pod({"requests": {"cpu": "1", "memory": "1Gi", "hugepages-2Mi": "2Mi"}})
    assert (_sent(hook, gpu), _sent(hook, claims), _sent(hook, ours)) == (True, True, True)
    assert _sent(hook, plain) is False


def test_removing_the_gang_label_from_a_pod_is_sent_to_the_validating_webhook() -> None:
    hook = webhooks(kustomize("default"))[("phalanx-validating", "pods.phalanx.dev")]
    labelled = {**_pod(schedulerName="phalanx"), "metadata": {"name": "p"}}
    labelled["metadata"]["labels"] = {"phalanx.dev/gang": "g"}
    assert _sent(hook, _pod(schedulerName="phalanx"), old=labelled) is True


@pytest.mark.parametrize("name", RENDERS)
def test_the_network_policy_admits_the_webhook_and_metrics_ports_and_nothing_else(
    name: str,
) -> None:
    objects = kustomize(name)
    policy = find(objects, "NetworkPolicy", "phalanx-controller")
    named = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    listens = controller_settings(objects)
    assert selects_controller(policy["spec"]["podSelector"], objects)
    assert admitted(policy, "ingress", named) == {
        listens.webhook_port: [ANYONE],  # the API server is no pod: no `from` can name it
        listens.health_port: [{"namespaceSelector": {}}],  # Prometheus, in any namespace
    }
    # the API server: the kubernetes Service's port, and its endpoints' after DNAT; no DNS
    # (in the cluster the client reaches KUBERNETES_SERVICE_HOST, an address)
    assert admitted(policy, "egress", named) == {443: [ANYONE], 6443: [ANYONE]}


def test_the_network_policy_check_sees_a_rule_that_opens_every_port() -> None:
    objects = kustomize("default")
    policy = find(objects, "NetworkPolicy", "phalanx-controller")
    policy["spec"]["ingress"].append({"from": [{"podSelector": {}}]})
    assert admitted(policy, "ingress", {"webhook": 9443, "metrics": 8080})[EVERY_PORT] == [
        {"podSelector": {}}
    ]


def test_the_dev_overlay_runs_one_replica_with_debug_logs() -> None:
    objects = kustomize("dev")
    assert find(objects, "Deployment", "phalanx-controller")["spec"]["replicas"] == 1
    assert env(objects)["PHALANX_LOG_LEVEL"] == "debug"
    assert env(objects)["PHALANX_LEADER_ELECT"] == "true"


def test_the_cert_manager_overlay_issues_the_secret_the_webhook_reads() -> None:
    objects = kustomize("cert-manager")
    certificate = find(objects, "Certificate", "phalanx-webhook")["spec"]
    assert certificate["secretName"] == "phalanx-webhook-tls"
    assert set(certificate["dnsNames"]) == {
        "phalanx-webhook.phalanx-system.svc",
        "phalanx-webhook.phalanx-system.svc.cluster.local",
    }
    issuer = find(objects, "Issuer", certificate["issuerRef"]["name"])["spec"]
    ca = find(objects, "Certificate", "phalanx-ca")["spec"]
    assert ca["isCA"] is True and issuer == {"ca": {"secretName": ca["secretName"]}}


def test_the_cert_manager_overlay_leaves_the_certificates_to_cert_manager() -> None:
    assert "PHALANX_WEBHOOK_CERTIFICATES" not in env(kustomize("default"))
    chosen = env(kustomize("cert-manager"))["PHALANX_WEBHOOK_CERTIFICATES"]
    assert Settings.load(webhook_certificates=chosen).webhook_certificates == "cert-manager"


def test_the_cert_manager_overlay_injects_its_ca_into_both_webhook_configurations() -> None:
    for kind, name in (
        ("ValidatingWebhookConfiguration", "phalanx-validating"),
        ("MutatingWebhookConfiguration", "phalanx-mutating"),
    ):
        annotations = find(kustomize("cert-manager"), kind, name)["metadata"]["annotations"]
        assert annotations == {"cert-manager.io/inject-ca-from": "phalanx-system/phalanx-webhook"}
        plain = find(kustomize("default"), kind, name)["metadata"]
        assert "annotations" not in plain
