"""The Dockerfile and .dockerignore, read as the image builder reads them: a build stage
and a final stage that runs `phalanx controller` as the user the Deployment expects,
with no compiler or build tools, from a context holding only what the build copies."""

from __future__ import annotations

import fnmatch
import json
import re

from tests.deploy.render import REPO, find, kustomize

COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cargo", "rustc")


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage: (INSTRUCTION, arguments), continuations joined."""
    text = (REPO / "Dockerfile").read_text()
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    out: list[list[tuple[str, str]]] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            out.append([])
        if out:
            out[-1].append((instruction.upper(), args.strip()))
    return out


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (the last matching
    pattern decides; `!` lets a path back in; a directory pattern covers what is in it)."""
    result = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        candidates = [path, *("/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1))]
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(candidate.split("/")[-1], pattern[3:])
            ):
                result = not negate
                break
    return result


def test_the_image_is_built_in_stages_and_copies_only_the_environment() -> None:
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert " AS " in build[0][1].upper()
    copies = [args for instruction, args in final if instruction == "COPY"]
    assert copies and all(args.startswith("--from=") for args in copies)


def test_the_final_stage_installs_no_compiler_or_build_tool() -> None:
    final = stages()[-1]
    runs = " ".join(args for instruction, args in final if instruction == "RUN")
    assert not any(re.search(rf"\b{re.escape(tool)}\b", runs) for tool in COMPILERS)
    assert "apt-get install" not in runs and "pip install" not in runs


def test_the_image_runs_phalanx_controller_as_the_user_the_deployment_expects() -> None:
    final = dict(stages()[-1])
    pod = find(kustomize("default"), "Deployment", "phalanx-controller")["spec"]["template"]
    user, _, group = final["USER"].partition(":")
    assert json.loads(final["ENTRYPOINT"]) + json.loads(final["CMD"]) == ["phalanx", "controller"]
    assert pod["spec"]["containers"][0]["args"] == ["controller"]
    assert int(user) == pod["spec"]["securityContext"]["runAsUser"] != 0
    assert int(group) == pod["spec"]["securityContext"]["runAsGroup"]


def test_the_build_context_holds_the_package_and_nothing_else() -> None:
    sources = [
        source
        for instruction, args in stages()[0]
        if instruction == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert "controller" in sources and "pyproject.toml" in sources
    for source in [*sources, "controller/cli.py", "simulations/scenarios/default.yaml"]:
        assert not ignored(source), source
    for outside in ("tests/deploy/test_dockerfile.py", ".git/HEAD", "deploy/default/rbac.yaml"):
        assert ignored(outside), outside
    assert ignored("controller/__pycache__/cli.cpython-311.pyc")
