"""Rendering deploy/ as the API server would receive it, and checking the result against
the official Kubernetes 1.36 OpenAPI schemas (the kubernetes-validate package).

`kubectl kustomize` does the rendering (kubectl has kustomize built in); a machine
without kubectl fails these tests with one line saying so, rather than skipping them.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "default"
OVERLAYS = ("dev", "prometheus", "cert-manager")
KUBERNETES_VERSION = "1.36.0"
NAMESPACE = "phalanx-system"

Obj = dict[str, Any]


def kustomization(name: str) -> Path:
    """deploy/default for "default", else deploy/overlays/<name>."""
    return BASE if name == "default" else DEPLOY / "overlays" / name


@functools.cache
def _rendered(path: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed: the deploy tests render deploy/ with "
            "`kubectl kustomize` (install kubectl 1.27 or newer, which has kustomize v5)",
            pytrace=False,
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{done.stderr}", pytrace=False)
    return done.stdout


def kustomize(name: str) -> list[Obj]:
    """The objects `kubectl kustomize` renders for the base or an overlay (fresh copies)."""
    return copy.deepcopy(_parsed(kustomization(name)))


def kustomize_at(path: Path) -> list[Obj]:
    """The objects `kubectl kustomize` renders for the kustomization at `path`."""
    return copy.deepcopy(_parsed(path))


@functools.cache
def _parsed(path: Path) -> list[Obj]:
    return [d for d in yaml.load_all(_rendered(path), Loader=LOADER) if d]


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def phalanx_settings(objects: list[Obj]) -> dict[str, str]:
    """The controller settings (Settings keywords) that the literal PHALANX_ variables of
    the controller Deployment among `objects` give."""
    deployment = find(objects, "Deployment", "phalanx-controller")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {
        e["name"].removeprefix("PHALANX_").lower(): e["value"]
        for e in container.get("env") or ()
        if e["name"].startswith("PHALANX_") and "value" in e
    }


def key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


BUILT_IN_GROUPS = {
    "",
    "apps",
    "policy",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
}


def is_built_in(obj: Obj) -> bool:
    return obj["apiVersion"].rpartition("/")[0] in BUILT_IN_GROUPS


def schema_problem(obj: Obj) -> str | None:
    """Why a built-in object does not match the Kubernetes 1.36 schema (strict: unknown
    fields are errors), or None when it does."""
    return _schema_problem(json.dumps(obj, sort_keys=True))


@functools.cache
def _schema_problem(text: str) -> str | None:
    obj = json.loads(text)
    try:
        used = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return f"{obj['kind']} {obj['metadata'].get('name')}: {where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return exc.message
    assert used == "1.36", f"validated against the {used} schemas, not 1.36"
    return None


def schema_problems(objects: list[Obj]) -> list[str]:
    """The schema problems of every built-in object among `objects`."""
    return [p for o in objects if is_built_in(o) if (p := schema_problem(o))]
