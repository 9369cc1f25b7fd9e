"""A scenario as the API objects a live replay creates, with every duration scaled.

Pure: no I/O. Names follow the simulator's: nodes `<group>-<i>` with one ResourceSlice of
`gpus` devices of the simulator's driver, the DeviceClass `gpu`, quota resource
`devices/gpu`, one pod set `worker` per job whose pods each take `gpusPerPod` GPUs through
a claim `gpus` (from a ResourceClaimTemplate `gpus-<n>` in the job's namespace). A job's
namespace is `<prefix><queue>`, labelled so that only its queue selects it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from emulator.kubelet import (
    CHECKPOINT_ANNOTATION,
    DURATION_ANNOTATION,
    NodeDescription,
    nodes_from_groups,
)
from policies.registry import KINDS
from simulations.run import DRIVER, GPU_CLASS, Simulation
from simulations.scenario import JobSpec, PolicySpec, QueueSpec, Scenario, Workload
from simulations.workload import jobs_of

Obj = dict[str, Any]

API = "phalanx.dev/v1alpha1"
RUN_LABEL = "phalanx.dev/replay"
"""On everything the replay creates (value: the run's name), so it can find and delete it."""
TENANT_LABEL = "phalanx.dev/replay-tenant"
"""On a tenant namespace: the queue whose namespaceSelector picks it."""
POD_SET = "worker"
CLAIM = "gpus"
MAX_RESTARTS = 100_000
"""A killed job is resubmitted however often, as in the simulator."""
IMAGE = "phalanx.dev/replay-sleeper"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ReplayError(ValueError):
    """A scenario the replay cannot run live; one line per problem."""


@dataclass(frozen=True)
class JobPlan:
    spec: JobSpec
    namespace: str
    manifest: Obj
    gpus: int
    runtime_estimate: float | None


@dataclass(frozen=True)
class Outage:
    """A node NotReady from `start` for `length` scenario seconds."""

    node: str
    start: float
    length: float


@dataclass
class ReplayPlan:
    scenario: Scenario
    speed: float
    run: str
    nodes: list[NodeDescription]
    namespaces: list[Obj]
    device_class: Obj
    templates: list[Obj]
    queues: list[Obj]
    jobs: list[JobPlan]
    """In submission order: (submit, name), as the simulator's arrivals."""
    outages: list[Outage]
    never_fit: dict[str, str]
    total_gpus: int
    notes: list[str] = field(default_factory=list)

    def wall(self, seconds: float) -> float:
        """Scenario seconds as loop seconds."""
        return seconds / self.speed

    @property
    def cycle_interval(self) -> float:
        """The controller's least time between cycles, in loop seconds."""
        return self.wall(self.scenario.cycle_interval)

    def batches(self) -> list[tuple[float, list[JobPlan]]]:
        """Jobs grouped by submit time, in order."""
        out: list[tuple[float, list[JobPlan]]] = []
        for job in self.jobs:
            if out and out[-1][0] == job.spec.submit:
                out[-1][1].append(job)
            else:
                out.append((job.spec.submit, [job]))
        return out


def first_jobs(scenario: Scenario, count: int) -> Scenario:
    """The scenario with only its first `count` jobs (by submission), listed as they are
    in the whole workload (a generator's or a trace's draws, names included)."""
    jobs = sorted(jobs_of(scenario), key=lambda j: (j.submit, j.name))[:count]
    workload = Workload(jobs=jobs)
    return scenario.model_copy(
        update={"workload": workload, "name": f"{scenario.name}-first-{len(jobs)}"}
    )


def run_name(scenario: Scenario) -> str:
    """The run's label value: the scenario's name as a label value."""
    name = re.sub(r"[^a-z0-9-]+", "-", scenario.name.lower()).strip("-")[:63].strip("-")
    return name or "replay"


def build(scenario: Scenario, speed: float, *, namespace_prefix: str = "replay-") -> ReplayPlan:
    """Every object of the replay, or a ReplayError naming what cannot run live."""
    if speed <= 0:
        raise ReplayError(f"--speed must be > 0, got {speed:g}")
    problems: list[str] = []
    sim = Simulation(scenario, "phalanx")
    run = run_name(scenario)
    notes = []
    if "phalanx" not in scenario.schedulers:
        notes.append("the scenario does not list the phalanx scheduler; it is replayed anyway")
    baselines = [s for s in scenario.schedulers if s != "phalanx"]
    if baselines:
        notes.append(
            f"{' and '.join(baselines)}: simulator baselines, not run live (Phalanx admits "
            "whole gangs; a per-pod scheduler is not what it does)"
        )
    queues = {q.name for q in scenario.queues}
    leaves = sorted(queues - {q.parent for q in scenario.queues if q.parent})
    namespace_of = {}
    for queue in leaves:
        ns = f"{namespace_prefix}{queue}"
        if not _DNS_LABEL.match(ns) or len(ns) > 63:
            problems.append(f"queues: {queue!r}: namespace {ns!r} is not a DNS label")
        namespace_of[queue] = ns
    jobs = []
    for name, job in sorted(sim.specs.items(), key=lambda kv: (kv[1].submit, kv[0])):
        pod = f"{name}-{POD_SET}-{job.pods - 1}"
        if not _DNS_LABEL.match(name) or len(pod) > 63:
            problems.append(
                f"workload: job {name!r}: not usable as a GangJob name (a DNS label whose "
                f"pod names, e.g. {pod!r}, stay within 63 characters)"
            )
            continue
        estimate = sim.jobs[name].runtime_estimate
        jobs.append(
            JobPlan(
                job,
                namespace_of[job.queue],
                _gang_job(scenario, job, namespace_of[job.queue], run, speed, estimate),
                job.pods * job.gpus_per_pod,
                estimate,
            )
        )
    if problems:
        raise ReplayError("\n".join(problems))
    failures = outages(scenario)
    if any(f.random for f in scenario.failures):
        sim.run()  # the failures as the simulator draws them for this seed
        failures = merged(sim.outages)
        notes.append(
            f"random failures (mtbfHours): the simulator's draws for seed {scenario.seed}, "
            f"replayed as {len(failures)} fixed outages"
        )
    nodes = [
        NodeDescription(**{**vars(n), "labels": {**n.labels, RUN_LABEL: run}})
        for n in nodes_from_groups(scenario.cluster)
    ]
    per_pod = sorted({j.spec.gpus_per_pod for j in jobs if j.spec.gpus_per_pod})
    return ReplayPlan(
        scenario=scenario,
        speed=speed,
        run=run,
        nodes=nodes,
        namespaces=[_namespace(ns, queue, run) for queue, ns in namespace_of.items()],
        device_class=_device_class(run),
        templates=[_template(ns, n, run) for ns in namespace_of.values() for n in per_pod],
        queues=[_queue(q, namespace_prefix, run, leaf=q.name in leaves) for q in scenario.queues],
        jobs=jobs,
        outages=failures,
        never_fit=dict(sim.never_fit),
        total_gpus=sim.total_gpus,
        notes=notes,
    )


def outages(scenario: Scenario) -> list[Outage]:
    """Fixed failures as outages (random ones are the simulator's to draw: `merged` takes
    its `Simulation.outages`)."""
    spans = []
    for f in scenario.failures:
        if f.random:
            continue
        assert f.at is not None and f.node is not None and f.down_for is not None
        spans.append((f.node, f.at, f.at + f.down_for))
    return merged(spans)


def merged(failures: Iterable[tuple[str, float, float]]) -> list[Outage]:
    """(node, down at, back at) failures as outages, overlapping ones of a node merged
    (the simulator keeps a node down until its last failure is repaired)."""
    spans: dict[str, list[list[float]]] = {}
    for node, start, end in failures:
        spans.setdefault(node, []).append([start, end])
    out: list[Outage] = []
    for node, intervals in spans.items():
        merged: list[list[float]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        out.extend(Outage(node, s, e - s) for s, e in merged)
    return sorted(out, key=lambda o: (o.start, o.node))


def policy_settings(policies: PolicySpec) -> dict[str, Obj]:
    """The scenario's policies as controller settings (`{name, params}` per kind set)."""
    return {
        kind: {"name": choice.name, "params": dict(choice.params)}
        for kind in KINDS
        if (choice := getattr(policies, kind)) is not None
    }


def _labels(run: str) -> dict[str, str]:
    return {RUN_LABEL: run}


def _namespace(name: str, queue: str, run: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**_labels(run), TENANT_LABEL: queue}},
    }


