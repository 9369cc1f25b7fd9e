"""The generic list+watch cache against the emulator over real HTTP, on virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from controller.kube.backoff import Backoff
from controller.kube.informer import Informer
from controller.kube.rest import Obj, Rest
from emulator import Emulator, Fault
from tests.kube.controller_env import CONFIG_MAPS, config_map, create, emulator, rest

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime


class Recorder:
    """Handler keeping (type, name, old value, new value) of each config map event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, str]] = []

    def __call__(self, kind: str, old: Obj | None, new: Obj) -> None:
        self.events.append(
            (kind, new["metadata"]["name"], old and old["data"]["k"], new["data"]["k"])
        )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


Start = Callable[..., Awaitable[Informer]]


@pytest.fixture
async def start(rest: Rest, recorder: Recorder) -> AsyncIterator[Start]:
    tasks: list[asyncio.Task[None]] = []

    async def run(informer: Informer | None = None, **options: object) -> Informer:
        if informer is None:
            informer = Informer(rest, CONFIG_MAPS, **options)  # type: ignore[arg-type]
            informer.add_handler(recorder)
        tasks.append(asyncio.create_task(informer.run()))
        await asyncio.wait_for(informer.synced.wait(), 60)
        return informer

    yield run
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def settle() -> None:
    """Let watch events travel (virtual time: costs nothing)."""
    await asyncio.sleep(1)


async def put(rest: Rest, name: str, value: str) -> Obj:
    path = CONFIG_MAPS.path("default", name)
    return await rest.request(
        "PATCH",
        path,
        body={"data": {"k": value}},
        content_type="application/merge-patch+json",
    )


async def delete(rest: Rest, name: str) -> None:
    await rest.request("DELETE", CONFIG_MAPS.path("default", name))


async def test_first_sync_streams_initial_events_then_is_synced(
    rest: Rest, start: Start, recorder: Recorder
) -> None:
    for name in "ab":
        await create(rest, CONFIG_MAPS, config_map(name))
    informer = await start()
    assert sorted(recorder.events) == [("ADDED", "a", None, "v"), ("ADDED", "b", None, "v")]
    assert (informer.stats.lists, informer.watch_list) == (0, True)


async def test_list_mode_pages_through_every_object(
    rest: Rest, start: Start, recorder: Recorder
) -> None:
    for name in "abcde":
        await create(rest, CONFIG_MAPS, config_map(name))
    informer = await start(watch_list=False, page_size=2)
    assert sorted(name for _, name, _, _ in recorder.events) == list("abcde")
    assert informer.stats.lists == 1


async def test_watch_events_reach_handlers_with_old_and_new(
    rest: Rest, start: Start, recorder: Recorder
) -> None:
    await start()
    await create(rest, CONFIG_MAPS, config_map("a"))
    await put(rest, "a", "w")
    await delete(rest, "a")
    await settle()
    assert recorder.events == [
        ("ADDED", "a", None, "v"),
        ("MODIFIED", "a", "v", "w"),
        ("DELETED", "a", "w", "w"),
    ]


async def test_a_410_resyncs_and_reports_only_the_differences(
    rest: Rest, emulator: Emulator, recorder: Recorder
) -> None:
    for name in "abc":
        await create(rest, CONFIG_MAPS, config_map(name))
    informer = Informer(rest, CONFIG_MAPS)
    informer.add_handler(recorder)
    offline = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 60)
    offline.cancel()  # away while the cluster changes and the window moves on
    await asyncio.gather(offline, return_exceptions=True)
    recorder.events.clear()
    await delete(rest, "a")
    await put(rest, "b", "w")
    await create(rest, CONFIG_MAPS, config_map("d"))
    emulator.forget_watch_window()
    back = asyncio.create_task(informer.run())
    await settle()
    back.cancel()
    await asyncio.gather(back, return_exceptions=True)
    assert sorted(recorder.events) == [
        ("ADDED", "d", None, "v"),
        ("DELETED", "a", "v", "v"),
        ("MODIFIED", "b", "v", "w"),
    ]
    assert informer.stats.resyncs == 1
    assert sorted(informer.cache) == ["default/b", "default/c", "default/d"]


async def test_a_dropped_watch_resumes_from_its_version_without_a_relist(
    rest: Rest, emulator: Emulator, start: Start, recorder: Recorder
) -> None:
    emulator.inject_fault(Fault("watch", "configmaps", drop_watch_after=1, times=1))
    informer = await start()
    await create(rest, CONFIG_MAPS, config_map("a"))
    await settle()
    await create(rest, CONFIG_MAPS, config_map("b"))
    await settle()
    assert [name for _, name, _, _ in recorder.events] == ["a", "b"]
    assert (informer.stats.watches, informer.stats.lists, informer.stats.resyncs) == (2, 0, 0)


async def test_errors_back_off_exponentially_before_the_sync(
    rest: Rest, emulator: Emulator
) -> None:
    emulator.inject_fault(Fault("watch", "configmaps", code=500, times=3))
    backoff = Backoff(initial=1.0, factor=2.0, jitter=0.0)
    informer = Informer(rest, CONFIG_MAPS, backoff=backoff)
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 60)
    waited = loop.time() - began
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert informer.stats.errors == 3
    assert 7.0 <= waited < 8.0  # 1 + 2 + 4 seconds of backoff


async def test_a_rejected_initial_events_watch_falls_back_to_list_and_watch(
    emulator: Emulator, start: Start, rest: Rest, recorder: Recorder
) -> None:
    await create(rest, CONFIG_MAPS, config_map("a"))
    emulator.inject_fault(Fault("watch", "configmaps", code=422, times=1))
    informer = await start()
    await create(rest, CONFIG_MAPS, config_map("b"))
    await settle()
    assert [name for _, name, _, _ in recorder.events] == ["a", "b"]
    assert (informer.watch_list, informer.stats.lists) == (False, 1)


async def test_a_silent_watch_is_reopened_from_its_version(
    rest: Rest, start: Start, recorder: Recorder
) -> None:
    informer = await start(inactivity_timeout=10.0)
    await asyncio.sleep(25)
    await create(rest, CONFIG_MAPS, config_map("a"))
    await settle()
    assert informer.stats.inactive == 2
    assert (informer.stats.lists, informer.stats.resyncs) == (0, 0)
    assert recorder.events == [("ADDED", "a", None, "v")]


async def test_a_failing_handler_does_not_stop_the_cache(rest: Rest, start: Start) -> None:
    seen: list[str] = []

    def broken(kind: str, old: Obj | None, new: Obj) -> None:
        raise RuntimeError("boom")

    informer = Informer(rest, CONFIG_MAPS)
    informer.add_handler(broken)
    informer.add_handler(lambda kind, old, new: seen.append(new["metadata"]["name"]))
    await start(informer)
    await create(rest, CONFIG_MAPS, config_map("a"))
    await settle()
    assert seen == ["a"]
