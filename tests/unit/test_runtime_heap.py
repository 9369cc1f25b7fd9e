"""How a serving process settles its heap (controller.runtime): what lives at the
freeze leaves the collector's sight, young objects are collected in larger batches, and
a caller that goes on gets the collector back as it was."""

from __future__ import annotations

import gc
import weakref

from controller import runtime


def test_settled_heap_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    kept = [{"pod": i} for i in range(1000)]
    before = gc.get_freeze_count()
    with runtime.settled_heap():
        assert gc.get_freeze_count() >= before + len(kept)
        assert gc.get_threshold() == (runtime.YOUNG_THRESHOLD, *runtime.OLDER_THRESHOLDS)


def test_settled_heap_gives_the_collector_back_as_it_was() -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    with runtime.settled_heap():
        pass
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


class _Node:
    """An object in a reference cycle with itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_freeze_heap_frees_garbage_in_cycles_instead_of_freezing_it() -> None:
    gc.unfreeze()
    garbage = _Node()
    alive = weakref.ref(garbage)
    del garbage
    try:
        runtime.freeze_heap()
        assert alive() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
