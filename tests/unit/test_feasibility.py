"""A gang that can never fit is told so, with the numbers; one that only waits is not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.engine.cycle import Outcome
from controller.engine.feasibility import NeverFit, is_never_fit, quota_ceiling
from controller.engine.model import (
    ClaimSpec,
    DeviceRequest,
    DeviceSubRequest,
    PodClaim,
    Queue,
    Taint,
    Toleration,
)
from tests.builders import (
    GPU,
    cluster,
    engine,
    gang,
    gpu_claim,
    gpu_quota,
    gpu_slice,
    node,
    pod_set,
)


def reason(state, g):
    return NeverFit().reason(state, g)


def team_queues(nominal: int, borrowing: int | None) -> tuple[Queue, ...]:
    return (
        Queue("org"),
        Queue("team-a", "org", gpu_quota(nominal, borrowing)),
        Queue("team-b", "org", gpu_quota(256)),
    )


@pytest.mark.parametrize(
    ("pods", "numbers"),
    [
        (64, "needs 512 devices/gpu; the cluster has 256 and queue team-a"),
        (24, "needs 192 devices/gpu; queue team-a"),
    ],
)
def test_more_devices_than_the_cluster_or_the_queue_allows_names_the_numbers(pods, numbers):
    state = cluster(nodes=32, queues=team_queues(64, 64))
    found = reason(state, gang("big", pods=pods, gpus=8))
    assert found == (
        f"can never fit: {numbers} may use at most 128 (nominal 64 + borrowing limit 64)"
    )


def test_a_gang_that_fits_only_by_borrowing_can_fit():
    state = cluster(nodes=32, queues=team_queues(64, 64))
    assert reason(state, gang("borrower", pods=16, gpus=8)) is None


def test_a_root_queue_cannot_borrow_beyond_its_quota():
    state = cluster(nodes=4, queues=(Queue("team-a", quota=gpu_quota(8, 100)),))
    found = reason(state, gang("g", pods=2, gpus=8))
    assert found is not None
    assert "queue team-a may use at most 8 (nominal 8, and a root queue cannot borrow)" in found


def test_the_ceiling_is_set_by_the_tightest_queue_on_the_path():
    queues = (
        Queue("org", quota=gpu_quota(0)),
        Queue("dept", "org", gpu_quota(0, 24)),
        Queue("team-a", "dept", gpu_quota(16, 100)),
    )
    state = cluster(nodes=8, queues=queues)
    ceiling = quota_ceiling(state, "team-a", f"devices/{GPU}")
    assert ceiling is not None and (ceiling.amount, ceiling.binding) == (16, "org")


def test_more_devices_than_the_cluster_has_without_quota():
    state = cluster(nodes=2)
    found = reason(state, gang("g", pods=3, gpus=8))
    assert found == "can never fit: needs 24 devices/gpu; the cluster has 16"


def test_one_pod_with_more_cpu_than_any_node():
    state = cluster(nodes=2)
    found = reason(state, gang("g", pods=1, cpu=200))
    assert found == (
        "can never fit: pod set worker: one pod needs cpu 200 but the largest node has 64"
    )


def test_one_pod_with_more_devices_than_any_node():
    state = cluster(nodes=4)
    found = reason(state, gang("g", pods=1, gpus=16))
    assert found == (
        "can never fit: pod set worker: one pod needs 16 devices of DeviceClass gpu "
        "but the most any node reaches is 8"
    )


def test_more_pods_than_the_nodes_can_hold_even_when_devices_suffice_in_total():
    state = cluster(nodes=4)  # 32 GPUs, but a 5-GPU pod takes a node: four such pods
    found = reason(state, gang("g", pods=5, gpus=5))
    assert found == "can never fit: pod set worker: needs 5 pods but the nodes can hold at most 4"


def test_a_device_class_that_does_not_exist():
    state = cluster(nodes=2)
    claim = PodClaim("tpu", ClaimSpec((DeviceRequest.exactly("tpus", "tpu", 1),)))
    found = reason(state, gang("g", pod_sets=(pod_set(1, claims=(claim,)),)))
    assert found == "can never fit: pod set worker: claim tpu: DeviceClass tpu does not exist"


def test_a_device_class_no_device_matches():
    state = cluster(nodes=2)
    claim = gpu_claim(1, selectors=('device.attributes["gpu.example.com"].model == "b200"',))
    found = reason(state, gang("g", pod_sets=(pod_set(1, claims=(claim,)),)))
    assert found is not None
    assert "claim gpu: no device matches of DeviceClass gpu with selectors" in found


def test_first_available_fits_if_any_alternative_could():
    state = cluster(nodes=2)
    request = DeviceRequest(
        "gpus",
        (DeviceSubRequest("big", GPU, count=16), DeviceSubRequest("small", GPU, count=8)),
        first_available=True,
    )
    claim = PodClaim("gpu", ClaimSpec((request,)))
    assert reason(state, gang("g", pod_sets=(pod_set(1, claims=(claim,)),))) is None


def test_no_node_matches_the_node_selector():
    state = cluster(nodes=2)
    ps = pod_set(1, node_selector={"zone": "mars"})
    found = reason(state, gang("g", pod_sets=(ps,)))
    assert found == (
        "can never fit: pod set worker: no schedulable node matches its node selector "
        "and tolerations"
    )


def test_a_gang_that_only_waits_for_running_work_can_fit():
    state = cluster(nodes=2)
    eng = engine(state)
    state.add_gang(gang("first", pods=2, gpus=8))
    eng.cycle(0.0)
    state.add_gang(gang("second", pods=2, gpus=8))
    decision = eng.cycle(1.0).decisions[0]
    assert decision.outcome is Outcome.PENDING and not is_never_fit(decision.reason)


def test_the_cycle_leaves_a_never_fitting_gang_pending_with_its_reason():
    state = cluster(nodes=2)
    eng = engine(state)
    state.add_gang(gang("huge", pods=3, gpus=8))
    decision = eng.cycle(0.0).decisions[0]
    assert decision.outcome is Outcome.PENDING
    assert decision.reason == "can never fit: needs 24 devices/gpu; the cluster has 16"
    assert "huge" in state.pending


def test_adding_nodes_lets_a_never_fitting_gang_fit():
    state = cluster(nodes=2)
    eng = engine(state)
    state.add_gang(gang("huge", pods=3, gpus=8))
    eng.cycle(0.0)
    state.upsert_node(node("n2"))
    state.upsert_slice(gpu_slice("n2"))
    assert [d.gang_uid for d in eng.cycle(1.0).admitted] == ["huge"]


def test_raising_the_borrowing_limit_clears_the_reason():
    state = cluster(nodes=32, queues=team_queues(64, 64))
    checker = NeverFit()
    big = gang("big", pods=24, gpus=8)
    assert checker.reason(state, big) is not None
    state.upsert_queue(Queue("team-a", "org", gpu_quota(64, 192)))
    assert checker.reason(state, big) is None


def test_tainted_nodes_count_for_a_gang_that_tolerates_their_taint():
    state = cluster(nodes=1)
    tainted = node("n1", cpu=256)
    state.upsert_node(replace(tainted, taints=(Taint("pool", "big", "NoSchedule"),)))
    ps = pod_set(2, cpu=100, tolerations=(Toleration("pool", "Equal", "big", "NoSchedule"),))
    assert reason(state, gang("g", pod_sets=(ps,))) is None
