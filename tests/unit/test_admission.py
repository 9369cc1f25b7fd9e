"""The admission cycle: whole gangs in policy order, reasons for everything pending."""

from __future__ import annotations

from controller.engine.cycle import Engine, Outcome
from controller.engine.model import LabelSelector, Queue, QuotaLimit
from controller.engine.policy import FifoWithinPriority
from tests.builders import cluster, gang, gpu_quota


def admit_all(engine: Engine):
    result = engine.cycle()
    result.ledger.commit_all()
    return result


def decision_for(result, uid):
    return next(d for d in result.decisions if d.gang_uid == uid)


def test_a_gang_that_fits_is_admitted_with_every_pod_placed():
    state = cluster(nodes=2)
    state.add_gang(gang("g", pods=4, gpus=4))
    result = admit_all(Engine(state))
    d = decision_for(result, "g")
    assert d.outcome is Outcome.ADMITTED
    assert len(d.reservation.pods) == 4
    assert d.reservation.charge["devices/gpu"] == 16
    assert "g" in state.admitted and "g" not in state.pending


def test_a_gang_too_big_for_the_cluster_holds_nothing_and_says_why():
    state = cluster(nodes=2)
    state.add_gang(gang("g", pods=5, gpus=4))
    result = admit_all(Engine(state))
    d = decision_for(result, "g")
    assert d.outcome is Outcome.PENDING
    assert d.reason == "can never fit: needs 20 devices/gpu; the cluster has 16"
    assert not state.inventory.owners
    assert all(not u.used for u in state.nodes.values())


def test_higher_priority_goes_first_when_only_one_fits():
    state = cluster(nodes=1)
    state.add_gang(gang("low", pods=1, gpus=8, created=0))
    state.add_gang(gang("high", pods=1, gpus=8, created=1, priority=10))
    result = admit_all(Engine(state))
    assert [d.gang_uid for d in result.admitted] == ["high"]


def test_older_gang_goes_first_at_equal_priority():
    state = cluster(nodes=1)
    state.add_gang(gang("new", pods=1, gpus=8, created=5))
    state.add_gang(gang("old", pods=1, gpus=8, created=1))
    result = admit_all(Engine(state))
    assert [d.gang_uid for d in result.admitted] == ["old"]


def test_smaller_gang_behind_a_blocked_one_is_admitted():
    state = cluster(nodes=1)
    state.add_gang(gang("big", pods=2, gpus=8, created=0))
    state.add_gang(gang("small", pods=1, gpus=2, created=1))
    result = admit_all(Engine(state, ordering=FifoWithinPriority()))
    assert [d.gang_uid for d in result.admitted] == ["small"]


def test_quota_refusal_names_the_queue_and_the_room_left():
    state = cluster(nodes=2, queues=(Queue("team-a", quota=gpu_quota(8)),))
    state.add_gang(gang("running", pods=1, gpus=4, created=0))
    state.add_gang(gang("g", pods=2, gpus=4, created=1))
    d = decision_for(admit_all(Engine(state)), "g")
    assert d.outcome is Outcome.PENDING
    assert d.reason == "queue team-a: needs 8 devices/gpu, quota leaves room for 4"


def test_a_gang_waiting_on_quota_is_admitted_once_quota_is_released():
    state = cluster(nodes=2, queues=(Queue("team-a", quota=gpu_quota(8)),))
    state.add_gang(gang("first", pods=1, gpus=8, created=0))
    state.add_gang(gang("second", pods=1, gpus=8, created=1))
    engine = Engine(state)
    assert [d.gang_uid for d in admit_all(engine).admitted] == ["first"]
    state.release("first")
    assert [d.gang_uid for d in admit_all(engine).admitted] == ["second"]


def test_a_gang_for_a_missing_queue_waits_with_that_reason():
    state = cluster()
    state.add_gang(gang("g", queue="nowhere"))
    d = decision_for(admit_all(Engine(state)), "g")
    assert d.reason == "queue nowhere does not exist"


