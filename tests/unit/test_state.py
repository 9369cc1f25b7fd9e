"""ClusterState: incremental updates, releases and restoring recorded admissions."""

from __future__ import annotations

import pytest

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine, Outcome
from controller.engine.errors import InvalidInput
from controller.engine.model import Gang, Queue
from controller.engine.state import ClusterState, ReservationConflict
from tests.builders import DRIVER, cluster, gang, gpu_quota, node


def test_restore_reapplies_a_recorded_admission():
    state = cluster(nodes=1)
    state.add_gang(gang("g", gpus=2))
    Engine(state).cycle().ledger.commit_all()
    reservation = state.release("g")
    g = state.pending.get("g") or gang("g", gpus=2)
    state.restore(g, reservation)
    assert state.admitted["g"] == reservation and state.violations() == []


def test_restore_refuses_an_admission_whose_devices_are_now_taken():
    state = cluster(nodes=1)
    state.add_gang(gang("g", gpus=1))
    Engine(state).cycle().ledger.commit_all()
    reservation = state.release("g")
    taken = reservation.pods[0].claims[0].devices[0].device
    state.add_foreign_claim("other/c", (taken,))
    with pytest.raises(ReservationConflict, match=f"device {DRIVER}/n0/gpu-0 is held by"):
        state.restore(gang("g", gpus=1), reservation)
    assert "g" not in state.admitted and state.violations() == []


def test_removing_a_node_names_the_gangs_running_there():
    state = cluster(nodes=2)
    state.add_gang(gang("g", pods=2, gpus=8))
    Engine(state).cycle().ledger.commit_all()
    assert state.remove_node("n1") == ["g"]
    state.release("g")
    assert state.violations() == [] and not state.inventory.owners.get((DRIVER, "n0", "gpu-0"))


def test_a_released_gang_can_be_requeued():
    state = cluster(nodes=1)
    state.add_gang(gang("g", gpus=1))
    Engine(state).cycle().ledger.commit_all()
    state.release("g", requeue=True)
    assert "g" in state.pending and not state.admitted


def test_an_admitted_gang_cannot_be_replaced_while_admitted():
    state = cluster(nodes=1)
    state.add_gang(gang("g", gpus=1))
    Engine(state).cycle().ledger.commit_all()
    with pytest.raises(InvalidInput, match="is admitted; release it first"):
        state.add_gang(gang("g", gpus=2))


def test_restore_refuses_an_admission_whose_node_is_now_full():
    state = cluster(nodes=1)
    state.add_gang(gang("g", cpu=8))
    Engine(state).cycle().ledger.commit_all()
    reservation = state.release("g")
    state.add_foreign_pod("kube-system/hog", "n0", {"cpu": 60_000})
    with pytest.raises(ReservationConflict, match="node n0 has no room left"):
        state.restore(gang("g", cpu=8), reservation)


def test_a_node_added_after_its_pods_counts_them():
    state = cluster(nodes=0)
    state.add_foreign_pod("ns/early", "late-node", {"cpu": 2000})
    state.upsert_node(node("late-node"))
    assert state.nodes["late-node"].used == {"cpu": 2000}


def test_a_node_that_returns_counts_the_pods_still_bound_to_it():
    state = cluster(nodes=1)
    state.add_foreign_pod("ns/p", "n0", {"cpu": 2000})
    state.remove_node("n0")
    state.upsert_node(node("n0"))
    assert state.nodes["n0"].used == {"cpu": 2000} and state.violations() == []


# ---- queue deletion (defined in quota.py) ----------------------------------------------


def org_with_running_gang() -> ClusterState:
    """Queues org > team > a; gang `running` admitted to `a`."""
    state = cluster(nodes=1, queues=(Queue("org"), Queue("team", "org"), Queue("a", "team")))
    state.add_gang(gang("running", gpus=1, queue="a"))
    Engine(state).cycle().ledger.commit_all()
    return state


def test_a_queue_deleted_with_running_gangs_refuses_new_ones_it_was_asked_about_before():
    state = org_with_running_gang()
    newcomer = gang("new", gpus=1, queue="a")
    assert state.queue_blocker(newcomer) is None
    state.remove_queue("a")
    assert state.queue_blocker(newcomer) == "queue a is deleted: it admits nothing new"


def test_gangs_below_a_deleted_queue_are_refused_naming_it():
    state = org_with_running_gang()
    newcomer = gang("new", gpus=1, queue="a")
    assert state.queue_blocker(newcomer) is None
    state.remove_queue("team")
    assert state.queue_blocker(newcomer) == (
        "queue a: ancestor team is deleted: it admits nothing new"
    )


def test_running_gangs_of_a_deleted_queue_stay_admitted_and_charged():
    state = org_with_running_gang()
    state.remove_queue("a")
    assert "running" in state.admitted
    assert state.quota.subtree_usage("org")["devices/gpu"] == 1


def test_an_engine_admits_nothing_new_to_a_deleted_queue():
    state = org_with_running_gang()
    engine = Engine(state)
    state.add_gang(gang("new", gpus=1, queue="a"))
    state.remove_queue("a")
    (decision,) = engine.cycle().decisions
    assert decision.outcome is Outcome.PENDING
    assert decision.reason == "queue a is deleted: it admits nothing new"


def test_a_deleted_queue_is_gone_once_its_last_gang_ends():
    state = org_with_running_gang()
    state.remove_queue("a")
    state.release("running")
    assert state.quota.get("a") is None


def test_republishing_a_deleted_queue_lets_it_admit_again():
    state = org_with_running_gang()
    engine = Engine(state)
    state.add_gang(gang("new", gpus=1, queue="a"))
    state.remove_queue("team")
    engine.cycle()
    state.upsert_queue(Queue("team", "org"))
    (decision,) = engine.cycle().decisions
    assert decision.outcome is Outcome.ADMITTED


class EvictAnyone:
    """A preemption double: every admitted gang is a victim."""

    name = "test-evict-anyone"

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return True

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> list[str]:
        return sorted(ctx.state.admitted)


def test_a_remembered_quota_refusal_does_not_admit_to_a_queue_deleted_since():
    """`late` is refused for quota while `early` (admitted in the same cycle) cannot be
    evicted; the queue is deleted before the next cycle, where `early` could be."""
    state = cluster(nodes=1, queues=(Queue("a", quota=gpu_quota(1)),))
    engine = Engine(state, preemption=EvictAnyone())
    state.add_gang(gang("early", gpus=1, queue="a", created=0))
    state.add_gang(gang("late", gpus=1, queue="a", created=1))
    engine.cycle().ledger.commit_all()
    state.remove_queue("a")
    result = engine.cycle()
    assert "late" not in state.admitted and "early" in state.admitted
    assert [d.reason for d in result.decisions] == ["queue a is deleted: it admits nothing new"]
