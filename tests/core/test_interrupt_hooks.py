"""The hooks around claims that end without a result (``omniq_task_interrupted``) and
around the store write of an enqueue (``omniq_after_enqueue``): every place the worker
and the app call them, with real workers on the memory and SQLite backends."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq import AsyncOmniQ
from omniq.errors import TaskCancelledError
from omniq.models import Task, TaskStatus
from omniq.plugins import PluginManager, hookimpl

pytestmark = pytest.mark.anyio


class Recorder:
    """Records the hook calls it implements."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.interrupted: list[tuple[str, str]] = []  # (task id, reason)
        self.enqueued: list[tuple[list[str], list[TaskStatus]]] = []

    @hookimpl
    def omniq_task_started(self, task: Task) -> None:
        self.started.append(task.id)

    @hookimpl
    def omniq_task_finished(self, task: Task, result: Any, error: BaseException | None) -> None:
        self.finished.append(task.id)

    @hookimpl
    def omniq_task_interrupted(self, task: Task, reason: str) -> None:
        self.interrupted.append((task.id, reason))

    @hookimpl
    def omniq_after_enqueue(self, tasks: list[Task], statuses: list[TaskStatus]) -> None:
        self.enqueued.append(([t.id for t in tasks], list(statuses)))


class Broken:
    """A plugin whose interrupted hook fails (called after the recorder's)."""

    @hookimpl(trylast=True)
    def omniq_task_interrupted(self, task: Task, reason: str) -> None:
        raise RuntimeError("plugin bug")


class App:
    def __init__(self, oq: AsyncOmniQ, rec: Recorder) -> None:
        self.oq = oq
        self.rec = rec


