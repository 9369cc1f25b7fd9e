"""Sweeps: grid expansion, up-front path checks, CI arithmetic, ordering across workers."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import simulations.sweep as sweep
from simulations.scenario import shipped_scenario
from simulations.sweep import (
    SweepError,
    SweepResult,
    SweepRun,
    SweepSpec,
    expand,
    load_sweep,
    mean_ci95,
    run_sweep,
    t_critical_95,
)

MINIMAL = Path(__file__).parents[2] / "simulations" / "scenarios" / "minimal-deadlock.yaml"


def spec(**fields: Any) -> SweepSpec:
    return SweepSpec(**{"scenario": MINIMAL, **fields})


# ---- the grid ---------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_of_schedulers_parameters_and_seeds():
    tasks = expand(
        spec(
            schedulers=["phalanx", "per-pod"],
            seeds=[7, 8],
            parameters={"cycleInterval": [0.5, 1.0], "readyTimeout": [60, 120, 300]},
        )
    )
    keys = {
        (t.scheduler, t.parameters["cycleInterval"], t.parameters["readyTimeout"], t.seed)
        for t in tasks
    }
    assert len(tasks) == len(keys) == 2 * 2 * 3 * 2


def test_grid_applies_each_override_and_the_seed_to_the_scenario():
    tasks = expand(spec(seeds=[3], parameters={"readyTimeout": [42], "cluster.0.gpus": [2]}))
    for task in tasks:
        assert task.scenario["readyTimeout"] == 42
        assert task.scenario["cluster"][0]["gpus"] == 2
        assert task.scenario["seed"] == 3


def test_variants_apply_their_overrides_together_and_multiply_the_grid():
    tasks = expand(
        spec(
            schedulers=["phalanx"],
            variants={
                "fifo": {},
                "drf+fair-share": {
                    "policies.ordering": "drf",
                    "policies.preemption": {"name": "fair-share"},
                },
            },
            parameters={"cycleInterval": [0.5, 1.0]},
        )
    )
    assert [(t.parameters["variant"], t.parameters["cycleInterval"]) for t in tasks] == [
        ("fifo", 0.5),
        ("fifo", 1.0),
        ("drf+fair-share", 0.5),
        ("drf+fair-share", 1.0),
    ]
    drf = tasks[2].scenario["policies"]
    assert drf["ordering"] == "drf"
    assert drf["preemption"]["name"] == "fair-share"


def test_a_variant_with_an_unknown_path_is_rejected_naming_the_variant():
    with pytest.raises(ValidationError, match=r"fast.*no field 'policy'"):
        spec(variants={"fast": {"policy.ordering": "drf"}})


def test_a_variant_naming_an_unknown_policy_fails_before_any_run():
    with pytest.raises(SweepError, match=r"policies\.ordering"):
        expand(spec(variants={"bad": {"policies.ordering": "no-such-policy"}}))


def test_override_creates_an_unset_map_entry():
    (task, *_) = expand(spec(parameters={"queues.0.quota.gpu.nominal": [2]}))
    assert task.scenario["queues"][0]["quota"]["gpu"]["nominal"] == 2


def test_seed_count_counts_up_from_the_scenario_seed():
    tasks = expand(spec(schedulers=["phalanx"], seeds=3))
    assert [t.seed for t in tasks] == [1, 2, 3]  # minimal-deadlock has seed 1


def test_schedulers_default_to_the_scenario_own():
    tasks = expand(spec())
    assert [t.scheduler for t in tasks] == ["per-pod", "gang-timeout", "phalanx"]


def test_spec_takes_a_scenario_object_in_python():
    tasks = expand(SweepSpec(scenario=shipped_scenario("minimal-deadlock"), schedulers=["phalanx"]))
    assert tasks[0].scenario["name"] == "minimal-deadlock"


# ---- checking the spec ------------------------------------------------------------------


def test_unknown_parameter_path_is_rejected_listing_the_top_level_fields():
    with pytest.raises(ValidationError) as err:
        spec(parameters={"cycleIntervl": [1]})
    message = str(err.value)
    assert "no field 'cycleIntervl'" in message
    assert (
        "valid top-level fields: backoffBase, backoffMax, checkpointInterval, cluster, "
        "cycleInterval" in message
    )


def test_unknown_nested_path_lists_the_fields_of_its_parent():
    with pytest.raises(ValidationError, match="workload has no field 'foo'; valid fields"):
        spec(parameters={"workload.foo": [1]})


def test_python_field_name_points_to_the_json_name():
    with pytest.raises(ValidationError, match="use the JSON field name 'cycleInterval'"):
        spec(parameters={"cycle_interval": [1]})


def test_seed_is_varied_by_seeds_not_parameters():
    with pytest.raises(ValidationError, match="vary the seed with the sweep's `seeds`"):
        spec(parameters={"seed": [1, 2]})


def test_sweep_file_error_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("scenario: x.yaml\nseeds: 0\nparameters: {bogus: [1]}\n")
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: seeds: a seed count must be >= 1 (got 0)"
    assert lines[1].startswith(f"{path}: parameters.bogus: the scenario has no field 'bogus'")


def test_sweep_file_scenario_path_is_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text(MINIMAL.read_text())
    path = tmp_path / "sweep.yaml"
    path.write_text("scenario: base.yaml\nschedulers: [phalanx]\nparameters: {horizon: [100]}\n")
    (task,) = expand(load_sweep(path))
    assert task.scenario["horizon"] == 100


def test_invalid_value_is_reported_before_any_run_starts():
    calls: list[tuple[int, int]] = []
    with pytest.raises(SweepError, match=r"sweep point cycleInterval=-1: cycleInterval: must be"):
        run_sweep(spec(parameters={"cycleInterval": [1, -1]}), workers=1, progress=calls.append)
    assert calls == []


def test_list_index_beyond_the_scenario_is_rejected():
    with pytest.raises(SweepError, match="cluster has 1 item"):
        expand(spec(parameters={"cluster.3.gpus": [1]}))


# ---- statistics -------------------------------------------------------------------------


def test_mean_and_ci_of_one_two_three():
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 * 1 / math.sqrt(3), rel=1e-4)


def test_single_seed_has_a_mean_but_no_interval():
    assert mean_ci95([5.0]) == (5.0, None)


def test_no_values_have_no_mean():
    assert mean_ci95([]) == (None, None)


def test_t_critical_matches_scipy_inside_and_beyond_the_table():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 10, 30, 31, 45, 100, 10_000):
        assert t_critical_95(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4)


def made_up_result() -> SweepResult:
    def run(scheduler: str, interval: float, seed: int, jct: float, dl: float | None) -> SweepRun:
        summary = {"scenario": "s", "scheduler": scheduler, "jct": jct, "deadlock_at": dl}
        return SweepRun(scheduler, {"cycleInterval": interval}, seed, summary)

    runs = [
        run("phalanx", 1.0, 0, 1.0, None),
        run("phalanx", 1.0, 1, 2.0, None),
        run("phalanx", 1.0, 2, 3.0, None),
        run("per-pod", 1.0, 0, 10.0, 5.0),
        run("per-pod", 1.0, 1, 10.0, None),
        run("per-pod", 1.0, 2, 10.0, None),
    ]
    return SweepResult(spec(parameters={"cycleInterval": [1.0]}), runs)


def test_table_has_one_row_per_scheduler_and_point_with_mean_ci_and_n():
    rows = made_up_result().table()
    assert [(r["scheduler"], r["cycleInterval"], r["n"]) for r in rows] == [
        ("phalanx", 1.0, 3),
        ("per-pod", 1.0, 3),
    ]
    assert rows[0]["jct_mean"] == 2.0
    assert rows[0]["jct_ci95"] == pytest.approx(4.3027 / math.sqrt(3))
    assert rows[1]["jct_ci95"] == 0.0
    assert "scenario_mean" not in rows[0]


def test_table_counts_runs_where_a_metric_is_missing():
    phalanx, per_pod = made_up_result().table()
    assert (phalanx["deadlock_at_mean"], phalanx["deadlock_at_n"]) == (None, 0)
    assert (per_pod["deadlock_at_mean"], per_pod["deadlock_at_ci95"]) == (5.0, None)
    assert per_pod["deadlock_at_n"] == 1
    assert "jct_n" not in per_pod


def test_csv_is_the_table_with_empty_cells_for_none():
    rows = list(csv.DictReader(io.StringIO(made_up_result().to_csv())))
    assert [r["scheduler"] for r in rows] == ["phalanx", "per-pod"]
    assert rows[0]["jct_mean"] == "2.0"
    assert rows[0]["deadlock_at_mean"] == ""


def test_json_holds_the_spec_the_table_and_every_run():
    data = json.loads(made_up_result().to_json())
    assert data["spec"]["scenario"] == str(MINIMAL)
    assert data["table"] == made_up_result().table()
    assert [(r["scheduler"], r["seed"]) for r in data["runs"]][:2] == [
        ("phalanx", 0),
        ("phalanx", 1),
    ]


# ---- running ----------------------------------------------------------------------------

GRID = {"readyTimeout": [60, 300], "cluster.0.gpus": [1, 2]}


def test_one_and_two_workers_give_identical_tables():
    one = run_sweep(spec(seeds=2, parameters=GRID), workers=1)
    two = run_sweep(spec(seeds=2, parameters=GRID), workers=2)
    assert one.table() == two.table()
    assert one.runs == two.runs
    assert len(one.table()) == 3 * 4


def test_progress_counts_every_run():
    calls: list[tuple[int, int]] = []
    run_sweep(spec(schedulers=["phalanx"], seeds=3), workers=1, progress=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_a_failed_run_is_recorded_with_its_grid_point_and_the_sweep_carries_on(monkeypatch):
    real = sweep.run_task

    def boom(scenario: dict[str, Any], scheduler: str) -> dict[str, Any]:
        if scenario["readyTimeout"] == 60:
            raise RuntimeError("engine broke")
        return real(scenario, scheduler)

    monkeypatch.setattr(sweep, "run_task", boom)
    result = run_sweep(
        spec(schedulers=["phalanx"], parameters={"readyTimeout": [60, 120]}), workers=1
    )
    assert result.failures() == [
        "run phalanx readyTimeout=60 seed=1 failed: RuntimeError: engine broke"
    ]
    broken, fine = result.table()
    assert (broken["n"], broken["failed"], broken["completed_mean"]) == (0, 1, None)
    assert (fine["n"], fine["failed"]) == (1, 0)


def test_workers_below_one_are_rejected():
    with pytest.raises(SweepError, match="workers must be >= 1"):
        run_sweep(spec(), workers=0)


def test_local_sweep_runs_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails
    assert run_sweep(spec(schedulers=["phalanx"]), workers=1).runs


def test_ray_address_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SweepError, match=r"Ray is not installed.*pip install 'phalanx\[ray\]'"):
        run_sweep(spec(), ray_address="ray://head:10001")


class FakeRef:
    def __init__(self, value: Any) -> None:
        self.value = value


class FakeRay(types.ModuleType):
    """Runs tasks eagerly and hands them back last-submitted first."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.address: str | None = None

    def is_initialized(self) -> bool:
        return self.address is not None

    def init(self, address: str) -> None:
        self.address = address

    def shutdown(self) -> None:
        self.address = None

    def remote(self, fn: Any) -> Any:
        return types.SimpleNamespace(remote=lambda *a: FakeRef(fn(*a)))

    def wait(self, refs: list[Any], num_returns: int) -> tuple[list[Any], list[Any]]:
        return refs[-num_returns:], refs[:-num_returns]

    def get(self, ref: Any) -> Any:
        return ref.value


def test_ray_results_come_back_in_grid_order(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", FakeRay())
    on_ray = run_sweep(spec(seeds=2, parameters=GRID), ray_address="ray://head:10001")
    assert on_ray.runs == run_sweep(spec(seeds=2, parameters=GRID), workers=1).runs


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[2] / "simulations" / "sweeps").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_shipped_policy_sweeps_are_valid_and_cover_every_policy(path):
    tasks = expand(load_sweep(path))
    chosen = {
        (kind, value if isinstance(value, str) else value["name"])
        for t in tasks
        for kind, value in t.scenario.get("policies", {}).items()
        if value is not None
    }
    from policies.registry import available

    for kind in ("ordering", "preemption", "placement"):
        missing = set(available(kind)) - {name for k, name in chosen if k == kind}
        defaults = {"priority", "none", "bin-pack"}
        no_racks = {"topology"} if "philly" in path.stem else set()
        assert missing <= defaults | no_racks, (kind, missing)
