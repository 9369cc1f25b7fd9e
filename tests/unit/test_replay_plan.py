"""A scenario as the objects a live replay creates (controller/replay/plan.py), and the
admission-order comparison of the parity report (compare.py), without any API server."""

from __future__ import annotations

import pytest

from controller.api.gangjob import GangJob
from controller.api.queue import Queue
from controller.replay.compare import Admitted, compare_order, step_errors
from controller.replay.plan import (
    CHECKPOINT_ANNOTATION,
    DURATION_ANNOTATION,
    TENANT_LABEL,
    Outage,
    ReplayError,
    build,
    first_jobs,
    merged,
    outages,
)
from simulations.run import JobRecord, Simulation
from simulations.scenario import parse_scenario, shipped_scenario
from simulations.workload import jobs_of


def scenario(extra: str = "") -> str:
    return (
        "name: small\n"
        "cluster: [{name: gpu, count: 2, gpus: 4}]\n"
        "queues: [{name: org}, {name: a, parent: org, quota: {devices/gpu: {nominal: 4}}},"
        " {name: b, parent: org, quota: {devices/gpu: {nominal: 4}}}]\n"
        "workload:\n  jobs:\n"
        "    - {name: j1, submit: 0, pods: 2, gpusPerPod: 2, duration: 600, queue: a}\n"
        "    - {name: j2, submit: 30, pods: 1, gpusPerPod: 1, duration: 60, queue: b}\n" + extra
    )


def test_a_job_is_a_gang_job_in_its_queues_namespace_with_its_duration_sped_up() -> None:
    plan = build(parse_scenario(scenario(), "small.yaml"), speed=60)
    j1 = next(j for j in plan.jobs if j.spec.name == "j1").manifest
    GangJob.from_manifest(j1 | {"metadata": {**j1["metadata"], "uid": "u"}})
    (pod_set,) = j1["spec"]["podSets"]
    assert (j1["metadata"]["namespace"], j1["spec"]["queueName"]) == ("replay-a", "a")
    assert pod_set["replicas"] == 2
    assert pod_set["template"]["metadata"]["annotations"][DURATION_ANNOTATION] == "10"
    claim = pod_set["template"]["spec"]["resourceClaims"][0]
    assert claim["resourceClaimTemplateName"] == "gpus-2"


def test_each_leaf_queue_selects_its_own_namespace_only() -> None:
    plan = build(parse_scenario(scenario(), "small.yaml"), speed=60)
    queues = {q["metadata"]["name"]: q for q in plan.queues}
    for q in queues.values():
        Queue.from_manifest(q)
    namespaces = {n["metadata"]["name"]: n["metadata"]["labels"] for n in plan.namespaces}
    assert queues["a"]["spec"]["namespaceSelector"] == {"matchLabels": {TENANT_LABEL: "a"}}
    assert "namespaceSelector" not in queues["org"]["spec"]
    assert namespaces["replay-a"][TENANT_LABEL] == "a"
    assert set(namespaces) == {"replay-a", "replay-b"}


def test_the_first_jobs_of_a_generated_workload_are_the_generators_first() -> None:
    whole = shipped_scenario("multi-tenant")
    sliced = first_jobs(whole, 20)
    assert [j.model_dump() for j in jobs_of(sliced)] == [
        j.model_dump() for j in jobs_of(whole)[:20]
    ]
    assert sliced.failures == whole.failures


def test_overlapping_failures_of_a_node_are_one_outage() -> None:
    failures = (
        "failures:\n"
        "  - {at: 100, node: gpu-0, downFor: 50}\n"
        "  - {at: 120, node: gpu-0, downFor: 100}\n"
        "  - {at: 500, node: gpu-1, downFor: 10}\n"
    )
    got = outages(parse_scenario(scenario(failures), "small.yaml"))
    assert got == [Outage("gpu-0", 100, 120), Outage("gpu-1", 500, 10)]


def test_random_failures_are_replayed_as_the_outages_the_simulator_draws() -> None:
    failures = "horizon: 36000\nseed: 4\nfailures: [{mtbfHours: 0.5, repairSeconds: 60}]\n"
    small = parse_scenario(scenario(failures), "small.yaml")
    plan = build(small, speed=60)
    simulation = Simulation(small, "phalanx")
    simulation.run()
    assert plan.outages == merged(simulation.outages) != []
    assert any(n.startswith("random failures (mtbfHours): the simulator's") for n in plan.notes)


def test_a_checkpoint_interval_reaches_the_simulated_kubelet_sped_up() -> None:
    plan = build(parse_scenario(scenario("checkpointInterval: 120\n"), "small.yaml"), speed=60)
    j1 = next(j for j in plan.jobs if j.spec.name == "j1").manifest
    annotations = j1["spec"]["podSets"][0]["template"]["metadata"]["annotations"]
    assert annotations[CHECKPOINT_ANNOTATION] == "2"
    assert j1["spec"]["checkpointIntervalSeconds"] == 2


def test_a_job_name_no_gang_job_can_have_is_refused_in_one_line() -> None:
    bad = scenario().replace("name: j2", "name: J_2")
    with pytest.raises(ReplayError) as err:
        build(parse_scenario(bad, "small.yaml"), speed=60)
    assert str(err.value).startswith("workload: job 'J_2': not usable as a GangJob name")
    assert "\n" not in str(err.value)


def test_the_simulator_baselines_are_named_as_not_run_live() -> None:
    plan = build(shipped_scenario("deadlock-two-gangs"), speed=600)
    assert any(n.startswith("per-pod and gang-timeout: simulator baselines") for n in plan.notes)


def test_the_order_comparison_names_the_first_position_that_differs() -> None:
    simulated = [Admitted("a", 1, 0.0, 0), Admitted("b", 1, 0.0, 0), Admitted("c", 1, 9.0, 1)]
    live = [Admitted("a", 1, 0.0, 0), Admitted("c", 1, 5.0, 1), Admitted("b", 1, 9.0, 2)]
    order = compare_order(simulated, live)
    assert order.first_difference == 1
    assert order.message == ("position 2: the simulator admitted b (t=0.0 s), live c (t=5.0 s)")
    assert compare_order(simulated, simulated).same


def run_of(name: str, submit: float, start: float, end: float) -> JobRecord:
    return JobRecord(name, "q", 1, 1, end - start, submit, start=start, end=end)


def test_a_step_error_is_what_a_start_adds_to_the_lateness_of_the_end_it_waited_for() -> None:
    simulated = [
        run_of("a", 0, 0, 100),
        run_of("b", 0, 100, 200),  # waited for a's end
        run_of("c", 150, 150, 200),  # waited for no job
    ]
    live = [run_of("a", 0, 5, 105), run_of("b", 0, 112, 212), run_of("c", 150, 153, 203)]
    assert step_errors(simulated, live) == {"a": 5, "b": 7, "c": 3}