@pytest.fixture(params=["memory", "sqlite"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    pm = PluginManager()
    pm.load_plugins({})  # backends from entry points; nothing from the environment
    rec = Recorder()
    pm.register(rec)
    if request.param == "memory":
        url = f"memory://interrupt-{tmp_path.name}"
    else:
        url = f"sqlite:///{tmp_path / 'i.db'}"
    oq = AsyncOmniQ(task_queue=url, plugins=pm, worker="async")
    async with oq:
        yield App(oq, rec)


async def until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait (at most 60 s) until ``check`` holds."""
    with anyio.move_on_after(60):
        while True:
            out = check()
            if out if isinstance(out, bool) else await out:
                return
            await anyio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def _running(oq: AsyncOmniQ, n: int) -> bool:
    return bool(await oq.task_queue.count("default", TaskStatus.RUNNING) == n)


# --- omniq_task_interrupted ------------------------------------------------------------------


async def test_a_task_cancelled_while_running_is_a_lost_claim(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    oq, rec = app.oq, app.rec
    oq.plugins.register(Broken())

    @oq.task(name="sleepy")
    async def sleepy() -> None:
        await anyio.sleep(3600)

    @oq.task(name="quick")
    async def quick() -> str:
        return "ok"

    h = await sleepy.enqueue()
    async with oq.start_worker(["default"], lease=5, heartbeat_interval=0.05):
        await until(lambda: rec.started == [h.id], "the task started")
        assert await oq.cancel(h.id), "a running task can be cancelled"
        await until(lambda: bool(rec.interrupted), "the heartbeat found the claim lost")
        # the plugin that failed in the hook did not break the worker
        assert await (await quick.enqueue()).result(timeout=60) == "ok"
    assert rec.interrupted == [(h.id, "claim_lost")], (
        f"one lost claim reported by the heartbeat, got {rec.interrupted}"
    )
    assert h.id not in rec.finished, "a stopped run has no finished hook"
    assert "plugin hook omniq_task_interrupted failed" in caplog.text, "the failure is logged"


async def test_a_refused_result_is_a_lost_claim(app: App) -> None:
    """The claim is lost while the task runs and the heartbeat has not seen it yet: the
    store refuses the result (``_write_batch``)."""
    oq, rec = app.oq, app.rec
    ids: dict[str, str] = {}

    @oq.task(name="self_cancel")
    async def self_cancel() -> str:
        assert await oq.cancel(ids["me"]), "cancelled while running"
        return "too late"

    h = await self_cancel.enqueue()
    ids["me"] = h.id
    async with oq.start_worker(["default"], lease=60, heartbeat_interval=30):
        await until(lambda: bool(rec.interrupted), "the refused result is reported")
    assert rec.finished == [h.id], "the run finished (its finished hook came first)"
    assert rec.interrupted == [(h.id, "claim_lost")], rec.interrupted
    assert (await oq.get_task(h.id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


@pytest.mark.parametrize("retries", [0, 2], ids=["final-failure", "retry"])
async def test_a_refused_failure_is_a_lost_claim(app: App, retries: int) -> None:
    """As above for a failing run: recording the failure (or the retry) is refused."""
    oq, rec = app.oq, app.rec
    ids: dict[str, str] = {}

    @oq.task(name="self_cancel_fail", retries=retries, retry_delay=0.01)
    async def self_cancel_fail() -> None:
        assert await oq.cancel(ids["me"]), "cancelled while running"
        raise ValueError("too late")

    h = await self_cancel_fail.enqueue()
    ids["me"] = h.id
    async with oq.start_worker(["default"], lease=60, heartbeat_interval=30):
        await until(lambda: bool(rec.interrupted), "the refused failure is reported")
    assert rec.interrupted == [(h.id, "claim_lost")], rec.interrupted
    with pytest.raises(TaskCancelledError):  # cancelled: no retry ran
        await h.result(timeout=60)
    assert rec.started == [h.id], f"no retry ran after the lost claim: {rec.started}"


async def test_stopping_hands_back_claimed_tasks_and_stops_running_ones(app: App) -> None:
    oq, rec = app.oq, app.rec

    @oq.task(name="sleepy")
    async def sleepy() -> None:
        await anyio.sleep(3600)

    handles = await sleepy.map([()] * 4)
    worker = await oq.start_worker(["default"], concurrency=1, prefetch=3, shutdown_grace=0)
    try:
        await until(lambda: len(rec.started) == 1, "one task started")
        await until(lambda: _running(oq, 4), "all four tasks claimed")
    finally:
        with anyio.fail_after(60):
            await worker.stop()
    reasons = dict(rec.interrupted)
    assert len(rec.interrupted) == 4 and set(reasons) == {h.id for h in handles}, (
        f"each claimed task reported once, got {rec.interrupted}"
    )
    assert reasons[rec.started[0]] == "stopped", "the running task was stopped"
    assert Counter(reasons.values()) == {"stopped": 1, "handed_back": 3}, reasons
    states = [await oq.get_task(h.id) for h in handles]
    assert all(t is not None and t.status is TaskStatus.PENDING for t in states), (
        "every task was given back"
    )


async def test_a_thread_still_running_at_shutdown_is_abandoned(app: App) -> None:
    oq, rec = app.oq, app.rec
    release = threading.Event()

    @oq.task(name="stuck")
    def stuck() -> None:
        release.wait(60)

    h = await stuck.enqueue()
    worker = await oq.start_worker(["default"], shutdown_grace=0)
    try:
        await until(lambda: rec.started == [h.id], "the task started")
        with anyio.fail_after(60):
            await worker.stop()
    finally:
        release.set()
    assert worker.worker.abandoned and worker.worker.abandoned[0].id == h.id
    assert rec.interrupted == [(h.id, "abandoned")], rec.interrupted


# --- omniq_after_enqueue ---------------------------------------------------------------------


async def test_after_enqueue_once_per_batch_with_every_task(app: App) -> None:
    oq, rec = app.oq, app.rec

    @oq.task(name="item")
    async def item(i: int) -> int:
        return i

    handles = await item.map(range(7), batch_size=3)
    sizes = sorted(len(ids) for ids, _ in rec.enqueued)
    assert sizes == [1, 3, 3], f"one call per batch of 3, got batches of {sizes}"
    called = [i for ids, _ in rec.enqueued for i in ids]
    assert sorted(called) == sorted(h.id for h in handles), "every task, once"
    assert {s for _, st in rec.enqueued for s in st} == {TaskStatus.PENDING}

    rec.enqueued.clear()
    later = await item.options(delay=3600).enqueue(0)
    waiting = await item.options(depends_on=[later]).enqueue(1)
    assert rec.enqueued == [
        ([later.id], [TaskStatus.PENDING]),
        ([waiting.id], [TaskStatus.WAITING]),
    ], f"one call per enqueue, with the stored status: {rec.enqueued}"


async def test_no_after_enqueue_when_the_write_fails(app: App) -> None:
    oq, rec = app.oq, app.rec

    @oq.task(name="item")
    async def item(i: int) -> int:
        return i

    async def refuse(task: Task) -> TaskStatus:
        raise ConnectionError("store down")

    oq.task_queue.enqueue = refuse  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await item.enqueue(1)
    assert rec.enqueued == [], "not called for a write that failed"


async def test_without_implementations_the_hook_paths_still_work() -> None:
    """With no plugin implementing the new hooks, the paths that call them still work."""
    pm = PluginManager()
    pm.load_plugins({"OMNIQ_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert not pm.implemented("omniq_task_interrupted")
    assert not pm.implemented("omniq_after_enqueue")
    async with AsyncOmniQ(task_queue="memory://no-hooks", plugins=pm, worker="async") as oq:
        started = anyio.Event()

        @oq.task(name="sleepy")
        async def sleepy() -> None:
            started.set()
            await anyio.sleep(3600)

        handles = await sleepy.map([()] * 3)
        worker = await oq.start_worker(["default"], concurrency=1, prefetch=2, shutdown_grace=0)
        with anyio.fail_after(60):
            await started.wait()
            await until(lambda: _running(oq, 3), "all three tasks claimed")
            await worker.stop()
        states = [await oq.get_task(h.id) for h in handles]
        assert all(t is not None and t.status is TaskStatus.PENDING for t in states), (
            "every task was given back"
        )
