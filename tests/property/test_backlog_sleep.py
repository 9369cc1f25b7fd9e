"""The backlog's groups asleep on quota (kept in heaps whose entries go stale when a
group leaves or sleeps again, skipped when they surface) wake exactly when they should:
on drawn sequences of groups joining, leaving and falling asleep on an amount, quota
taken and given back, a group is asleep on quota iff it fell asleep and its queue had
less room than its amount at every wake since (a wake looks only after the capacity epoch
moved, and wakes everyone after the queue tree changed, as at the first)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from controller.engine.backlog import Backlog, GroupKey
from controller.engine.model import Gang, Queue
from tests.builders import GPU, cluster, gang, gpu_quota
from tests.property.harness import property_settings

RESOURCE = f"devices/{GPU}"
QUEUES = ("q0", "q1")

step = st.one_of(
    st.tuples(st.just("join"), st.integers(0, 2), st.sampled_from(QUEUES)),
    st.tuples(st.just("leave"), st.integers(0, 2)),
    st.tuples(st.just("sleep"), st.integers(0, 2), st.integers(1, 8)),
    st.tuples(st.just("take"), st.sampled_from(QUEUES), st.integers(1, 6)),
    st.tuples(st.just("give"), st.sampled_from(QUEUES), st.integers(1, 6)),
    st.tuples(st.just("wake")),
)


@property_settings(300)
@given(st.lists(step, max_size=60))
@example(  # a stale entry of a smaller amount surfaces first
    [
        ("join", 0, "q0"),
        ("wake",),
        ("sleep", 0, 2),
        ("leave", 0),
        ("join", 0, "q0"),
        ("sleep", 0, 6),
        ("take", "q0", 5),
        ("give", "q0", 1),
        ("wake",),
    ]
)
def test_groups_asleep_on_quota_wake_when_their_queue_has_the_room(
    steps: list[tuple[object, ...]],
) -> None:
    queues = (Queue("root"), *(Queue(q, "root", gpu_quota(4, borrowing=2)) for q in QUEUES))
    state = cluster(2, 8, queues)
    gangs: dict[int, Gang] = {}

    def group_of(g: Gang) -> GroupKey:
        return (g.queue, g.namespace, int(g.uid[1:]), 0)

    backlog = Backlog(state, object(), lambda g: (g.created,), group_of)
    asleep: dict[GroupKey, tuple[str, int]] = {}  # the model: group -> (queue, amount)
    used = dict.fromkeys(QUEUES, 0)
    looked: tuple[int, int] | None = None  # (queue tree generation, capacity epoch)
    for s in steps:
        if s[0] == "join":
            i, queue = s[1], s[2]
            assert isinstance(i, int) and isinstance(queue, str)
            if i not in gangs:
                gangs[i] = gang(f"g{i}", 1, 1, queue=queue, created=i)
                state.add_gang(gangs[i])
                backlog.sync([f"g{i}"])
        elif s[0] == "leave":
            i = s[1]
            if i in gangs:
                state.remove_gang(f"g{i}")
                backlog.sync([f"g{i}"])
                asleep.pop(group_of(gangs.pop(i)), None)
        elif s[0] == "sleep":
            i, amount = s[1], s[2]
            assert isinstance(amount, int)
            if i in gangs:
                where = group_of(gangs[i])
                backlog.sleep_on_quota(where, (where[0], RESOURCE), amount)
                asleep.setdefault(where, (where[0], amount))
        elif s[0] == "take":
            queue, n = s[1], s[2]
            assert isinstance(queue, str) and isinstance(n, int)
            state.quota.charge(queue, {RESOURCE: n})
            used[queue] += n
        elif s[0] == "give":
            queue, n = s[1], s[2]
            assert isinstance(queue, str) and isinstance(n, int)
            n = min(n, used[queue])
            if n:
                state.quota.uncharge(queue, {RESOURCE: n})
                used[queue] -= n
                state.capacity_epoch += 1  # headroom grows only with the capacity epoch
        else:
            woken = set(backlog.wake())
            now = (state.quota.generation, state.capacity_epoch)
            rooms = {q: state.quota.headroom(q, RESOURCE)[0] for q in QUEUES}
            if looked is None or looked[0] != now[0]:
                due = set(asleep)
            elif looked[1] == now[1]:
                due = set()
            else:
                due = {w for w, (q, n) in asleep.items() if (r := rooms[q]) is None or n <= r}
            looked = now
            assert woken == due
            for w in due:
                del asleep[w]
        assert set(backlog.short_of_quota) == set(asleep)
