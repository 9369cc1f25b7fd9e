"""Scenario files: cluster, queues, workload, failures, schedulers, seed, horizon (YAML).

A workload is exactly one of: explicit `jobs`, a `synthetic` generator (Poisson arrivals,
distributions for size, duration, priority and queue), or a CSV `trace` to replay.
`failures` take nodes down, at fixed times or at random (mean time between failures per
node group). Everything random is drawn from one `random.Random(seed)`, so a scenario and
its seed give identical results.

A broken file gets one line per problem naming the field and what is wrong, never a
traceback (`ScenarioError`).
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from controller.api.errors import FieldProblem, format_path, format_validation_error
from controller.engine.errors import InvalidInput
from controller.engine.quantity import parse_quantity
from policies.registry import CREATORS, KINDS, PolicyRef
from policies.routing import PolicySelection
from simulations.yamlfile import read_text, yaml_mapping

SchedulerName = Literal["phalanx", "per-pod", "gang-timeout"]
FieldPath = tuple[str | int, ...]

# Sizes beyond these are refused at load, naming the bound, rather than run: the
# simulator builds every node, device and pod it is given, so one stray digit in a file
# would otherwise cost minutes and gigabytes before anything is decided.
MAX_NODES = 50_000
"""Nodes in the whole cluster (Kubernetes itself is tested up to 5,000 per cluster)."""
MAX_GPUS_PER_NODE = 128
"""GPUs per node and per pod: DRA's limit of devices in one ResourceSlice."""
MAX_GPUS = 200_000
"""GPUs in the whole cluster."""
MAX_JOBS = 1_000_000
"""Jobs in one workload (listed, generated or replayed)."""
MAX_PODS_PER_JOB = 65_536
"""Pods of one job, and GPUs of one job (one GPU per pod is the smallest split)."""
MAX_QUANTITY = 10**18
"""Largest resource amount in base units (1E: cores, bytes, devices)."""


def _quantity(value: object) -> object:
    """A Kubernetes quantity (`"1.5Gi"`, `4`, `"500m"`), finite and not negative."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a quantity such as 500m, 2 or 16Gi (got {value!r})")
    problem = _quantity_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


@functools.lru_cache(maxsize=1024, typed=True)
def _quantity_problem(value: int | float | str) -> str | None:
    """What is wrong with a quantity, if anything (cached: generated jobs repeat a few)."""
    try:
        amount = parse_quantity(value)
    except InvalidInput as err:
        return err.what
    if amount < 0:
        return f"must not be negative (got {value!r})"
    if amount > MAX_QUANTITY:
        return f"{value!r} is too large (at most 1E = 10^18)"
    return None


Quantity = Annotated[int | float | str, BeforeValidator(_quantity)]
Int = Annotated[int, Strict()]
"""An integer as written (YAML `2`): `2.5`, `"2"` and `true` are refused, not coerced."""
Priority = Annotated[int, Strict(), Field(ge=-(2**31), le=2**31 - 1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class NodeGroup(_Model):
    """`count` identical nodes named `<name>-<i>`, each with `gpus` DRA GPUs."""

    name: str = Field(min_length=1)
    count: Int = Field(ge=1, le=MAX_NODES)
    cpu: Quantity = "64"
    memory: Quantity = "512Gi"
    pods: Int = Field(110, ge=1, le=MAX_PODS_PER_JOB)
    gpus: Int = Field(0, ge=0, le=MAX_GPUS_PER_NODE)
    gpu_memory: Quantity = Field("80Gi", alias="gpuMemory")
    labels: dict[str, str] = {}


class QuotaSpec(_Model):
    nominal: Quantity = 0
    borrowing_limit: Quantity | None = Field(None, alias="borrowingLimit")
    lending_limit: Quantity | None = Field(None, alias="lendingLimit")


class PolicyChoice(_Model):
    """A policy by name with its parameters; a bare string names one with defaults."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: object) -> object:
        return {"name": data} if isinstance(data, str) else data

    def ref(self) -> PolicyRef:
        return PolicyRef(self.name, dict(self.params))