def test_a_gang_in_an_inner_queue_is_not_admitted():
    state = cluster(queues=(Queue("org"), Queue("team-a", "org")))
    state.add_gang(gang("g", queue="org"))
    d = decision_for(admit_all(Engine(state)), "g")
    assert "not a leaf queue" in d.reason


def test_namespace_selector_keeps_other_namespaces_out():
    selector = LabelSelector({"tenant": "a"})
    state = cluster(queues=(Queue("team-a", namespace_selector=selector),))
    state.set_namespace("ns-a", {"tenant": "a"})
    state.set_namespace("ns-b", {"tenant": "b"})
    state.add_gang(gang("ok", namespace="ns-a"))
    state.add_gang(gang("no", namespace="ns-b"))
    result = admit_all(Engine(state))
    assert [d.gang_uid for d in result.admitted] == ["ok"]
    assert "namespace ns-b is not allowed by queue team-a" in decision_for(result, "no").reason


def test_a_pending_reason_is_reported_once_until_it_changes():
    state = cluster(nodes=1)
    state.add_gang(gang("g", pods=2, gpus=8))
    engine = Engine(state)
    assert len(admit_all(engine).decisions) == 1
    assert admit_all(engine).decisions == []


def test_gangs_of_one_shape_share_the_failure_of_the_first():
    state = cluster(nodes=2)
    state.add_gang(gang("running", pods=1, gpus=8, created=0))
    state.add_gang(gang("a", pods=2, gpus=8, created=1))
    state.add_gang(gang("b", pods=2, gpus=8, created=2))
    result = admit_all(Engine(state))
    assert decision_for(result, "b").reason.endswith("(same shape as gang a)")


def test_freed_capacity_lets_a_skipped_gang_be_tried_again():
    state = cluster(nodes=1)
    state.add_gang(gang("holder", pods=1, gpus=8, created=0))
    state.add_gang(gang("waiter", pods=1, gpus=8, created=1))
    engine = Engine(state)
    admit_all(engine)
    assert admit_all(engine).admitted == []
    state.release("holder")
    assert [d.gang_uid for d in admit_all(engine).admitted] == ["waiter"]


def test_cpu_only_gangs_are_placed_by_free_cpu():
    state = cluster(nodes=3, gpus_per_node=0)
    state.add_gang(gang("running", pods=1, cpu=40, created=0))
    state.add_gang(gang("g", pods=3, cpu=40, created=1))
    d = decision_for(admit_all(Engine(state)), "g")
    assert d.outcome is Outcome.PENDING
    assert "placed 2 of 3 pods" in d.reason and "cpu 40" in d.reason


def test_quota_is_charged_for_cpu_memory_pods_and_devices():
    quota = {"cpu": QuotaLimit(100_000), "devices/gpu": QuotaLimit(16)}
    state = cluster(nodes=2, queues=(Queue("team-a", quota=quota),))
    state.add_gang(gang("g", pods=2, gpus=2, cpu=3))
    admit_all(Engine(state))
    assert state.quota.usage("team-a") == {
        "cpu": 6000,
        "memory": 2 * 1024**3,
        "pods": 2,
        "devices/gpu": 4,
    }


def test_decisions_are_deterministic():
    def run():
        state = cluster(nodes=3)
        for i in range(8):
            state.add_gang(gang(f"g{i}", pods=1 + i % 3, gpus=1 + i % 4, created=i % 2))
        engine = Engine(state)
        return [admit_all(engine).decisions for _ in range(2)]

    assert run() == run()


def test_a_gang_whose_spec_changed_is_decided_again():
    state = cluster(nodes=1)
    state.add_gang(gang("g", pods=2, gpus=8))
    engine = Engine(state)
    admit_all(engine)
    state.add_gang(gang("g", pods=1, gpus=8))
    assert [d.gang_uid for d in admit_all(engine).admitted] == ["g"]
