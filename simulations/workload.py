"""The jobs of a scenario: listed in the file, generated, or replayed from a CSV trace.

`jobs_of(scenario, rng)` is the one entry point; the runner consumes its `JobSpec`s
whatever their origin. Generation draws every random number from the `rng` it is given
(the scenario's single `random.Random(seed)`), in a fixed order per job: arrival gap,
size, duration, priority, queue. Constant distributions draw nothing.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from simulations.scenario import (
    MAX_GPUS_PER_NODE,
    MAX_JOBS,
    MAX_PODS_PER_JOB,
    TIME_UNITS,
    Distribution,
    JobSpec,
    Scenario,
    ScenarioError,
    SyntheticWorkload,
    TraceWorkload,
)

Sampler = Callable[[random.Random], float]
MAX_TRACE_PROBLEMS = 20
"""A trace with more bad rows than this reports the first ones only."""
_MIN_DURATION = 1e-6


def jobs_of(scenario: Scenario, rng: random.Random | None = None) -> list[JobSpec]:
    """Every job of the scenario; `rng` defaults to a fresh `Random(scenario.seed)`."""
    wl = scenario.workload
    if wl.jobs is not None:
        return list(wl.jobs)
    if wl.synthetic is not None:
        return synthetic_jobs(wl.synthetic, rng or random.Random(scenario.seed))
    assert wl.trace is not None
    return trace_jobs(wl.trace, {q.name for q in scenario.queues})


# ---- distributions ---------------------------------------------------------------------
def sampler(dist: Distribution) -> Sampler:
    """A function drawing one value of `dist` (clamped to its min and max) from an rng."""
    base = _base_sampler(dist)
    if dist.min is None and dist.max is None:
        return base
    lo = -math.inf if dist.min is None else dist.min
    hi = math.inf if dist.max is None else dist.max
    return lambda rng: min(hi, max(lo, base(rng)))


def _weighted(values: list[float], weights: list[float]) -> Sampler:
    cumulative: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    last = len(values) - 1

    def draw(rng: random.Random) -> float:
        return values[min(last, bisect.bisect_right(cumulative, rng.random() * total))]

    return draw


def _base_sampler(dist: Distribution) -> Sampler:
    if dist.value is not None:
        value = dist.value
        return lambda rng: value
    if dist.choices is not None:
        return _weighted(list(dist.choices), list(dist.choices.values()))
    if dist.uniform is not None:
        low, high = dist.uniform.low, dist.uniform.high
        return lambda rng: rng.uniform(low, high)
    if dist.lognormal is not None:
        mu, sigma = math.log(dist.lognormal.median), dist.lognormal.sigma
        return lambda rng: rng.lognormvariate(mu, sigma)
    if dist.pareto is not None:
        scale, shape = dist.pareto.scale, dist.pareto.shape
        return lambda rng: scale * rng.paretovariate(shape)
    assert dist.mixture is not None
    parts = [sampler(c) for c in dist.mixture]
    pick = _weighted([float(i) for i in range(len(parts))], [c.weight for c in dist.mixture])
    return lambda rng: parts[int(pick(rng))](rng)


def _integer(dist: Distribution | None, default: int, floor: int) -> Callable[[random.Random], int]:
    if dist is None:
        return lambda rng: default
    draw = sampler(dist)
    return lambda rng: max(floor, round(draw(rng)))


def split_gpus(gpus: int, per_pod_max: int) -> tuple[int, int]:
    """(pods, GPUs per pod) for a job of `gpus` GPUs: the fewest pods of at most
    `per_pod_max` GPUs that split it exactly (12 -> 2 x 6, 9 -> 3 x 3; 0 -> 1 x 0)."""
    if gpus <= 0:
        return 1, 0
    pods = -(-gpus // per_pod_max)
    while gpus % pods:
        pods += 1
    return pods, gpus // pods


# ---- synthetic -------------------------------------------------------------------------
def synthetic_jobs(spec: SyntheticWorkload, rng: random.Random) -> list[JobSpec]:
    """`spec.jobs` jobs with Poisson arrivals, sizes, durations, priorities and queues."""
    size: Callable[[random.Random], tuple[int, int]]
    if spec.gpus is not None:
        gpus = _integer(spec.gpus, 0, 0)
        per_pod_max = spec.gpus_per_pod_max
        splits: dict[int, tuple[int, int]] = {}

        def size(rng: random.Random) -> tuple[int, int]:
            g = gpus(rng)
            hit = splits.get(g)
            if hit is None:
                hit = splits[g] = split_gpus(g, per_pod_max)
            return hit
    else:
        pods = _integer(spec.pods, 1, 1)
        per_pod = _integer(spec.gpus_per_pod, 1, 0)

        def size(rng: random.Random) -> tuple[int, int]:
            return pods(rng), per_pod(rng)

    duration = sampler(spec.duration)
    priority = _integer(spec.priority, 0, -(2**31))
    names = list(spec.queues)
    if len(names) == 1:
        only = names[0]

        def queue(rng: random.Random) -> str:
            return only
    else:
        index = _weighted([float(i) for i in range(len(names))], list(spec.queues.values()))

        def queue(rng: random.Random) -> str:
            return names[int(index(rng))]

    width = len(str(spec.jobs - 1))
    rate = spec.arrival_rate
    expovariate = rng.expovariate
    t = spec.start
    out = []
    for i in range(spec.jobs):
        t += expovariate(rate)
        n_pods, gpus_per_pod = size(rng)
        out.append(
            JobSpec(
                name=f"{spec.name_prefix}-{i:0{width}d}",
                submit=t,
                pods=n_pods,
                gpusPerPod=gpus_per_pod,
                cpuPerPod=spec.cpu_per_pod,
                duration=max(_MIN_DURATION, duration(rng)),
                priority=priority(rng),
                queue=queue(rng),
            )
        )
    return out


# ---- traces ----------------------------------------------------------------------------
_trace_cache: dict[tuple[object, ...], tuple[JobSpec, ...]] = {}


def trace_jobs(spec: TraceWorkload, queues: set[str]) -> list[JobSpec]:
    """The trace's jobs; a file that cannot be used raises ScenarioError naming the file,
    and for each bad row its line and column. Unchanged files are read once.

    A relative `path` is taken from the working directory: `load_scenario` has already
    made it relative to the scenario file."""
    path = Path(spec.path)
    try:
        stat = path.stat()
    except OSError as err:
        raise ScenarioError(f"workload.trace.path: cannot read {path}: {err.strerror}") from None
    key = (
        str(path.resolve()),
        stat.st_mtime_ns,
        stat.st_size,
        spec.model_dump_json(),
        tuple(sorted(queues)),
    )
    hit = _trace_cache.get(key)
    if hit is None:
        hit = tuple(_TraceReader(spec, path, queues).read())
        if len(_trace_cache) >= 4:
            _trace_cache.clear()
        _trace_cache[key] = hit
    return list(hit)


class _BadValue(ValueError):
    pass


_T = TypeVar("_T")


class _LineReader(Protocol):
    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


class _Row(NamedTuple):
    line: int
    name: str
    submit: float
    duration: float
    pods: int
    gpus_per_pod: int
    queue: str
    priority: int


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadValue("must be a number") from None
    if not math.isfinite(value):
        raise _BadValue("must be a finite number")
    return value


def _whole(text: str, minimum: int, maximum: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise _BadValue(f"must be a whole number >= {minimum}") from None
    if not value.is_integer() or value < minimum:
        raise _BadValue(f"must be a whole number >= {minimum}")
    if value > maximum:
        raise _BadValue(f"must be at most {maximum}")
    return int(value)


class _TraceReader:
    """One pass over a trace CSV, collecting every problem before giving up."""

    def __init__(self, spec: TraceWorkload, path: Path, queues: set[str]) -> None:
        self.spec = spec
        self.path = path
        self.queues = queues
        self.unit = TIME_UNITS[spec.time_unit]
        self.problems: list[str] = []
        self.columns = {
            role: column
            for role, column in spec.columns.model_dump(by_alias=True).items()
            if column is not None
        }

    def problem(self, line: int, text: str) -> None:
        self.problems.append(f"{self.path}: line {line}: {text}")
        if len(self.problems) >= MAX_TRACE_PROBLEMS:
            stop = f"{self.path}: stopped after {len(self.problems)} problems"
            raise ScenarioError("\n".join([*self.problems, stop]))

    def read(self) -> list[JobSpec]:
        try:
            with self.path.open(newline="", encoding="utf-8") as f:
                jobs = self._rows(csv.reader(f))
        except OSError as err:
            raise ScenarioError(f"{self.path}: cannot read trace: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise ScenarioError(f"{self.path}: not UTF-8 text: {err.reason}") from None
        if self.problems:
            raise ScenarioError("\n".join(self.problems))
        return jobs

    def _rows(self, reader: _LineReader) -> list[JobSpec]:
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise ScenarioError(f"{self.path}: line 1: {err}") from None
        if header is None:
            raise ScenarioError(f"{self.path}: the trace is empty (a header row is needed)")
        index = {name.strip(): i for i, name in enumerate(header)}
        where: dict[str, int] = {}
        for role, column in self.columns.items():
            if column not in index:
                self.problem(
                    reader.line_num,
                    f"no column {column!r} (for columns.{role}); "
                    f"the header has {', '.join(repr(h) for h in index)}",
                )
            else:
                where[role] = index[column]
        if self.problems:
            return []
        rows: list[_Row] = []
        names: dict[str, int] = {}
        limit = self.spec.limit
        while limit is None or len(rows) < limit:
            if len(rows) == MAX_JOBS:
                self.problem(reader.line_num, f"more than {MAX_JOBS} jobs: set limit")
                break
            try:
                cells = next(reader, None)
            except csv.Error as err:
                self.problem(reader.line_num, str(err))
                continue
            if cells is None:
                break
            if not any(cell.strip() for cell in cells):
                continue
            row = self._row(reader.line_num, cells, where)
            if row is None:
                continue
            if row.name in names:
                self.problem(row.line, f"job name {row.name!r} repeats line {names[row.name]}")
                continue
            names[row.name] = row.line
            rows.append(row)
        if self.problems:
            return []
        if not rows:
            raise ScenarioError(f"{self.path}: the trace has no jobs")
        origin = min(r.submit for r in rows) if self.spec.rebase else 0.0
        jobs = []
        for r in rows:
            if r.submit - origin < 0:
                self.problem(
                    r.line,
                    f"column {self.columns['submit']!r} (submit): a time before 0 "
                    f"({r.submit:g} s) needs rebase: true",
                )
                continue
            jobs.append(
                JobSpec(
                    name=r.name,
                    submit=r.submit - origin,
                    pods=r.pods,
                    gpusPerPod=r.gpus_per_pod,
                    cpuPerPod=self.spec.cpu_per_pod,
                    duration=r.duration,
                    queue=r.queue,
                    priority=r.priority,
                )
            )
        return jobs

    def _row(self, line: int, cells: list[str], where: dict[str, int]) -> _Row | None:
        """One data row as a job, or None after recording what is wrong with it."""
        ok = True

        def field(role: str, parse: Callable[[str], _T], default: _T) -> _T:
            nonlocal ok
            i = where.get(role)
            if i is None:
                return default
            text = cells[i].strip() if i < len(cells) else ""
            try:
                return parse(text)
            except _BadValue as err:
                got = f"got {text!r}" if text else "the cell is empty"
                self.problem(line, f"column {self.columns[role]!r} ({role}): {err} ({got})")
                ok = False
                return default

        submit = field("submit", self._time, 0.0)
        duration = field("duration", self._duration, 0.0)
        gpus = field("gpus", lambda t: _whole(t, 0, MAX_PODS_PER_JOB), 0)
        pods = field("pods", lambda t: _whole(t, 1, MAX_PODS_PER_JOB), 1)
        per_pod = field("gpusPerPod", lambda t: _whole(t, 0, MAX_GPUS_PER_NODE), 0)
        tenant = field("tenant", _text, "")
        name = field("name", _text, f"{self.path.stem}-{line}")
        priority = field("priority", _integer_text, 0)
        if not ok:
            return None
        if "pods" in where:
            if gpus % pods:
                self.problem(
                    line,
                    f"column {self.columns['pods']!r} (pods): {gpus} GPUs do not split "
                    f"evenly over {pods} pods",
                )
                return None
            per_pod = gpus // pods
        elif "gpusPerPod" in where:
            if gpus and (not per_pod or gpus % per_pod):
                self.problem(
                    line,
                    f"column {self.columns['gpusPerPod']!r} (gpusPerPod): {gpus} GPUs do not "
                    f"split into pods of {per_pod}",
                )
                return None
            pods, per_pod = (gpus // per_pod, per_pod) if gpus else (1, 0)
        else:
            pods, per_pod = split_gpus(gpus, self.spec.gpus_per_pod_max)
        queue = self.spec.queue
        if "tenant" in where:
            queue = self.spec.tenant_queues.get(tenant, tenant)
            if queue not in self.queues:
                self.problem(
                    line,
                    f"column {self.columns['tenant']!r} (tenant): queue {queue!r} is not "
                    f"defined in queues (map tenants to queues with tenantQueues)",
                )
                return None
        return _Row(line, name, submit, duration, pods, per_pod, queue, priority)

    def _duration(self, text: str) -> float:
        value = _number(text) * self.unit
        if value <= 0:
            raise _BadValue("must be > 0")
        return value

    def _time(self, text: str) -> float:
        try:
            return _number(text) * self.unit
        except _BadValue:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _BadValue("must be a number or an ISO date-time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


def _text(text: str) -> str:
    if not text:
        raise _BadValue("must not be empty")
    return text


def _integer_text(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _BadValue("must be an integer") from None
    if not -(2**31) <= value < 2**31:
        raise _BadValue("must be a 32-bit integer (a Kubernetes priority)")
    return value
