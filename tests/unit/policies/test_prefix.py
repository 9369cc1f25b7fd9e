"""The shortest-fitting-prefix search shared by preemption and the starvation guard."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies.prefix import shortest_prefix


@given(st.integers(0, 60), st.data())
def test_finds_the_smallest_fitting_prefix_above_the_floor(n, data):
    threshold = data.draw(st.integers(1, n + 1), label="threshold")  # n + 1: never fits
    floor = data.draw(st.integers(0, max(0, min(n, threshold) - 1)), label="floor")
    asked: list[int] = []

    def fits(k: int) -> bool:
        asked.append(k)
        return k >= threshold

    expected = threshold if threshold <= n and n > floor else None
    assert shortest_prefix(fits, floor, n) == expected
    assert all(floor < k <= max(n, floor + 1) for k in asked)


def test_probes_stay_near_the_answer_instead_of_evicting_everything():
    asked: list[int] = []

    def fits(k: int) -> bool:
        asked.append(k)
        return k >= 3

    assert shortest_prefix(fits, 0, 1000) == 3
    assert max(asked) <= 4


def test_a_spent_budget_before_anything_fits_gives_no_answer():
    assert shortest_prefix(lambda k: None if k > 2 else False, 0, 10) is None
