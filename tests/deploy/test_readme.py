"""The README's install section does what it says: its kustomize overlay renders
(`kubectl kustomize`) to the base with the image it built, its `helm install` values to
the chart with that image, and every object, port, metric and sample its checks name
is one the install (or the samples) makes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.settings import Settings
from tests.deploy.render import (
    DEPLOY,
    REPO,
    Obj,
    find,
    key,
    kustomize,
    kustomize_at,
    phalanx_settings,
)
from tests.deploy.test_helm import chart
from tests.deploy.test_observability import exported

README = REPO / "README.md"


def install_section() -> str:
    text = README.read_text()
    start = text.index("## Installing on a cluster")
    return text[start : text.index("\n## ", start + 1)]


def commands() -> str:
    """Every shell line of the section's code blocks, one string."""
    return "\n".join(re.findall(r"```sh\n(.*?)```", install_section(), re.S))


def one(pattern: str) -> tuple[str, ...]:
    """The groups of the one match of `pattern` among the commands."""
    found = re.findall(pattern, commands(), re.M)
    assert len(found) == 1, f"{pattern!r} matches {len(found)} times in the README's commands"
    match = found[0]
    return match if isinstance(match, tuple) else (match,)


def built_image() -> str:
    (image,) = one(r"docker build -t (\S+) \.")
    return image


def overlay(tmp: Path) -> tuple[Path, str]:
    """A copy of deploy/ under `tmp` with the README's overlay written into it, as the
    README's `cat >` does; (the overlay's directory, its kustomization text)."""
    target, text = one(r"cat > (\S+) <<'EOF'\n((?s:.*?))\nEOF$")
    shutil.copytree(DEPLOY, tmp / "deploy")
    path = tmp / target
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    (applied,) = one(r"^kubectl apply -k (\S+)$")
    assert tmp / applied == path.parent, "the README applies another overlay than it writes"
    return path.parent, text


def image(objects: list[Obj]) -> str:
    deployment = find(objects, "Deployment", "phalanx-controller")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def without_image(objects: list[Obj]) -> list[Obj]:
    for obj in objects:
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"]["containers"][0].pop("image")
    return sorted(objects, key=key)


def test_the_readmes_overlay_installs_the_base_with_the_image_it_built(tmp_path: Path) -> None:
    directory, _ = overlay(tmp_path)
    objects = kustomize_at(directory)
    assert image(objects) == built_image()
    assert without_image(objects) == without_image(kustomize("default"))


def test_each_base_the_readmes_overlay_offers_renders_with_that_image(tmp_path: Path) -> None:
    directory, text = overlay(tmp_path)
    (base,) = re.findall(r"resources: \[(\S+)\]", text)
    (offered,) = re.findall(r"# or (.*)", text)
    for other in [o.strip() for o in offered.split(",")]:
        sibling = directory.with_name(f"{directory.name}-on-{Path(other).name}")
        sibling.mkdir()
        (sibling / "kustomization.yaml").write_text(text.replace(base, other))
        rendered = kustomize_at(sibling)
        assert image(rendered) == built_image(), other
        assert without_image(rendered) == without_image(kustomize(Path(other).name)), other


def test_the_readmes_helm_install_renders_the_chart_with_the_image_it_built() -> None:
    release, path, namespace, sets = one(r"^helm install (\S+) (\S+) -n (\S+)((?: --set \S+)*)$")
    values: dict[str, Any] = {}
    for assignment in re.findall(r"--set (\S+)", sets):
        dotted, _, value = assignment.partition("=")
        *parents, leaf = dotted.split(".")
        node = values
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    assert REPO / path == chart().root
    objects = chart().manifests(values, release=release, namespace=namespace)
    assert image(objects) == built_image()
    (namespace_file,) = one(r"^kubectl apply -f (deploy/default/namespace\.yaml)$")
    assert yaml.safe_load((REPO / namespace_file).read_text())["metadata"]["name"] == namespace


def test_the_checks_name_the_deployment_lease_crds_and_webhook_configuration_installed() -> None:
    objects = kustomize("default")
    namespace, deployment = one(r"-n (\S+) rollout status deployment/(\S+)")
    assert find(objects, "Deployment", deployment)["metadata"]["namespace"] == namespace
    lease_namespace, lease = one(r"-n (\S+) get lease (\S+)")
    settings = Settings.load(**phalanx_settings(objects))
    assert (lease_namespace, lease) == (namespace, settings.lease_name)
    [container] = find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    lease_env = {e["name"]: e for e in container["env"]}
    assert lease_env["PHALANX_LEASE_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    (crds,) = one(r"^kubectl get crd (.+)$")
    installed = {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    assert set(crds.split()) == installed
    (configuration,) = one(r"get validatingwebhookconfiguration (\S+)")
    assert find(objects, "ValidatingWebhookConfiguration", configuration)


def test_the_checks_read_metrics_the_controller_exports_where_they_forward() -> None:
    objects = kustomize("default")
    namespace, service, port = one(r"-n (\S+) port-forward svc/(\S+) (\d+)")
    spec = find(objects, "Service", service)["spec"]
    assert find(objects, "Service", service)["metadata"]["namespace"] == namespace
    assert int(port) in {p["port"] for p in spec["ports"]}
    named = re.findall(r"\^phalanx_\(([^)]*)\)", commands())
    series = {f"phalanx_{n}" for group in named for n in group.split("|")}
    assert series and series <= set(exported())
    (counter, label) = one(r"grep '(phalanx_\w+)\{\.\*(\w+)=")
    assert label in exported()[counter]


@pytest.mark.parametrize("sample", sorted((DEPLOY / "samples").glob("*.yaml")), ids=str)
def test_the_checks_apply_every_sample(sample: Path) -> None:
    applied = re.findall(r"-f (deploy/samples/\S+)", commands())
    assert str(sample.relative_to(REPO)) in applied


def test_the_checks_name_the_queues_and_the_job_of_the_samples() -> None:
    samples = [
        d
        for p in sorted((DEPLOY / "samples").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    (listed,) = one(r"^kubectl get queues +# (.*)$")
    queues = {d["metadata"]["name"] for d in samples if d["kind"] == "Queue"}
    assert {q.strip() for q in listed.split(",")} == queues
    namespace, name = one(r"-n (\S+) get gangjob (\S+)")
    assert find(samples, "GangJob", name)["metadata"]["namespace"] == namespace
