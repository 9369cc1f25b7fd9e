"""The Helm chart (deploy/helm/phalanx), rendered by tests/deploy/helmlite.py: the same
objects as the kustomize base and overlays for the matching values, valid for
Kubernetes 1.36, and values for image, replicas, resources, policies and queues that
end up where the controller reads them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from controller.api.queue import Queue, validate_queue_tree
from controller.settings import Settings
from controller.webhook import configs
from tests.deploy.helmlite import Chart, TemplateError
from tests.deploy.render import DEPLOY, NAMESPACE, Obj, find, key, kustomize, schema_problems

HELM_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
AS_OVERLAY: dict[str, dict[str, Any]] = {
    "default": {},
    "dev": {
        "replicas": 1,
        "logLevel": "debug",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    },
    "prometheus": {
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    },
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
}


@functools.cache
def chart() -> Chart:
    return Chart(DEPLOY / "helm" / "phalanx")


def render(**values: Any) -> list[Obj]:
    return chart().manifests(values)


def comparable(obj: Obj) -> Obj:
    """Without Helm's own labels, and with container variables by name (kustomize puts a
    patched variable first; no variable here refers to another, so order means nothing)."""
    template = obj.get("spec", {}).get("template", {})
    for meta in (obj["metadata"], template.get("metadata", {})):
        labels = meta.get("labels") or {}
        for label in HELM_LABELS:
            labels.pop(label, None)
    for c in template.get("spec", {}).get("containers", ()):
        c["env"] = sorted(c.get("env", ()), key=lambda e: e["name"])
    return obj


def container(objects: list[Obj]) -> Obj:
    c: Obj = find(objects, "Deployment", "phalanx-controller")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return c


def env(objects: list[Obj]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}


def test_every_object_of_the_chart_carries_helms_standard_labels() -> None:
    for obj in render(namespace={"create": True}, queues=[{"name": "q"}]):
        if obj["kind"] != "CustomResourceDefinition":
            assert set(HELM_LABELS) <= set(obj["metadata"]["labels"]), key(obj)


@pytest.mark.parametrize("overlay", list(AS_OVERLAY))
def test_the_chart_renders_the_same_objects_as_the_kustomization(overlay: str) -> None:
    values = {"namespace": {"create": True}, **AS_OVERLAY[overlay]}
    from_chart = sorted((comparable(o) for o in render(**values)), key=key)
    from_kustomize = sorted((comparable(o) for o in kustomize(overlay)), key=key)
    assert [key(o) for o in from_chart] == [key(o) for o in from_kustomize]
    for ours, theirs in zip(from_chart, from_kustomize, strict=True):
        assert ours == theirs, key(ours)


@pytest.mark.parametrize("values", [{}, AS_OVERLAY["prometheus"], AS_OVERLAY["cert-manager"]])
def test_every_built_in_object_of_the_chart_matches_the_kubernetes_1_36_schema(
    values: dict[str, Any],
) -> None:
    objects = render(namespace={"create": True}, queues=[{"name": "q"}], **values)
    assert schema_problems(objects) == []


def test_the_namespace_is_left_to_the_installer_unless_asked_for() -> None:
    assert [o for o in render() if o["kind"] == "Namespace"] == []


def test_the_release_namespace_is_used_throughout() -> None:
    objects = chart().manifests({"namespace": {"create": True}}, namespace="batch-system")
    namespaced = {o["metadata"].get("namespace") for o in objects} - {None}
    assert namespaced == {"batch-system"}
    hook = find(objects, "ValidatingWebhookConfiguration", "phalanx-validating")["webhooks"][0]
    assert hook["clientConfig"]["service"]["namespace"] == "batch-system"
    assert NAMESPACE not in str(objects).replace("batch-system", "")


def test_the_webhook_configurations_are_those_configs_py_builds_for_the_release() -> None:
    objects = chart().manifests({}, namespace="batch-system")
    built = configs.configurations(
        service=("batch-system", "phalanx-webhook", 443), system_namespaces=("batch-system",)
    )
    for config in built:
        installed = find(objects, config["kind"], config["metadata"]["name"])
        assert installed["webhooks"] == config["webhooks"]


def test_image_replicas_and_resources_come_from_the_values() -> None:
    objects = render(
        image={"repository": "registry.local/phalanx", "tag": "1.2.3"},
        replicas=3,
        resources={"limits": {"memory": "4Gi"}},
    )
    assert container(objects)["image"] == "registry.local/phalanx:1.2.3"
    assert find(objects, "Deployment", "phalanx-controller")["spec"]["replicas"] == 3
    assert container(objects)["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }


def test_policies_and_settings_become_variables_the_controller_accepts() -> None:
    objects = render(
        policies={
            "ordering": "drf",
            "preemption": {"name": "priority", "params": {"scope": "cluster"}},
        },
        settings={"SEARCH_BOUND": 16},
    )
    variables = env(objects)
    settings = Settings.load(
        **{
            k.removeprefix("PHALANX_").lower(): v
            for k, v in variables.items()
            if k.startswith("PHALANX_")
        }
    )
    assert (settings.ordering.name, settings.preemption.name) == ("drf", "priority")
    assert settings.preemption.params == {"scope": "cluster"}
    assert settings.search_bound == 16


def test_queues_in_the_values_become_queue_objects_that_form_a_tree() -> None:
    queues = [
        {"name": "org", "spec": {"quota": [{"resource": "devices/gpu", "nominal": "16"}]}},
        {
            "name": "team-a",
            "spec": {
                "parent": "org",
                "quota": [{"resource": "devices/gpu", "nominal": "8", "borrowingLimit": "8"}],
            },
        },
    ]
    made = [Queue.from_manifest(o) for o in render(queues=queues) if o["kind"] == "Queue"]
    assert [q.metadata.name for q in made] == ["org", "team-a"]
    validate_queue_tree(made)


def test_a_queue_without_a_name_stops_the_render() -> None:
    with pytest.raises(TemplateError, match="every entry of queues needs a name"):
        render(queues=[{"spec": {}}])


# ---- the renderer itself ----------------------------------------------------------------


def template(tmp_path: Path, text: str, values: str = "") -> str:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("name: t\nversion: 1.0.0\n")
    (tmp_path / "values.yaml").write_text(values)
    (tmp_path / "templates" / "t.yaml").write_text(text)
    return Chart(tmp_path).render()["templates/t.yaml"]


def test_the_renderer_trims_whitespace_as_go_templates_do(tmp_path: Path) -> None:
    text = "a:\n  {{- if true }}\n  b: 1\n  {{- end }}\nc: {{ 2 -}}  \n  x"
    assert template(tmp_path, text) == "a:\n  b: 1\nc: 2x"


def test_the_renderer_ranges_over_maps_by_sorted_key(tmp_path: Path) -> None:
    text = "{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}"
    assert template(tmp_path, text, "m: {b: 2, a: 1}") == "a=1;b=2;"


def test_the_renderer_follows_sprig_default_and_go_truth(tmp_path: Path) -> None:
    text = (
        '{{ default "x" .Values.empty }} {{ default "x" .Values.zero }} '
        "{{ if .Values.list }}y{{ else if .Values.zero }}z{{ else }}n{{ end }}"
    )
    assert template(tmp_path, text, "empty: ''\nzero: 0\nlist: []") == "x x n"


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="function 'lookup' is not supported"):
        template(tmp_path, '{{ lookup "v1" "Secret" "ns" "name" }}')
