"""A live replay's processes run as the servers they stand for: the objects of start-up
out of the collector's sight while it runs, the collector as it was afterwards."""

from __future__ import annotations

import gc

from controller.replay.command import serve_replay


async def _freeze_count() -> int:
    return gc.get_freeze_count()


def test_a_replay_runs_with_the_objects_of_start_up_frozen() -> None:
    assert serve_replay(_freeze_count()) > 0


def test_after_a_replay_the_collector_is_as_it_was() -> None:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    serve_replay(_freeze_count())
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, frozen)