def _device_class(run: str) -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": GPU_CLASS, "labels": _labels(run)},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
    }


def template_name(gpus: int) -> str:
    return f"{CLAIM}-{gpus}"


def _template(namespace: str, gpus: int, run: str) -> Obj:
    request = {
        "name": CLAIM,
        "exactly": {"deviceClassName": GPU_CLASS, "allocationMode": "ExactCount", "count": gpus},
    }
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": template_name(gpus), "namespace": namespace, "labels": _labels(run)},
        "spec": {
            "metadata": {"labels": _labels(run)},
            "spec": {"devices": {"requests": [request]}},
        },
    }


def _queue(q: QueueSpec, prefix: str, run: str, *, leaf: bool) -> Obj:
    quota = []
    for resource, limits in q.quota.items():
        item: Obj = {"resource": resource, "nominal": _quantity(limits.nominal)}
        if limits.borrowing_limit is not None:
            item["borrowingLimit"] = _quantity(limits.borrowing_limit)
        if limits.lending_limit is not None:
            item["lendingLimit"] = _quantity(limits.lending_limit)
        quota.append(item)
    spec: Obj = {"quota": quota, "weight": q.weight}
    if q.parent is not None:
        spec["parent"] = q.parent
    if leaf:
        spec["namespaceSelector"] = {"matchLabels": {TENANT_LABEL: q.name}}
    if q.policies is not None:
        chosen = policy_settings(q.policies)
        if chosen:
            spec["policies"] = chosen
    return {
        "apiVersion": API,
        "kind": "Queue",
        "metadata": {"name": q.name, "labels": _labels(run)},
        "spec": spec,
    }


