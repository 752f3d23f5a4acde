"""Lifecycle hooks are called through pluggy (issue 15): ``tryfirst``/``trylast``,
hookwrappers and tracing behave as pluggy documents, and async implementations are
awaited in pluggy's call order."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from omniq import AsyncOmniQ
from omniq.plugins import PluginManager, hookimpl

pytestmark = pytest.mark.anyio


def _manager(*plugins: object) -> PluginManager:
    pm = PluginManager()
    pm.load_plugins({"OMNIQ_DISABLE_PLUGIN_AUTOLOAD": "1"})
    for p in plugins:
        pm.register(p)
    return pm


async def test_tryfirst_trylast_and_wrappers_run_in_pluggy_order() -> None:
    calls: list[str] = []

    class Late:
        @hookimpl(trylast=True)
        def omniq_before_enqueue(self, task: Any) -> None:
            calls.append("trylast")

        @hookimpl(trylast=True)
        async def omniq_on_event(self, event: Any) -> None:
            calls.append(f"trylast:{event.event_type.value}")

    class Plain:
        @hookimpl
        async def omniq_before_enqueue(self, task: Any) -> None:
            calls.append("plain (awaited)")
            task.metadata["plain"] = True

        @hookimpl
        def omniq_on_event(self, event: Any) -> None:
            calls.append(f"plain:{event.event_type.value}")

    class Early:
        @hookimpl(tryfirst=True)
        def omniq_before_enqueue(self, task: Any) -> None:
            calls.append("tryfirst")

        @hookimpl(tryfirst=True)
        def omniq_on_event(self, event: Any) -> None:
            calls.append(f"tryfirst:{event.event_type.value}")

    class Wrapper:
        @hookimpl(wrapper=True)
        def omniq_before_enqueue(self, task: Any) -> Generator[None, Any, Any]:
            calls.append("wrapper before")
            out = yield
            calls.append(f"wrapper after ({len(out)} results)")
            return out

        @hookimpl(wrapper=True)
        def omniq_on_event(self, event: Any) -> Generator[None, Any, Any]:
            calls.append("wrapper before event")
            out = yield
            calls.append("wrapper after event")
            return out

    # registered so that registration order alone would give the opposite order
    pm = _manager(Early(), Plain(), Late(), Wrapper())
    async with AsyncOmniQ(task_queue="memory://", plugins=pm) as oq:

        @oq.task
        def f() -> None: ...

        h = await f.enqueue()
        await oq.events.flush()
        task = await oq.get_task(h.id)
    # pluggy calls tryfirst, then plain, then trylast inside the wrapper; an async
    # implementation returns a coroutine there (its result, the only non-None one), which
    # the engine awaits after the call, in the same order
    assert calls[:5] == [
        "wrapper before",
        "tryfirst",
        "trylast",
        "wrapper after (1 results)",
        "plain (awaited)",
    ], f"pluggy order not kept for omniq_before_enqueue: {calls}"
    assert task is not None and task.metadata.get("plain") is True, "async hook awaited"
    assert calls[5:] == [
        "wrapper before event",
        "tryfirst:enqueued",
        "plain:enqueued",
        "wrapper after event",
        "trylast:enqueued",
    ], f"omniq_on_event not called through pluggy: {calls[5:]}"


async def test_hook_calls_are_traced() -> None:
    traced: list[str] = []

    class Plugin:
        @hookimpl
        def omniq_before_enqueue(self, task: Any) -> None: ...

    pm = _manager(Plugin())
    undo = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: traced.append(name), lambda *a: None
    )
    try:
        async with AsyncOmniQ(task_queue="memory://", plugins=pm) as oq:
            await oq.enqueue(lambda_free, 1)
    finally:
        undo()
    assert "omniq_before_enqueue" in traced, f"hook call not seen by pluggy tracing: {traced}"


def lambda_free(x: int) -> int:
    return x


async def test_a_failing_hook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        @hookimpl
        def omniq_before_enqueue(self, task: Any) -> None:
            raise RuntimeError("plugin bug")

    async with AsyncOmniQ(task_queue="memory://", plugins=_manager(Broken())) as oq:
        h = await oq.enqueue(lambda_free, 1)
        assert await oq.get_task(h.id) is not None, "the task is stored despite the plugin"
    assert "plugin hook omniq_before_enqueue failed" in caplog.text


async def test_before_enqueue_writes_each_mapped_task_s_own_metadata() -> None:
    """map() builds its tasks as copies of the first: a hook writing one task's (empty)
    metadata must not write the others' (they once shared one dict)."""

    class Stamp:
        @hookimpl
        def omniq_before_enqueue(self, task: Any) -> None:
            task.metadata["stamp"] = task.id

    oq = AsyncOmniQ(task_queue="memory://hook-map", plugins=_manager(Stamp()))

    @oq.task
    async def add(x: int) -> int:
        return x

    async with oq:
        handles = await add.map([(1,), (2,), (3,)])
        for h in handles:
            task = await oq.task_queue.get(h.id)
            assert task is not None and task.metadata == {"stamp": h.id}, (
                f"task {h.id} should carry only its own stamp, got {task and task.metadata}"
            )
