"""Releasing and restoring whole reservations moves their exclusive devices in one
precomputed batch per gang (free counts per match set and node), kept while slices,
classes and the match sets built are the same: on drawn sequences of releases, restores,
new match sets and republished slices, every derived index (free counts, their buckets,
held devices, free cpu) agrees with one recounted from the reservations."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from controller.engine.cycle import Engine
from controller.engine.model import Gang
from controller.engine.reservation import Reservation
from tests.builders import GPU, cluster, gang, gpu_slice
from tests.property.harness import index_problems, property_settings
from tests.property.strategies import H100

MODELS = ("h100", "a100")
SELECTORS = (H100,)

step = st.one_of(
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.just("restore"), st.integers(0, 7)),
    st.tuples(st.just("match"), st.sampled_from(SELECTORS)),
    st.tuples(st.just("slice"), st.integers(0, 2), st.sampled_from(MODELS)),
)


@property_settings(200)
@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4)), min_size=1, max_size=8),
    st.lists(step, max_size=40),
)
@example([(2, 2)], [("release", 0), ("match", H100), ("restore", 0)])  # a match set built
@example([(2, 2)], [("release", 0), ("slice", 0, "a100"), ("restore", 0)])  # republished
def test_reservations_released_and_restored_in_batches_keep_the_indexes_exact(
    shapes: list[tuple[int, int]], steps: list[tuple[object, ...]]
) -> None:
    state = cluster(3, 8)
    for i, (pods, gpus) in enumerate(shapes):
        state.add_gang(gang(f"g{i}", pods, gpus, created=i))
    Engine(state).cycle().ledger.commit_all()
    out: dict[str, Reservation] = {}
    for s in steps:
        if s[0] == "release":
            admitted = sorted(state.admitted)
            if admitted:
                assert isinstance(s[1], int)
                uid = admitted[s[1] % len(admitted)]
                out[uid] = state.release(uid)
        elif s[0] == "restore":
            if out:
                assert isinstance(s[1], int)
                uid = sorted(out)[s[1] % len(out)]
                state.restore(state.pending.get(uid) or _gang(uid, shapes), out.pop(uid))
        elif s[0] == "match":
            selector = s[1]
            assert isinstance(selector, str)
            state.inventory.match_set((GPU, (selector,)))
        else:
            node, model = s[1], s[2]
            assert isinstance(model, str)
            state.upsert_slice(gpu_slice(f"n{node}", 8, model=model))
        assert index_problems(state) == [], s


def _gang(uid: str, shapes: list[tuple[int, int]]) -> Gang:
    i = int(uid[1:])
    return gang(uid, *shapes[i], created=i)