class PolicySpec(_Model):
    """Ordering, preemption and placement policies (see `phalanx policies`); unset ones
    inherit (a queue's from the scenario's, the scenario's from the built-in defaults:
    priority, none, bin-pack)."""

    ordering: PolicyChoice | None = None
    preemption: PolicyChoice | None = None
    placement: PolicyChoice | None = None

    def selection(self) -> PolicySelection:
        return PolicySelection(
            *(None if (c := getattr(self, k)) is None else c.ref() for k in KINDS)
        )

    def problems(self, path: FieldPath) -> list[tuple[FieldPath, str]]:
        out: list[tuple[FieldPath, str]] = []
        for kind in KINDS:
            choice = getattr(self, kind)
            if choice is not None:
                try:
                    CREATORS[kind](choice.ref(), "")
                except InvalidInput as err:
                    out.append(((*path, kind), err.what))
        return out


class QueueSpec(_Model):
    name: str = Field(min_length=1)
    parent: str | None = None
    quota: dict[Annotated[str, Field(min_length=1)], QuotaSpec] = {}
    weight: float = Field(1.0, ge=0)
    policies: PolicySpec | None = None


class JobSpec(_Model):
    """One job: `pods` pods, each with `gpusPerPod` GPUs and `cpuPerPod` cpu."""

    name: str = Field(min_length=1)
    submit: float = Field(0.0, ge=0)
    pods: Int = Field(ge=1, le=MAX_PODS_PER_JOB)
    gpus_per_pod: Int = Field(0, ge=0, le=MAX_GPUS_PER_NODE, alias="gpusPerPod")
    cpu_per_pod: Quantity = Field("1", alias="cpuPerPod")
    duration: float = Field(gt=0)
    queue: str = "default"
    priority: Priority = 0
    runtime_estimate: float | None = Field(default=None, ge=0, alias="runtimeEstimate")
    min_runtime: float | None = Field(default=None, ge=0, alias="minRuntime")
    checkpoint_interval: float | None = Field(default=None, gt=0, alias="checkpointInterval")


# ---- distributions ---------------------------------------------------------------------
class LogNormal(_Model):
    """exp(N(ln median, sigma)): half the draws below `median`; `sigma` sets the spread."""

    median: float = Field(gt=0)
    sigma: float = Field(ge=0)


class Pareto(_Model):
    """P(X > x) = (scale / x) ** shape for x >= scale: a power-law tail."""

    scale: float = Field(gt=0)
    shape: float = Field(gt=0)


class Uniform(_Model):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise FieldProblem(("high",), f"must be >= low ({self.low:g}), got {self.high:g}")
        return self


_KINDS = ("value", "choices", "uniform", "lognormal", "pareto", "mixture")


class Distribution(_Model):
    """Exactly one of `value`, `choices` ({value: weight}), `uniform`, `lognormal`,
    `pareto` or `mixture` (weighted components), then clamped to [`min`, `max`].

    A bare number stands for `{value: n}`. Integer quantities (pods, GPUs, priority) are
    rounded to the nearest integer after clamping.
    """

    value: float | None = None
    choices: dict[float, Annotated[float, Field(ge=0)]] | None = None
    uniform: Uniform | None = None
    lognormal: LogNormal | None = None
    pareto: Pareto | None = None
    mixture: list[Component] | None = Field(None, min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, data: object) -> object:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"value": data}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(_KINDS)}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.choices is not None and not any(self.choices.values()):
            raise FieldProblem(("choices",), "needs at least one value with a weight > 0")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise FieldProblem(("max",), f"must be >= min ({self.min:g}), got {self.max:g}")
        return self

    def always_positive(self) -> bool:
        """True if every draw (after clamping) is > 0."""
        return self.lowest() > 0

    def lowest(self) -> float:
        """A lower bound of every draw, after clamping (lognormal and Pareto draws are
        positive: their bound is the smallest positive float)."""
        return self.bounds()[0]

    def highest(self) -> float:
        """An upper bound of every draw, after clamping (inf for a lognormal or Pareto
        tail that no `max` cuts)."""
        return self.bounds()[1]

    def bounds(self) -> tuple[float, float]:
        low, high = self._unclamped()
        if self.min is not None:
            low, high = max(low, self.min), max(high, self.min)
        if self.max is not None:
            low, high = min(low, self.max), min(high, self.max)
        return low, high

    def _unclamped(self) -> tuple[float, float]:
        if self.value is not None:
            return self.value, self.value
        if self.choices is not None:
            drawn = [v for v, w in self.choices.items() if w > 0]
            return min(drawn), max(drawn)
        if self.uniform is not None:
            return self.uniform.low, self.uniform.high
        if self.lognormal is not None:
            return math.ulp(0.0), math.inf
        if self.pareto is not None:
            return self.pareto.scale, math.inf
        assert self.mixture is not None
        parts = [c.bounds() for c in self.mixture]
        return min(lo for lo, _ in parts), max(hi for _, hi in parts)


