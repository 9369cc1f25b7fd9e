"""`phalanx bench engine` over repeated runs: each cycle's time is its median over the
runs, and runs that did different work are not compared."""

from __future__ import annotations

import pytest

from controller.bench.engine import EngineRun, per_cycle_median, run, same_work
from controller.bench.synthetic import ClusterShape


def a_run(wall_ms: list[float], admitted_gangs: int = 10, digest: str = "d1") -> EngineRun:
    return EngineRun(
        policies="p",
        setup_s=0.1,
        first_fill_s=1.0,
        first_fill_cycles=3,
        admitted_gangs=admitted_gangs,
        admitted_pods=40,
        gpus_allocated=80,
        wall_ms=wall_ms,
        cpu_ms=wall_ms,
        considered=[5] * len(wall_ms),
        digest=digest,
        peak_rss_mib=50.0,
    )


def test_each_cycle_counts_its_median_over_the_runs() -> None:
    assert per_cycle_median([[1.0, 50.0, 3.0], [2.0, 4.0, 90.0], [3.0, 6.0, 1.0]]) == [
        2.0,
        6.0,
        3.0,
    ]


def test_runs_of_the_same_work_are_compared() -> None:
    first = a_run([1.0, 2.0])
    assert same_work([first, a_run([3.0, 4.0])]) is first


def test_runs_that_admitted_different_gangs_are_refused() -> None:
    with pytest.raises(RuntimeError, match=r"run 2 .*admitted 11 gangs against 10"):
        same_work([a_run([1.0]), a_run([1.0], admitted_gangs=11)])


def test_runs_that_decided_differently_are_refused() -> None:
    with pytest.raises(RuntimeError, match="decisions digest d2 against d1"):
        same_work([a_run([1.0]), a_run([1.0], digest="d2")])


def test_repeated_runs_in_fresh_processes_report_one_set_of_figures() -> None:
    shape = ClusterShape(nodes=16, gangs=60, seed=3)
    figures = run(shape, incremental=5, repeats=2)
    assert figures.repeats == 2
    assert figures.incremental_cycles == 5
    assert figures.decisions_digest == run(shape, incremental=5).decisions_digest


def test_another_backlog_is_decided_differently() -> None:
    one = run(ClusterShape(nodes=16, gangs=60, seed=3), incremental=5)
    other = run(ClusterShape(nodes=16, gangs=60, seed=4), incremental=5)
    assert one.decisions_digest != other.decisions_digest