def _gang_job(
    scenario: Scenario,
    job: JobSpec,
    namespace: str,
    run: str,
    speed: float,
    estimate: float | None,
) -> Obj:
    container: Obj = {
        "name": "main",
        "image": IMAGE,
        "resources": {"requests": {"cpu": str(job.cpu_per_pod)}},
    }
    pod_spec: Obj = {"containers": [container]}
    if job.gpus_per_pod:
        pod_spec["resourceClaims"] = [
            {"name": CLAIM, "resourceClaimTemplateName": template_name(job.gpus_per_pod)}
        ]
        container["resources"]["claims"] = [{"name": CLAIM}]
    min_runtime = job.min_runtime if job.min_runtime is not None else scenario.min_runtime
    checkpoint = (
        job.checkpoint_interval
        if job.checkpoint_interval is not None
        else scenario.checkpoint_interval
    )
    annotations = {DURATION_ANNOTATION: _seconds(job.duration / speed)}
    if checkpoint is not None:  # the simulated kubelet resumes a rerun from its last one
        annotations[CHECKPOINT_ANNOTATION] = _seconds(checkpoint / speed)
    template = {
        "metadata": {"labels": _labels(run), "annotations": annotations},
        "spec": pod_spec,
    }
    spec: Obj = {
        "queueName": job.queue,
        "priority": job.priority,
        "failurePolicy": {"maxRestarts": MAX_RESTARTS},
        "podSets": [{"name": POD_SET, "replicas": job.pods, "template": template}],
    }
    if estimate is not None:
        spec["runtimeEstimateSeconds"] = estimate / speed
    if min_runtime:
        spec["minRuntimeSeconds"] = min_runtime / speed
    if checkpoint is not None:
        spec["checkpointIntervalSeconds"] = checkpoint / speed
    return {
        "apiVersion": API,
        "kind": "GangJob",
        "metadata": {"name": job.name, "namespace": namespace, "labels": _labels(run)},
        "spec": spec,
    }


def _quantity(value: int | float | str) -> int | str:
    """A quantity as the API takes it: an integer or a string (never a float)."""
    return value if isinstance(value, int | str) else f"{value:g}"


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