class Component(Distribution):
    """One part of a mixture, drawn with probability proportional to `weight`."""

    weight: float = Field(gt=0)


Distribution.model_rebuild()


# ---- workloads -------------------------------------------------------------------------
class SyntheticWorkload(_Model):
    """`jobs` jobs arriving as a Poisson process of `arrivalRate` jobs per second.

    Size is either `gpus` per job (split into the fewest pods of at most `gpusPerPodMax`
    GPUs that divide it exactly) or `pods` and `gpusPerPod` (each 1 if not given).
    `queues` maps queue names to weights (the share of jobs each receives).
    """

    jobs: Int = Field(ge=1, le=MAX_JOBS)
    arrival_rate: float = Field(gt=0, alias="arrivalRate")
    start: float = Field(0.0, ge=0)
    gpus: Distribution | None = None
    gpus_per_pod_max: Int = Field(8, ge=1, le=MAX_GPUS_PER_NODE, alias="gpusPerPodMax")
    pods: Distribution | None = None
    gpus_per_pod: Distribution | None = Field(None, alias="gpusPerPod")
    duration: Distribution
    priority: Distribution | None = None
    queues: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: {"default": 1.0}, min_length=1
    )
    cpu_per_pod: Quantity = Field("1", alias="cpuPerPod")
    name_prefix: str = Field("job", min_length=1, alias="namePrefix")

    @model_validator(mode="after")
    def _size_and_bounds(self) -> SyntheticWorkload:
        if self.gpus is not None:
            for name, dist in (("pods", self.pods), ("gpusPerPod", self.gpus_per_pod)):
                if dist is not None:
                    raise FieldProblem((name,), "give either gpus, or pods and gpusPerPod")
        elif self.pods is None and self.gpus_per_pod is None:
            raise ValueError("give the job size: gpus, or pods and gpusPerPod")
        if self.pods is not None and self.pods.lowest() < 0.5:
            raise FieldProblem(("pods",), "draws must be >= 1: set min: 1")
        for name, dist in (("gpus", self.gpus), ("gpusPerPod", self.gpus_per_pod)):
            if dist is not None and dist.lowest() < 0:
                raise FieldProblem((name,), "draws must be >= 0: set min: 0")
        if not self.duration.always_positive():
            raise FieldProblem(("duration",), "draws must be > 0 seconds: set min")
        for name, dist, bound in (
            ("gpus", self.gpus, MAX_PODS_PER_JOB),
            ("pods", self.pods, MAX_PODS_PER_JOB),
            ("gpusPerPod", self.gpus_per_pod, MAX_GPUS_PER_NODE),
            ("priority", self.priority, 2**31 - 1),
        ):
            if dist is not None and dist.highest() >= bound + 0.5:
                raise FieldProblem(
                    (name,), f"draws can reach {dist.highest():g}, over the bound {bound}: set max"
                )
        return self


class TraceColumns(_Model):
    """Which CSV column holds what; `submit` and `duration` in `timeUnit`."""

    submit: str = Field(min_length=1)
    duration: str = Field(min_length=1)
    gpus: str = Field(min_length=1)
    tenant: str | None = None
    pods: str | None = None
    gpus_per_pod: str | None = Field(None, alias="gpusPerPod")
    name: str | None = None
    priority: str | None = None

    @model_validator(mode="after")
    def _pods_or_per_pod(self) -> TraceColumns:
        if self.pods is not None and self.gpus_per_pod is not None:
            raise FieldProblem(("gpusPerPod",), "give at most one of pods and gpusPerPod")
        return self


