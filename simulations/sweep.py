"""Parameter sweeps: schedulers x scenario parameters x seeds, run in parallel.

Every grid point and seed is an independent simulation (a scenario dict and a scheduler
name in, a summary dict out), so it can run in local worker processes or as a Ray task.
Results are put back in grid order, so the table never depends on how many workers ran
or in which order they finished.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import multiprocessing
import os
import statistics
import types
import typing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from controller.api.errors import FieldProblem, format_validation_error
from simulations.metrics import summarize
from simulations.run import Simulation
from simulations.scenario import Scenario, SchedulerName, load_scenario
from simulations.yamlfile import read_text, yaml_mapping

Progress = Callable[[int, int], None]
"""Called as `progress(done, total)` in the calling process after each run finishes."""

# Varying these through `parameters` would fight the sweep's own axes.
_RESERVED = {
    "seed": "vary the seed with the sweep's `seeds`, not `parameters`",
    "schedulers": "list schedulers in the sweep's `schedulers`, not `parameters`",
}


MAX_RUNS = 100_000
"""Runs in one sweep (schedulers x variants x parameter values x seeds); more is refused
before anything is built."""


class SweepError(ValueError):
    """A sweep that cannot run as written; one line per problem, never a traceback."""


# ---- the spec ---------------------------------------------------------------------------


def _scenario_kind(value: Any) -> str | None:
    if isinstance(value, str | Path):
        return "file"
    return "inline" if isinstance(value, Scenario) else None


def _seeds_kind(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return "count"
    return "list" if isinstance(value, list) else None


ScenarioRef = Annotated[
    Annotated[Path, Tag("file")] | Annotated[Scenario, Tag("inline")],
    Discriminator(
        _scenario_kind,
        custom_error_type="scenario_ref",
        custom_error_message="must be the path of a scenario file",
    ),
]
Seeds = Annotated[
    Annotated[int, Tag("count")] | Annotated[list[int], Tag("list")],
    Discriminator(
        _seeds_kind,
        custom_error_type="seeds",
        custom_error_message="must be a count (>= 1) or a list of integer seeds",
    ),
]


class SweepSpec(BaseModel):
    """What to sweep: a base scenario, schedulers, seeds and a grid of field overrides.

    `parameters` maps a dotted scenario field path in the scenario's JSON spelling
    (`cycleInterval`, `workload.synthetic.arrivalRate`, `cluster.0.gpus`) to the values
    to try; the grid is their cartesian product. `variants` names sets of overrides
    that go together (such as a policy combination: `{drf+fair-share:
    {policies.ordering: drf, policies.preemption: fair-share}}`); with variants the grid
    is variants x parameters, and the table has a `variant` column. Paths are checked
    against the scenario schema here, so a typo fails before anything runs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: ScenarioRef
    schedulers: list[SchedulerName] | None = Field(
        None, min_length=1, description="Default: the scenario's own schedulers."
    )
    seeds: Seeds = Field(
        1, description="A list of seeds, or a count n: the scenario's seed and the n-1 after it."
    )
    parameters: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    variants: dict[str, dict[str, Any]] = {}

    @field_validator("schedulers")
    @classmethod
    def _unique_schedulers(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("schedulers must not repeat")
        return value

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a seed count must be >= 1 (got {value})")
        if isinstance(value, list) and not value:
            raise ValueError("must list at least one seed")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("seeds must not repeat")
        return value

    @field_validator("parameters")
    @classmethod
    def _known_paths(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path in value:
            _check_path([path], path)
        return value

    @field_validator("variants")
    @classmethod
    def _known_variant_paths(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, overrides in value.items():
            for path in overrides:
                _check_path([name, path], path)
        return value

    def base_scenario(self) -> Scenario:
        """The scenario every grid point starts from (read from disk if given as a path)."""
        if isinstance(self.scenario, Scenario):
            return self.scenario
        return load_scenario(self.scenario)

    def seed_list(self, base: Scenario) -> list[int]:
        if isinstance(self.seeds, list):
            return list(self.seeds)
        return [base.seed + i for i in range(self.seeds)]


def parse_sweep(text: str, source: str, base_dir: Path | None = None) -> SweepSpec:
    """A spec from YAML; a relative scenario path is taken relative to `base_dir`."""
    data = yaml_mapping(text, source, "sweep", SweepError)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SweepError(format_validation_error(err, source)) from None
    if base_dir is not None and isinstance(spec.scenario, Path) and not spec.scenario.is_absolute():
        spec = spec.model_copy(update={"scenario": base_dir / spec.scenario})
    return spec


def load_sweep(path: Path) -> SweepSpec:
    return parse_sweep(read_text(path, SweepError), str(path), base_dir=path.parent)


# ---- field paths ------------------------------------------------------------------------


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _check_path(where: list[str], path: str) -> None:
    """A path the sweep may override, or a FieldProblem at `where` saying why not."""
    problem = _RESERVED.get(path) or parameter_path_problem(path)
    if problem:
        raise FieldProblem(where, problem)


def parameter_path_problem(path: str) -> str | None:
    """Why `path` names no scenario field, or None if it does (checked on the schema)."""
    return _walk(Scenario, path.split("."), [])


def _walk(tp: Any, parts: list[str], done: list[str]) -> str | None:
    if not parts:
        return None
    head, where = parts[0], ".".join(done)
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _walk(typing.get_args(tp)[0], parts, done)
    if origin in (typing.Union, types.UnionType):
        branches = [a for a in typing.get_args(tp) if a is not type(None)]
        problems = [_walk(a, parts, done) for a in branches]
        return None if None in problems else problems[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        fields = _fields(tp)
        if head in fields:
            return _walk(fields[head], parts[1:], [*done, head])
        aliases = {name: f.alias for name, f in tp.model_fields.items() if f.alias}
        if head in aliases:
            return f"use the JSON field name {aliases[head]!r}, not {head!r}"
        if not where:
            valid = ", ".join(sorted(set(fields) - set(_RESERVED)))
            return f"the scenario has no field {head!r}; valid top-level fields: {valid}"
        return (
            f"{where} has no field {head!r}; valid fields of {where}: {', '.join(sorted(fields))}"
        )
    if origin is list:
        if not head.isdigit():
            return f"{where} is a list: index it with a number, as in {where}.0"
        return _walk(typing.get_args(tp)[0], parts[1:], [*done, head])
    if origin is dict:
        return _walk(typing.get_args(tp)[1], parts[1:], [*done, head])
    return f"{where} is a single value with no field {head!r}"


def apply_override(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in a scenario dict, creating unset optional sections."""
    parts = path.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = int(part)
            if index >= len(node):
                where = ".".join(parts[:depth])
                raise SweepError(
                    f"parameters.{path}: {where} has {len(node)} item(s) in the scenario, "
                    f"so there is no index {index}"
                )
            if last:
                node[index] = copy.deepcopy(value)
            else:
                node = node[index]
        elif last:
            node[part] = copy.deepcopy(value)
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


# ---- the grid ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepTask:
    """One run: a grid point under one scheduler and one seed, with its scenario as a dict."""

    scheduler: str
    parameters: dict[str, Any]
    seed: int
    scenario: dict[str, Any]

    def label(self) -> str:
        values = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in self.parameters.items())
        return " ".join(p for p in (self.scheduler, values, f"seed={self.seed}") if p)


def expand(spec: SweepSpec) -> list[SweepTask]:
    """Every run of the sweep in grid order (scheduler, variant, parameters, then seed).

    Each parameter combination is validated here, so a bad value stops the sweep before
    any simulation starts.
    """
    base = spec.base_scenario()
    base_dict = base.model_dump(mode="json", by_alias=True)
    schedulers = list(spec.schedulers or base.schedulers)
    seed_count = spec.seeds if isinstance(spec.seeds, int) else len(spec.seeds)
    runs = len(schedulers) * max(1, len(spec.variants)) * seed_count
    runs *= math.prod(len(values) for values in spec.parameters.values())
    if runs > MAX_RUNS:
        raise SweepError(f"the sweep has {runs} runs, over the bound {MAX_RUNS}")
    seeds = spec.seed_list(base)
    paths = list(spec.parameters)
    combos = [
        dict(zip(paths, values, strict=True))
        for values in itertools.product(*(spec.parameters[p] for p in paths))
    ]
    variants: list[tuple[str | None, dict[str, Any]]] = [*spec.variants.items()] or [(None, {})]
    points = []
    for (variant, overrides), params in itertools.product(variants, combos):
        combo = params if variant is None else {"variant": variant, **params}
        data = copy.deepcopy(base_dict)
        for path, value in [*overrides.items(), *params.items()]:
            apply_override(data, path, value)
        try:
            Scenario.model_validate(data)
        except ValidationError as err:
            where = " ".join(f"{k}={json.dumps(v)}" for k, v in combo.items())
            raise SweepError(format_validation_error(err, f"sweep point {where}")) from None
        points.append((combo, data))
    tasks = []
    for scheduler in schedulers:
        for combo, data in points:
            for seed in seeds:
                scenario = copy.deepcopy(data)
                scenario["seed"] = seed
                tasks.append(SweepTask(scheduler, combo, seed, scenario))
    return tasks


def run_task(scenario: dict[str, Any], scheduler: str) -> dict[str, Any]:
    """One simulation; module-level and dict-in, dict-out so any worker can run it."""
    return summarize(Simulation(Scenario.model_validate(scenario), scheduler, check=False).run())


# ---- running ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepRun:
    scheduler: str
    parameters: dict[str, Any]
    seed: int
    summary: dict[str, Any]
    """The run's summary, or `{"error": ...}` if it failed."""

    @property
    def error(self) -> str | None:
        error = self.summary.get("error")
        return None if error is None else str(error)


def run_sweep(
    spec: SweepSpec,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Run every task of the sweep; `workers=1` runs in this process, no pool.

    With `ray_address` the tasks become Ray tasks on that cluster (whose workers must
    have phalanx installed); `workers` is then ignored.
    """
    tasks = expand(spec)
    if ray_address is not None:
        summaries = _run_ray(tasks, ray_address, progress)
    else:
        summaries = _run_local(tasks, workers, progress)
    runs = [
        SweepRun(t.scheduler, t.parameters, t.seed, s)
        for t, s in zip(tasks, summaries, strict=True)
    ]
    return SweepResult(spec, runs)


def _failed(task: SweepTask, err: BaseException) -> dict[str, Any]:
    """A failed run's place in the results: the sweep carries on without it."""
    return {"error": f"run {task.label()} failed: {type(err).__name__}: {err}"}


def _run_local(
    tasks: Sequence[SweepTask], workers: int | None, progress: Progress | None
) -> list[dict[str, Any]]:
    if workers is not None and workers < 1:
        raise SweepError(f"workers must be >= 1 (got {workers})")
    count = min(workers or os.cpu_count() or 1, len(tasks))
    out: list[dict[str, Any] | None] = [None] * len(tasks)
    if count <= 1:
        for i, task in enumerate(tasks):
            try:
                out[i] = run_task(task.scenario, task.scheduler)
            except Exception as err:
                out[i] = _failed(task, err)
            if progress:
                progress(i + 1, len(tasks))
        return [s for s in out if s is not None]
    # spawn: the same behaviour on every OS, and safe when the caller runs threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        index: dict[Future[dict[str, Any]], int] = {
            pool.submit(run_task, t.scenario, t.scheduler): i for i, t in enumerate(tasks)
        }
        pending = set(index)
        done_count = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=index.__getitem__):
                i = index[future]
                error = future.exception()
                out[i] = future.result() if error is None else _failed(tasks[i], error)
                done_count += 1
                if progress:
                    progress(done_count, len(tasks))
    return [s for s in out if s is not None]


def _run_ray(
    tasks: Sequence[SweepTask], address: str, progress: Progress | None
) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise SweepError(
            "a Ray address was given but Ray is not installed; "
            "install it with: pip install 'phalanx[ray]'"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address)
    try:
        remote = ray.remote(run_task)
        refs = [remote.remote(t.scenario, t.scheduler) for t in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[dict[str, Any] | None] = [None] * len(tasks)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                try:
                    out[i] = ray.get(ref)
                except Exception as err:
                    out[i] = _failed(tasks[i], err)
                if progress:
                    progress(len(tasks) - len(pending), len(tasks))
        return [s for s in out if s is not None]
    finally:
        if started_here:
            ray.shutdown()


# ---- results ----------------------------------------------------------------------------

# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_critical_95(df: int) -> float:
    """t(0.975, df) without scipy: a table to 30, then the expansion in 1/df around z."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = statistics.NormalDist().inv_cdf(0.975)
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
    )
    return z + sum(term / float(df) ** (k + 1) for k, term in enumerate(terms))


def mean_ci95(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and 95% CI half-width over seeds; the half-width is None below two values.

    One seed says nothing about spread, so None (not 0) keeps it from looking certain.
    """
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t_critical_95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


@dataclass
class SweepResult:
    """Every run's summary in grid order, and the per-point table over seeds."""

    spec: SweepSpec
    runs: list[SweepRun]

    def failures(self) -> list[str]:
        """Why each failed run failed, in grid order."""
        return [r.error for r in self.runs if r.error is not None]

    def metrics(self) -> list[str]:
        """Summary keys that are numbers (or None) in every run that did not fail, in
        summary order."""
        keys: dict[str, bool] = {}
        for run in self.runs:
            if run.error is not None:
                continue
            for key, value in run.summary.items():
                ok = value is None or _is_number(value)
                keys[key] = keys.get(key, True) and ok
        return [k for k, ok in keys.items() if ok]

    def table(self) -> list[dict[str, Any]]:
        """One row per (scheduler, parameter values): `n`, then `<m>_mean`, `<m>_ci95`.

        Means and intervals are over the seeds where the metric has a value; a metric
        that is None in some run anywhere in the sweep also gets `<m>_n`, that count.
        `n` counts the runs that did not fail; if any run failed, `failed` counts those.
        """
        metrics = self.metrics()
        ok = [r for r in self.runs if r.error is None]
        partial = {m for m in metrics for r in ok if r.summary.get(m) is None}
        any_failed = len(ok) < len(self.runs)
        groups: dict[str, list[SweepRun]] = {}
        for run in self.runs:
            key = json.dumps([run.scheduler, run.parameters], sort_keys=True, default=str)
            groups.setdefault(key, []).append(run)
        rows = []
        for runs in groups.values():
            first = runs[0]
            group = [r for r in runs if r.error is None]
            row: dict[str, Any] = {"scheduler": first.scheduler, **first.parameters}
            row["n"] = len(group)
            if any_failed:
                row["failed"] = len(runs) - len(group)
            for m in metrics:
                values = [float(r.summary[m]) for r in group if r.summary.get(m) is not None]
                row[f"{m}_mean"], row[f"{m}_ci95"] = mean_ci95(values)
                if m in partial:
                    row[f"{m}_n"] = len(values)
            rows.append(row)
        return rows

    def to_json(self) -> str:
        payload = {
            "spec": self.spec.model_dump(mode="json", by_alias=True),
            "table": self.table(),
            "runs": [
                {
                    "scheduler": r.scheduler,
                    "parameters": r.parameters,
                    "seed": r.seed,
                    "summary": r.summary,
                }
                for r in self.runs
            ],
        }
        return json.dumps(payload, indent=2)

    def to_csv(self) -> str:
        """The table; an empty cell is None, list or map parameter values are JSON."""
        rows = self.table()
        buffer = io.StringIO()
        if not rows:
            return ""
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: "" if v is None else json.dumps(v) if isinstance(v, list | dict) else v
                    for k, v in row.items()
                }
            )
        return buffer.getvalue()
