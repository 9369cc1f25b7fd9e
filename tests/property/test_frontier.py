"""The walk's frontier reads the dormant groups of the classes preemption helps from the
backlog's sorted positions behind cursors instead of copying them in at the start of a
cycle: on drawn walks (pushes, conditional pushes, groups made certain, pops with queues
searched), it pops the same positions, says the same of which groups are in the walk and
which only in case preemption helps them, as a frontier that copied them in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sortedcontainers import SortedList

from controller.engine.backlog import Frontier, GroupKey, Position
from tests.property.harness import property_settings

QUEUES = ("qa", "qb", "qc")


def group(queue: int, n: int, help_id: int) -> GroupKey:
    return (QUEUES[queue], "ns", n, help_id)


@st.composite
def walks(draw: st.DrawFn) -> tuple[list[Position], dict[GroupKey, Position], set, list]:
    """Groups with distinct positions; some awake (their heads start the walk), some
    dormant (of them, some woken at the start: awake now, still in the sorted
    positions), and a list of steps."""
    count = draw(st.integers(1, 24))
    keys = draw(st.lists(st.integers(0, 60), min_size=count, max_size=count, unique=True))
    groups = [group(draw(st.integers(0, 2)), i, draw(st.integers(0, 1))) for i in range(count)]
    positions = {w: (((k,), f"u{k}"), w) for w, k in zip(groups, keys, strict=True)}
    kinds = {w: draw(st.sampled_from(["awake", "dormant", "woken"])) for w in groups}
    heads = [positions[w] for w in groups if kinds[w] == "awake"]
    dormant = {w: positions[w] for w in groups if kinds[w] != "awake"}
    woken = {w for w in groups if kinds[w] == "woken"}
    step = st.one_of(
        st.tuples(st.just("pop"), st.sets(st.sampled_from(QUEUES))),
        st.tuples(st.just("push"), st.sampled_from(groups), st.integers(61, 200), st.booleans()),
        st.tuples(st.just("certain"), st.sets(st.sampled_from(groups))),
    )
    return heads, dormant, woken, draw(st.lists(step, max_size=40))


@property_settings(300)
@given(walks(), st.sets(st.sampled_from([(q, h) for q in QUEUES for h in (0, 1)])))
def test_cursors_over_dormant_groups_walk_as_copying_them_in(
    walk: tuple[list[Position], dict[GroupKey, Position], set, list], helped: set
) -> None:
    heads, dormant_at, woken, steps = walk
    by_class: dict[tuple[str, int], SortedList[Position]] = {}
    for w, position in dormant_at.items():
        by_class.setdefault((w[0], w[3]), SortedList()).add(position)
    awake = [*heads, *(dormant_at[w] for w in sorted(woken))]  # the woken are awake
    lazy = Frontier(awake, {c: p for c, p in by_class.items() if c in helped}, dormant_at, woken)
    eager = Frontier(awake)
    eager.push_conditional(
        p for c, ps in sorted(by_class.items()) if c in helped for p in ps if p[1] not in woken
    )
    everyone = sorted({*dormant_at, *(w for _, w in heads)})
    for step in steps:
        if step[0] == "pop":
            searched = set(step[1])
            assert lazy.pop(searched) == eager.pop(searched)
        elif step[0] == "push":
            _, w, key, conditional = step
            if not eager.is_queued(w):  # the walk pushes only groups not in it
                position = (((key,), f"v{key}"), w)
                lazy.push(position, conditional)
                eager.push(position, conditional)
        else:
            lazy.certain(step[1])
            eager.certain(step[1])
        for w in everyone:
            assert lazy.is_queued(w) == eager.is_queued(w), w
            assert lazy.is_maybe(w) == eager.is_maybe(w), w
    while (popped := eager.pop(set())) is not None:
        assert lazy.pop(set()) == popped
    assert lazy.pop(set()) is None