TIME_UNITS = {"s": 1.0, "ms": 0.001, "min": 60.0, "h": 3600.0}


class TraceWorkload(_Model):
    """Jobs replayed from a CSV file with a header row (`path` relative to the scenario).

    `submit` is a number (in `timeUnit`) or an ISO date-time; times are shifted so the
    first job arrives at 0 unless `rebase: false`. Without a pods column a job of g GPUs
    gets the fewest pods of at most `gpusPerPodMax` GPUs that split g exactly. The tenant
    column names the queue (or is mapped through `tenantQueues`); without it every job
    goes to `queue`.
    """

    path: str = Field(min_length=1)
    columns: TraceColumns
    time_unit: Literal["s", "ms", "min", "h"] = Field("s", alias="timeUnit")
    rebase: bool = True
    gpus_per_pod_max: Int = Field(8, ge=1, le=MAX_GPUS_PER_NODE, alias="gpusPerPodMax")
    limit: Int | None = Field(None, ge=1, le=MAX_JOBS)
    queue: str = "default"
    tenant_queues: dict[str, str] = Field({}, alias="tenantQueues")
    cpu_per_pod: Quantity = Field("1", alias="cpuPerPod")


class Workload(_Model):
    """Exactly one of `jobs`, `synthetic` or `trace`."""

    jobs: list[JobSpec] | None = Field(None, min_length=1, max_length=MAX_JOBS)
    synthetic: SyntheticWorkload | None = None
    trace: TraceWorkload | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Workload:
        given = [k for k in ("jobs", "synthetic", "trace") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of jobs, synthetic or trace"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.jobs is not None:
            names = [j.name for j in self.jobs]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise FieldProblem(
                    ("jobs",), f"job names must be unique; repeated: {', '.join(dup)}"
                )
        return self


# ---- failures --------------------------------------------------------------------------
_FIXED = ("at", "node", "downFor")
_RANDOM = ("mtbfHours", "repairSeconds", "group")


class FailureSpec(_Model):
    """Either `{at, node, downFor}`: that node fails at `at` and returns `downFor` seconds
    later; or `{mtbfHours, repairSeconds, group?}`: every node of the group (or of the
    cluster) fails after exponential up-times of mean `mtbfHours` and is repaired in
    `repairSeconds`.

    A failed node takes its running jobs down: they lose their work and are resubmitted.
    """

    at: float | None = Field(None, ge=0)
    node: str | None = Field(None, min_length=1)
    down_for: float | None = Field(None, gt=0, alias="downFor")
    mtbf_hours: float | None = Field(None, gt=0, alias="mtbfHours")
    repair_seconds: float | None = Field(None, gt=0, alias="repairSeconds")
    group: str | None = Field(None, min_length=1)

    @property
    def random(self) -> bool:
        return self.mtbf_hours is not None or self.repair_seconds is not None

    @model_validator(mode="after")
    def _one_form(self) -> FailureSpec:
        values = {
            "at": self.at,
            "node": self.node,
            "downFor": self.down_for,
            "mtbfHours": self.mtbf_hours,
            "repairSeconds": self.repair_seconds,
            "group": self.group,
        }
        fixed = [k for k in _FIXED if values[k] is not None]
        rand = [k for k in _RANDOM if values[k] is not None]
        if not fixed and not rand:
            raise ValueError(
                "a failure is either {at, node, downFor} or {mtbfHours, repairSeconds, group}"
            )
        if fixed and rand:
            raise ValueError(
                f"mixes a fixed failure ({', '.join(fixed)}) with a random one "
                f"({', '.join(rand)}); use two entries"
            )
        form, keys = (_RANDOM[:2], rand) if rand else (_FIXED, fixed)
        for key in form:
            if key not in keys:
                raise FieldProblem((key,), f"is required with {', '.join(keys)}")
        return self


class RuntimeEstimates(_Model):
    """What the scheduler is told of a job's run time (backfilling, sjf, shadow times).

    `known: false` gives no estimates; otherwise a job's estimate is its duration times
    exp(N(0, `error`)) (0: exact), drawn from an RNG of its own so that turning estimates
    on or off never changes the workload itself. An explicit job's `runtimeEstimate`
    wins.
    """

    known: bool = True
    error: float = Field(default=0.0, ge=0)


# ---- the scenario ----------------------------------------------------------------------
class Scenario(_Model):
    """A whole experiment: what runs where, under which schedulers, for how long.

    `cycleInterval` bounds how often the scheduler runs an admission cycle: a cycle runs
    as soon as something changed, but never sooner than `cycleInterval` seconds after the
    previous one (0: one cycle per virtual instant with changes). `policies` choose the
    ordering, preemption and placement policies (queues may override them). Jobs
    checkpoint every `checkpointInterval` seconds (unset: never; a preempted or killed
    job then restarts from scratch) and are protected from preemption for `minRuntime`
    seconds after they start; explicit jobs may override both.
    """

    name: str = Field(min_length=1)
    description: str = ""
    seed: Int = 0
    horizon: float | None = Field(None, gt=0)
    schedulers: Annotated[list[SchedulerName], Field(min_length=1)] = ["phalanx"]
    cycle_interval: float = Field(1.0, ge=0, alias="cycleInterval")
    pod_creation_interval: float = Field(0.01, ge=0, alias="podCreationInterval")
    ready_timeout: float = Field(300.0, gt=0, alias="readyTimeout")
    backoff_base: float = Field(60.0, gt=0, alias="backoffBase")
    backoff_max: float = Field(3600.0, gt=0, alias="backoffMax")
    cluster: list[NodeGroup] = Field(min_length=1)
    queues: list[QueueSpec] = Field(
        default_factory=lambda: [QueueSpec.model_validate({"name": "default"})]
    )
    workload: Workload
    failures: list[FailureSpec] = []
    policies: PolicySpec = PolicySpec()
    estimates: RuntimeEstimates = Field(default_factory=lambda: RuntimeEstimates())
    checkpoint_interval: float | None = Field(None, gt=0, alias="checkpointInterval")
    min_runtime: float = Field(0.0, ge=0, alias="minRuntime")

    @model_validator(mode="after")
    def _cross_references(self) -> Scenario:
        problems = self._problems()
        if len(problems) == 1:
            raise FieldProblem(*problems[0])
        if problems:
            raise _Problems(problems)
        return self

    def _problems(self) -> list[tuple[FieldPath, str]]:
        """Names that must refer to something defined elsewhere in the scenario."""
        out: list[tuple[FieldPath, str]] = []
        names = {q.name for q in self.queues}
        known = f"(defined: {', '.join(sorted(names))})"
        out.extend(self._queue_tree_problems(known))
        parents = {q.parent for q in self.queues}

        def queue(path: FieldPath, name: str) -> None:
            if name not in names:
                out.append((path, f"queue {name!r} is not defined in queues {known}"))
            elif name in parents:
                out.append((path, f"queue {name!r} has child queues; only leaf queues take jobs"))

        wl = self.workload
        for i, job in enumerate(wl.jobs or ()):
            queue(("workload", "jobs", i, "queue"), job.queue)
        if wl.synthetic is not None:
            for name in wl.synthetic.queues:
                queue(("workload", "synthetic", "queues", name), name)
        if wl.trace is not None:
            if wl.trace.columns.tenant is None:
                queue(("workload", "trace", "queue"), wl.trace.queue)
            for tenant, name in wl.trace.tenant_queues.items():
                queue(("workload", "trace", "tenantQueues", tenant), name)
        out.extend(self.policies.problems(("policies",)))
        for i, q in enumerate(self.queues):
            if q.policies is not None:
                out.extend(q.policies.problems(("queues", i, "policies")))
        groups: dict[str, NodeGroup] = {}
        for i, g in enumerate(self.cluster):
            if g.name in groups:
                out.append((("cluster", i, "name"), f"node group {g.name!r} is defined twice"))
            groups.setdefault(g.name, g)
        for what, total, bound in (
            ("nodes", sum(g.count for g in self.cluster), MAX_NODES),
            ("GPUs", sum(g.count * g.gpus for g in self.cluster), MAX_GPUS),
        ):
            if total > bound:
                out.append((("cluster",), f"{total} {what} in all, over the bound {bound}"))
        for i, f in enumerate(self.failures):
            if f.node is not None and not _node_exists(groups, f.node):
                out.append(
                    (
                        ("failures", i, "node"),
                        f"no node {f.node!r} in the cluster (nodes are named <group>-<i>, "
                        f"i from 0; groups: {', '.join(groups)})",
                    )
                )
            if f.group is not None and f.group not in groups:
                out.append(
                    (
                        ("failures", i, "group"),
                        f"no node group {f.group!r} (groups: {', '.join(groups)})",
                    )
                )
            if f.random and self.horizon is None:
                out.append(
                    (
                        ("failures", i, "mtbfHours"),
                        "random failures never stop on their own: give the scenario a horizon",
                    )
                )
        return out

    def _queue_tree_problems(self, known: str) -> list[tuple[FieldPath, str]]:
        """Queue names are unique, parents exist, and following parents never loops."""
        out: list[tuple[FieldPath, str]] = []
        specs: dict[str, QueueSpec] = {}
        for i, q in enumerate(self.queues):
            if q.name in specs:
                out.append((("queues", i, "name"), f"queue {q.name!r} is defined twice"))
            specs.setdefault(q.name, q)
        for i, q in enumerate(self.queues):
            if q.parent is not None and q.parent not in specs:
                out.append((("queues", i, "parent"), f"queue {q.parent!r} is not defined {known}"))
                continue
            path = [q.name]
            parent = q.parent
            while parent is not None and parent in specs and parent not in path:
                path.append(parent)
                parent = specs[parent].parent
            if parent == q.name:
                cycle = " -> ".join([*path, q.name])
                out.append((("queues", i, "parent"), f"queue parents form a cycle: {cycle}"))
        return out


def _node_exists(groups: dict[str, NodeGroup], node: str) -> bool:
    group, _, index = node.rpartition("-")
    return (
        group in groups
        and index.isdigit()
        and str(int(index)) == index
        and int(index) < groups[group].count
    )


class _Problems(ValueError):
    """Several cross-field problems at once, one `path: problem` per line."""

    def __init__(self, problems: list[tuple[FieldPath, str]]) -> None:
        super().__init__("\n".join(f"{format_path(p)}: {msg}" for p, msg in problems))


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message lists every problem, one per line."""


def parse_scenario(text: str, source: str, base_dir: Path | None = None) -> Scenario:
    """Validate a scenario; a trace is read now (its path relative to `base_dir`, then
    made absolute) so that a bad row is reported here, like any other problem."""
    data = yaml_mapping(text, source, "scenario", ScenarioError)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        lines = format_validation_error(err, source).splitlines()
        prefix = f"{source}:"
        raise ScenarioError(
            "\n".join(line if line.startswith(prefix) else f"{prefix} {line}" for line in lines)
        ) from None
    trace = scenario.workload.trace
    if trace is not None:
        from simulations.workload import jobs_of

        if base_dir is not None and not Path(trace.path).is_absolute():
            # absolute from here on, so the scenario still finds its trace once dumped
            trace.path = str((base_dir / trace.path).absolute())

        try:
            jobs_of(scenario)
        except ScenarioError as err:
            lines = str(err).splitlines()
            raise ScenarioError(
                "\n".join(
                    f"{source}: {line}" if line.startswith("workload.") else line for line in lines
                )
            ) from None
    return scenario


def load_scenario(path: Path) -> Scenario:
    return parse_scenario(read_text(path, ScenarioError), str(path), path.parent)


def shipped_scenario(name: str) -> Scenario:
    """A scenario shipped in `simulations/scenarios/` (by file stem)."""
    ref = resources.files("simulations") / "scenarios" / f"{name}.yaml"
    return parse_scenario(ref.read_text(), f"scenarios/{name}.yaml", Path(str(ref)).parent)
