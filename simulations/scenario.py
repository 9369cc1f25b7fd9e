"""Scenario files: cluster, queues, workload, schedulers, seed, horizon (YAML, validated).

A broken file gets one line per problem naming the field and what is wrong, never a
traceback (`ScenarioError`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.api.errors import format_validation_error

SchedulerName = Literal["phalanx", "per-pod", "gang-timeout"]
Quantity = int | str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeGroup(_Model):
    """`count` identical nodes named `<name>-<i>`, each with `gpus` DRA GPUs."""

    name: str = Field(min_length=1)
    count: int = Field(ge=1)
    cpu: Quantity = "64"
    memory: Quantity = "512Gi"
    pods: int = Field(110, ge=1)
    gpus: int = Field(0, ge=0)
    gpu_memory: Quantity = Field("80Gi", alias="gpuMemory")
    labels: dict[str, str] = {}


class QuotaSpec(_Model):
    nominal: Quantity = 0
    borrowing_limit: Quantity | None = Field(None, alias="borrowingLimit")
    lending_limit: Quantity | None = Field(None, alias="lendingLimit")


class QueueSpec(_Model):
    name: str = Field(min_length=1)
    parent: str | None = None
    quota: dict[str, QuotaSpec] = {}
    weight: float = Field(1.0, ge=0)


class JobSpec(_Model):
    """One job: `pods` pods, each with `gpusPerPod` GPUs and `cpuPerPod` cpu."""

    name: str = Field(min_length=1)
    submit: float = Field(0.0, ge=0)
    pods: int = Field(ge=1)
    gpus_per_pod: int = Field(0, ge=0, alias="gpusPerPod")
    cpu_per_pod: Quantity = Field("1", alias="cpuPerPod")
    duration: float = Field(gt=0)
    queue: str = "default"
    priority: int = 0


class Workload(_Model):
    jobs: list[JobSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Workload:
        names = [j.name for j in self.jobs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"job names must be unique; repeated: {', '.join(dup)}")
        return self


class Scenario(_Model):
    """A whole experiment: what runs where, under which schedulers, for how long."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    horizon: float | None = Field(None, gt=0)
    schedulers: Annotated[list[SchedulerName], Field(min_length=1)] = ["phalanx"]
    cycle_interval: float = Field(1.0, gt=0, alias="cycleInterval")
    pod_creation_interval: float = Field(0.01, ge=0, alias="podCreationInterval")
    ready_timeout: float = Field(300.0, gt=0, alias="readyTimeout")
    backoff_base: float = Field(60.0, gt=0, alias="backoffBase")
    backoff_max: float = Field(3600.0, gt=0, alias="backoffMax")
    cluster: list[NodeGroup] = Field(min_length=1)
    queues: list[QueueSpec] = Field(
        default_factory=lambda: [QueueSpec.model_validate({"name": "default"})]
    )
    workload: Workload

    @model_validator(mode="after")
    def _jobs_name_known_queues(self) -> Scenario:
        names = {q.name for q in self.queues}
        for i, job in enumerate(self.workload.jobs):
            if job.queue not in names:
                raise ValueError(
                    f"workload.jobs[{i}].queue: queue {job.queue!r} is not defined in queues "
                    f"(defined: {', '.join(sorted(names))})"
                )
        return self


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message lists every problem, one per line."""


def parse_scenario(text: str, source: str) -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a YAML mapping, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(format_validation_error(err, source)) from None


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read: {err.strerror}") from None
    return parse_scenario(text, str(path))


def shipped_scenario(name: str) -> Scenario:
    """A scenario shipped in `simulations/scenarios/` (by file stem)."""
    ref = resources.files("simulations") / "scenarios" / f"{name}.yaml"
    return parse_scenario(ref.read_text(), f"scenarios/{name}.yaml")
