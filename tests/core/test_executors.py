"""Executors run coroutine functions, sync functions and callable objects alike."""

from __future__ import annotations

from typing import Any

import pytest

from omniq.errors import TaskTimeoutError
from omniq.workers.executors import AsyncExecutor, ThreadExecutor


class Unhashable:
    """A callable object with ``__eq__`` and so no ``__hash__``."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unhashable)

    def __call__(self, x: int) -> int:
        return x + 1


async def double(x: int) -> int:
    return 2 * x


def triple(x: int) -> int:
    return 3 * x


@pytest.mark.anyio
@pytest.mark.parametrize("cls", [AsyncExecutor, ThreadExecutor])
async def test_functions_and_callable_objects(cls: type[AsyncExecutor]) -> None:
    ex = cls(2)
    await ex.start()
    try:
        for _ in range(2):  # the second call goes through the cached kind of function
            assert await ex.run("double", double, (4,), {}, None) == 8
            assert await ex.run("triple", triple, (4,), {}, None) == 12
            assert await ex.run("obj", Unhashable(), (4,), {}, 5.0) == 5
    finally:
        await ex.stop()


@pytest.mark.anyio
async def test_timeout_is_reported() -> None:
    import anyio

    async def sleepy(**_: Any) -> None:
        await anyio.sleep(5)

    ex = AsyncExecutor(1)
    with pytest.raises(TaskTimeoutError, match="exceeded its timeout"):
        await ex.run("sleepy", sleepy, (), {}, 0.05)


# --- gevent: greenlets on a hub in a helper thread --------------------------------------------


class InFlight:
    """Counts calls running at once (from any thread) and the most seen together."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self.now = self.most = self.done = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1
            self.done += 1


def _gevent_executor(concurrency: int) -> Any:
    pytest.importorskip("gevent", reason="gevent is an optional extra: omniq-core[gevent]")
    from omniq.workers.executors import GeventExecutor

    return GeventExecutor(concurrency)


@pytest.mark.anyio
async def test_gevent_task_that_yields_finishes() -> None:
    import anyio
    import gevent

    def nap() -> str:
        gevent.sleep(0.2)
        return "woke"

    ex = _gevent_executor(4)
    await ex.start()
    try:
        with anyio.fail_after(30):  # the hub once blocked for good in a queue.get()
            assert await ex.run("nap", nap, (), {}, 20.0) == "woke"
    finally:
        await ex.stop()


@pytest.mark.anyio
async def test_gevent_runs_concurrency_greenlets_at_once() -> None:
    """Eight tasks that yield (gevent.sleep) at concurrency 4: four run together."""
    import anyio
    import gevent

    flight = InFlight()

    def nap(i: int) -> int:
        with flight:
            gevent.sleep(0.5)
        return i

    ex = _gevent_executor(4)
    await ex.start()
    results: dict[int, int] = {}

    async def one(i: int) -> None:
        results[i] = await ex.run("nap", nap, (i,), {}, 30.0)

    try:
        with anyio.fail_after(60):  # two rounds of 0.5 s; generous for a loaded machine
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(one, i)
    finally:
        await ex.stop()
    assert results == {i: i for i in range(8)}
    assert flight.most == 4, f"at most {flight.most} tasks ran at once; expected 4"


@pytest.mark.anyio
async def test_gevent_more_tasks_than_greenlets_wait_for_a_free_one() -> None:
    """The pool holds ``concurrency`` greenlets: callers beyond it wait their turn."""
    import anyio
    import gevent

    flight = InFlight()

    def nap() -> None:
        with flight:
            gevent.sleep(0.05)

    ex = _gevent_executor(3)
    await ex.start()
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(30):
                    tg.start_soon(ex.run, "nap", nap, (), {}, 30.0)
    finally:
        await ex.stop()
    assert flight.done == 30 and flight.most == 3, (flight.done, flight.most)


@pytest.mark.anyio
async def test_gevent_timeout_kills_the_greenlet_and_frees_its_place() -> None:
    import anyio
    import gevent

    ended: list[str] = []

    def forever() -> None:
        try:
            gevent.sleep(3600)
        finally:
            ended.append("forever")

    ex = _gevent_executor(1)
    await ex.start()
    try:
        with pytest.raises(TaskTimeoutError, match="exceeded its timeout"):
            await ex.run("forever", forever, (), {}, 0.2)
        with anyio.fail_after(30):
            # the only greenlet was killed (GreenletExit where it slept): this one runs
            assert await ex.run("triple", triple, (5,), {}, 20.0) == 15
        assert ended == ["forever"]
        assert not ex.can_stop(forever)  # one that never yields would run on
    finally:
        await ex.stop()


@pytest.mark.anyio
async def test_gevent_errors_reach_the_caller_and_stop_ends_the_hub() -> None:
    def boom() -> None:
        raise ValueError("no")

    ex = _gevent_executor(2)
    await ex.start()
    thread = ex._hub.thread
    assert thread.name == "omniq-gevent"
    with pytest.raises(ValueError, match="no"):
        await ex.run("boom", boom, (), {}, 5.0)
    assert await ex.run("double", double, (4,), {}, 5.0) == 8  # coroutines: on the loop
    await ex.stop()
    thread.join(10)
    assert not thread.is_alive(), "the hub thread did not end after stop()"


@pytest.mark.anyio
async def test_gevent_without_monkey_patching_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from gevent import monkey

    if monkey.is_module_patched("time"):
        pytest.skip("this process is monkey-patched")
    ex = _gevent_executor(2)
    monkeypatch.setattr(type(ex), "_warned_unpatched", False)
    with caplog.at_level(logging.WARNING, logger="omniq.worker"):
        for executor in (ex, _gevent_executor(2)):
            await executor.start()
            await executor.stop()
    warnings = [r.getMessage() for r in caplog.records if "monkey-patched" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "python -m gevent.monkey --module omniq worker" in warnings[0]
