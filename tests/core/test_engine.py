"""The public API (DESIGN §3) end to end on the memory backend, with real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq import (
    AsyncOmniQ,
    EventType,
    OmniQ,
    ScheduleState,
    TaskCancelledError,
    TaskFailedError,
    TaskStatus,
)
from omniq.errors import (
    BackendError,
    ConfigurationError,
    DependencyCycleError,
    TaskExpiredError,
)
from omniq.sync import run_sync
from omniq.workers.worker import PREFETCH_MAX_FACTOR


@pytest.fixture
def oq() -> OmniQ:
    q = OmniQ(task_queue="memory://", event_storage="memory://", worker="thread", max_workers=4)
    with q:
        yield q


def test_enqueue_result_status_events(oq: OmniQ) -> None:
    @oq.task
    def add(x: int, y: int) -> int:
        return x + y

    with oq.start_worker_sync():
        h = add.enqueue_sync(1, 2)
        assert h.result_sync(timeout=10) == 3
        assert h.status_sync() is TaskStatus.SUCCESS
        h2 = oq.enqueue_sync(add, 3, 4)
        assert h2.result_sync(timeout=10) == 7
        r = oq.get_result_sync(h.id)
        assert r is not None and r.status is TaskStatus.SUCCESS and r.result == 3
    kinds = [e.event_type for e in oq.get_events_sync(task_id=h.id)]
    assert kinds == [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE]


def test_bulk_map_and_async_tasks(oq: OmniQ) -> None:
    @oq.task
    async def double(x: int) -> int:
        return 2 * x

    with oq.start_worker_sync(worker="async", concurrency=16):
        hs = double.map_sync(range(300))
        assert [h.result_sync(timeout=20) for h in hs] == [2 * i for i in range(300)]


@pytest.mark.anyio
async def test_map_sends_batches_in_order_and_raises_a_failed_batch_plainly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with AsyncOmniQ(task_queue="memory://") as oq:

        @oq.task
        async def one(x: int) -> int:
            return x

        handles = await one.map(range(25), batch_size=10)
        stored = {t.id: t.args for t in await oq.task_queue.list(limit=100)}
        assert [stored[h.id] for h in handles] == [(i,) for i in range(25)]

        queue = oq.task_queue
        original = queue.enqueue_many
        calls = 0

        async def second_batch_fails(tasks: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise BackendError("the server went away")
            return await original(tasks)

        monkeypatch.setattr(queue, "enqueue_many", second_batch_fails)
        with pytest.raises(BackendError, match="went away"):  # not an ExceptionGroup
            await one.map(range(30), batch_size=10)
        assert calls == 2  # no batch is sent once one has failed
        assert await queue.count() == 25 + 10


@pytest.mark.anyio
async def test_map_pauses_the_garbage_collector_and_restores_its_state() -> None:
    """map() turns automatic collection off while it runs (its objects are all alive
    until it returns) and back to what it was: on again, or still off when the app
    turned it off; a failed map restores it too."""
    import gc

    seen: list[bool] = []
    async with AsyncOmniQ(task_queue="memory://") as oq:

        @oq.task
        async def one(x: int) -> int:
            return x

        original = oq.task_queue.enqueue_many

        async def watch(tasks: Any) -> Any:
            seen.append(gc.isenabled())
            if tasks[0].args == (-1,):
                raise BackendError("refused")
            return await original(tasks)

        oq.task_queue.enqueue_many = watch  # type: ignore[method-assign]
        assert gc.isenabled(), "the test starts with the collector on"
        try:
            await one.map(range(30), batch_size=10)
            assert seen == [False] * 3, f"collection during map(): {seen}"
            assert gc.isenabled(), "map() turns the collector back on"
            with pytest.raises(BackendError):
                await one.map([-1, 1], batch_size=10)
            assert gc.isenabled(), "a failed map() turns the collector back on"
            gc.disable()
            await one.map(range(20), batch_size=10)
            assert not gc.isenabled(), "map() leaves a collector the app turned off alone"
        finally:
            gc.enable()


def test_queue_order_then_priority(oq: OmniQ) -> None:
    order: list[str] = []

    @oq.task
    def note(label: str) -> None:
        order.append(label)

    note.options(queue="low").enqueue_sync("low")
    note.options(queue="high", priority=1).enqueue_sync("high-1")
    note.options(queue="high", priority=9).enqueue_sync("high-9")
    oq.drain_sync(queues=["high", "low"], concurrency=1)
    assert order == ["high-9", "high-1", "low"]


def test_retries_then_failure_with_traceback(oq: OmniQ) -> None:
    calls = []

    @oq.task(retries=2, retry_delay=0.01)
    def boom() -> None:
        calls.append(1)
        raise ValueError("kaput")

    with oq.start_worker_sync():
        h = boom.enqueue_sync()
        with pytest.raises(TaskFailedError) as info:
            h.result_sync(timeout=10)
    assert len(calls) == 3
    assert "ValueError: kaput" in (info.value.error or "")
    assert "Traceback" in (info.value.traceback or "")
    kinds = [e.event_type for e in oq.get_events_sync(task_id=h.id)]
    assert kinds.count(EventType.RETRY) == 2 and kinds[-1] is EventType.ERROR


def test_dependencies_diamond_and_failure_cancels(oq: OmniQ) -> None:
    seen: list[str] = []

    @oq.task
    def step(name: str) -> str:
        seen.append(name)
        return name

    @oq.task
    def fail() -> None:
        raise RuntimeError("upstream broke")

    a = step.enqueue_sync("a")
    b = step.options(depends_on=[a]).enqueue_sync("b")
    c = step.options(depends_on=[a]).enqueue_sync("c")
    d = step.options(depends_on=[b, c]).enqueue_sync("d")
    bad = fail.enqueue_sync()
    child = step.options(depends_on=[bad]).enqueue_sync("never")
    grandchild = step.options(depends_on=[child.id]).enqueue_sync("never2")
    with oq.start_worker_sync():
        assert d.result_sync(timeout=10) == "d"
        with pytest.raises(TaskCancelledError):
            grandchild.result_sync(timeout=10)
    assert seen[0] == "a" and seen[-1] == "d" and "never" not in seen
    assert child.status_sync() is TaskStatus.CANCELLED


def test_cycle_refused(oq: OmniQ) -> None:
    @oq.task
    def f() -> None: ...

    with pytest.raises(DependencyCycleError):
        f.options(task_id="x", depends_on=["x"]).enqueue_sync()


def test_delay_and_ttl(oq: OmniQ) -> None:
    @oq.task
    def now() -> float:
        return time.time()

    t0 = time.time()
    delayed = now.options(delay=0.5).enqueue_sync()
    expired = now.options(ttl=0.1).enqueue_sync()
    time.sleep(0.3)
    with oq.start_worker_sync():
        assert delayed.result_sync(timeout=10) >= t0 + 0.5
        with pytest.raises(TaskExpiredError):
            expired.result_sync(timeout=10)
    assert expired.status_sync() is TaskStatus.EXPIRED
    kinds = [e.event_type for e in oq.get_events_sync(task_id=expired.id)]
    assert EventType.EXPIRED in kinds and EventType.EXECUTING not in kinds


def test_cancel_queued_and_running(oq: OmniQ) -> None:
    @oq.task
    async def slow() -> str:
        import anyio

        await anyio.sleep(30)
        return "finished"

    queued = slow.enqueue_sync()
    assert oq.cancel_sync(queued.id)
    with pytest.raises(TaskCancelledError):
        queued.result_sync(timeout=5)
    with oq.start_worker_sync(worker="async", lease=0.6):
        running = slow.enqueue_sync()
        deadline = time.time() + 10
        while running.status_sync() is not TaskStatus.RUNNING and time.time() < deadline:
            time.sleep(0.02)
        t0 = time.time()
        assert running.cancel_sync()
        with pytest.raises(TaskCancelledError):
            running.result_sync(timeout=5)
    # leaving the block drains the worker: the cancelled task was stopped at its next
    # heartbeat instead of sleeping for 30 s
    assert time.time() - t0 < 20


def test_runner_goes_on_after_a_cancelled_task(oq: OmniQ) -> None:
    """A runner's tasks share a cancel scope: after one is stopped (even one that
    swallows the cancellation), the same runner runs the next tasks normally."""

    @oq.task
    async def slow(swallow: bool) -> str:
        import anyio

        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            if not swallow:
                raise
        return "swallowed"

    @oq.task
    async def quick(i: int) -> int:
        import anyio

        await anyio.sleep(0.01)  # an await in the scope: raises if it is still cancelled
        return i

    with oq.start_worker_sync(worker="async", concurrency=1, prefetch=5, lease=0.6):
        for swallow in (False, True):
            running = slow.enqueue_sync(swallow)
            _wait_for(lambda h=running: h.status_sync() is TaskStatus.RUNNING)
            # held by the same runner's prefetch while the slow task runs
            handles = quick.map_sync(range(3))
            _wait_for(lambda hs=handles: all(h.status_sync() is TaskStatus.RUNNING for h in hs))
            assert running.cancel_sync()
            with pytest.raises(TaskCancelledError):
                running.result_sync(timeout=10)
            assert [h.result_sync(timeout=10) for h in handles] == [0, 1, 2]
            # none of them was hit by the stale cancellation and re-run after its lease
            results = [oq.get_result_sync(h.id) for h in handles]
            assert [r.attempt for r in results if r is not None] == [1, 1, 1]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_interval_schedule_pause_resume(oq: OmniQ) -> None:
    runs: list[float] = []

    @oq.task
    def tick() -> None:
        runs.append(time.time())

    with oq.start_worker_sync():
        sid = oq.schedule_sync(tick, interval=0.2)
        time.sleep(1.2)
        assert oq.pause_schedule_sync(sid)
        time.sleep(0.4)
        paused_count = len(runs)
        assert paused_count >= 3
        time.sleep(0.8)
        assert len(runs) == paused_count  # nothing fires while paused
        (s,) = oq.list_schedules_sync()
        assert s.state is ScheduleState.PAUSED
        assert oq.resume_schedule_sync(sid)
        time.sleep(0.8)
        assert len(runs) > paused_count
        assert oq.delete_schedule_sync(sid)
    kinds = [e.event_type for e in oq.get_events_sync()]
    assert EventType.SCHEDULE_PAUSED in kinds and EventType.SCHEDULE_RESUMED in kinds


def test_process_executor_kills_timed_out_task_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # spawned children import the task module by name: make the repo root importable
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    from tests.integration import engine_app as app

    oq = app.oq
    with oq, oq.start_worker_sync(worker="process", concurrency=2):
        stuck = app.sleep_for.options(timeout=0.5).enqueue_sync(60)
        ok = app.add.enqueue_sync(2, 3)
        with pytest.raises(TaskFailedError) as info:
            stuck.result_sync(timeout=30)
        assert "TaskTimeoutError" in (info.value.error or "")
        assert ok.result_sync(timeout=30) == 5
        assert app.add.enqueue_sync(5, 5).result_sync(timeout=30) == 10


@pytest.mark.anyio
async def test_async_api_and_start_worker() -> None:
    async with AsyncOmniQ(task_queue="memory://", worker="async") as oq:

        @oq.task
        async def mul(x: int, y: int) -> int:
            return x * y

        async with oq.start_worker():
            h = await mul.enqueue(6, 7)
            assert await h.result(timeout=10) == 42
        w = await oq.start_worker()
        h = await oq.enqueue(mul, 2, 3)
        assert await h.result(timeout=10) == 6
        await w.stop()


@pytest.mark.anyio
async def test_worker_runs_up_to_concurrency_tasks_at_once() -> None:
    async with AsyncOmniQ(task_queue="memory://", worker="async") as oq:
        running = peak = 0

        @oq.task
        async def hold() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.05)
            running -= 1

        await hold.map([()] * 40)
        await oq.drain(concurrency=5)
        assert peak == 5
        assert await oq.task_queue.count(status=TaskStatus.SUCCESS) == 40


@pytest.mark.anyio
async def test_stop_after_the_grace_period_hands_running_tasks_back() -> None:
    async with AsyncOmniQ(task_queue="memory://", worker="async") as oq:
        started = anyio.Event()

        runs = 0

        @oq.task
        async def slow() -> str:
            nonlocal runs
            runs += 1
            if runs == 1:
                started.set()
                await anyio.sleep(30)
            return f"run {runs}"

        h = await slow.enqueue()
        w = await oq.start_worker(concurrency=2, shutdown_grace=0.2)
        with anyio.fail_after(10):
            await started.wait()
            await w.stop()
        task = await oq.get_task(h.id)
        # handed back at once (PENDING, claimable again), not left RUNNING until the lease lapses
        assert task is not None and task.status is TaskStatus.PENDING
        assert "worker stopped" in (task.error or "")
        async with oq.start_worker(concurrency=2):
            assert await h.result(timeout=10) == "run 2"


@pytest.mark.anyio
@pytest.mark.parametrize("prefetch", [0, 2])
async def test_prefetched_tasks_are_heartbeated_and_handed_back_on_stop(prefetch: int) -> None:
    async with AsyncOmniQ(task_queue="memory://", worker="async") as oq:
        started = anyio.Event()

        @oq.task
        async def slow() -> None:
            started.set()
            await anyio.sleep(30)

        handles = await slow.map([()] * 4)
        w = await oq.start_worker(
            concurrency=1, prefetch=prefetch, lease=0.6, heartbeat_interval=0.1, shutdown_grace=0
        )
        with anyio.fail_after(10):
            await started.wait()
        await anyio.sleep(1.0)  # past the lease: only heartbeats keep the claims
        q = oq.task_queue
        assert await q.count(status=TaskStatus.RUNNING) == 1 + prefetch
        for t in await q.list(status=TaskStatus.RUNNING):
            assert t.lease_until is not None and t.lease_until > time.time()
        with anyio.fail_after(10):
            await w.stop()
        states = [await oq.get_task(h.id) for h in handles]
        assert [t.status for t in states if t] == [TaskStatus.PENDING] * 4
        # the running task's claim counts; the held ones never started and keep attempt 0
        # (a stop must not use up their retries)
        assert [t.attempt for t in states if t] == [1, 0, 0, 0]
        assert states[0] is not None and "worker stopped" in (states[0].error or "")


@pytest.mark.anyio
async def test_adaptive_prefetch_holds_nothing_back_for_long_tasks() -> None:
    async with AsyncOmniQ(task_queue="memory://", worker="async") as oq:

        @oq.task
        async def long() -> None:
            await anyio.sleep(0.3)

        @oq.task
        async def short() -> None:
            return None

        handles = await long.map([()] * 5)
        async with oq.start_worker(concurrency=1) as w:
            assert w.worker.prefetch == 1  # nothing measured yet
            await handles[0].result(timeout=10)
            await handles[1].result(timeout=10)
            # two 0.3 s runs measured: another worker may take the rest
            assert w.worker.prefetch == 0
            assert await oq.task_queue.count(status=TaskStatus.RUNNING) == 1
            for h in handles[2:]:
                await h.result(timeout=10)
            await short.map([()] * 400)
            with anyio.fail_after(20):
                while await oq.task_queue.count(status=TaskStatus.SUCCESS) < 405:
                    await anyio.sleep(0.05)
            # the average follows the short runs: the worker holds up to 30 per slot
            assert w.worker.prefetch == PREFETCH_MAX_FACTOR == 30


@pytest.mark.anyio
async def test_worker_stops_claiming_while_results_cannot_be_written() -> None:
    from omniq.storage.memory import AsyncMemoryQueue, AsyncMemoryResultStorage

    class StalledResults(AsyncMemoryResultStorage):
        """Result writes wait until ``go`` is set (a database locked for a while)."""

        go = anyio.Event()

        async def set_many(self, results: Any) -> None:
            await self.go.wait()
            await super().set_many(results)

    name = f"memory://stall-{time.time_ns()}"
    results = StalledResults(name)
    async with AsyncOmniQ(
        task_queue=AsyncMemoryQueue(name), result_storage=results, worker="async"
    ) as oq:

        @oq.task
        async def quick() -> None:
            return None

        handles = await quick.map([()] * 200)
        async with oq.start_worker(concurrency=2, prefetch=3):
            try:
                await anyio.sleep(1.0)
                claimed = 200 - await oq.task_queue.count(status=TaskStatus.PENDING)
            finally:
                results.go.set()
            # room = 2 running + 3 held; at most that many more finished and unrecorded
            assert 5 <= claimed <= 2 * 5
            for h in handles:
                await h.result(timeout=20)


def test_unknown_worker_type_and_bad_options(oq: OmniQ) -> None:
    @oq.task
    def f() -> None: ...

    with pytest.raises(ConfigurationError, match="Did you mean 'thread'"):
        oq.start_worker_sync(worker="threadz")
    with pytest.raises(TypeError, match="unknown task option"):
        f.options(qeue="x")
    with pytest.raises(ConfigurationError, match="rate_limit"):
        oq.task(rate_limit="fast")(f)


def test_unregistered_task_fails_cleanly_and_worker_goes_on(oq: OmniQ) -> None:
    @oq.task
    def ok() -> int:
        return 1

    with oq.start_worker_sync():
        bad = oq.enqueue_sync("no_such_module:nothing")
        with pytest.raises(TaskFailedError, match="not registered"):
            bad.result_sync(timeout=10)
        assert ok.enqueue_sync().result_sync(timeout=10) == 1


def test_callbacks(oq: OmniQ, tmp_path: Path) -> None:
    got: list[object] = []

    @oq.task
    def on_ok(value: int) -> None:
        got.append(("ok", value))

    @oq.task
    def on_bad(task_id: str, error: str) -> None:
        got.append(("bad", error))

    @oq.task
    def work(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    with oq.start_worker_sync():
        work.options(on_success=on_ok).enqueue_sync(5).result_sync(timeout=10)
        with pytest.raises(TaskFailedError):
            work.options(on_failure=on_bad).enqueue_sync(-1).result_sync(timeout=10)
        deadline = time.time() + 10
        while len(got) < 2 and time.time() < deadline:
            time.sleep(0.02)
    assert ("ok", 5) in got and any(k == "bad" and "negative" in str(e) for k, e in got)


def test_rate_limit_spaces_runs(oq: OmniQ) -> None:
    starts: list[float] = []

    @oq.task(rate_limit="20/s")
    def limited() -> None:
        starts.append(time.monotonic())

    limited.map_sync([()] * 6)
    oq.drain_sync(concurrency=4)
    assert len(starts) == 6
    assert max(starts) - min(starts) >= 5 * (1 / 20) * 0.8


def test_gevent_worker_runs_sync_tasks(oq: OmniQ) -> None:
    pytest.importorskip("gevent", reason="gevent is an optional extra: omniq-core[gevent]")
    import threading

    threads: set[str] = set()

    @oq.task
    def where(x: int) -> int:
        threads.add(threading.current_thread().name)
        return x + 1

    with oq.start_worker_sync(worker="gevent", concurrency=8):
        hs = where.map_sync(range(50))
        assert [h.result_sync(timeout=20) for h in hs] == list(range(1, 51))
    assert threads == {"omniq-gevent"}


def test_three_schedulers_fire_each_due_time_once() -> None:
    """Three OmniQ instances (three schedulers) over one store: no duplicate fires."""
    import uuid

    import anyio

    name = f"memory://three-{uuid.uuid4().hex}"

    async def main() -> list[str]:
        apps = [AsyncOmniQ(task_queue=name, schedule_storage=name) for _ in range(3)]
        for app in apps:
            await app.connect()
        start = time.time()
        for _ in range(5):
            await apps[0].schedule("m:f", interval=0.05, start_at=start)

        fired: list[str] = []

        async def run(app: AsyncOmniQ) -> None:
            while time.time() < start + 1.0:
                fired.extend(t.id for t in await app.scheduler.tick())
                await anyio.sleep(0.003)

        async with anyio.create_task_group() as tg:
            for app in apps:
                tg.start_soon(run, app)
        stored = await apps[0].task_queue.count()
        assert stored == len(fired)
        return fired

    fired = anyio.run(main)
    assert len(fired) == len(set(fired)), "a due time was fired by two schedulers"
    assert len(fired) >= 5 * 10


def test_sweep_releases_dependents_stranded_by_a_crash(oq: OmniQ) -> None:
    """A worker killed between complete() and release_dependents() strands dependents;
    the periodic sweep releases them (and cancels those of a failed dependency)."""

    @oq.task
    def f() -> int:
        return 1

    a, bad = f.enqueue_sync(), f.enqueue_sync()
    b = f.options(depends_on=[a]).enqueue_sync()
    c = f.options(depends_on=[bad]).enqueue_sync()
    q = oq.task_queue
    ca = q.dequeue_sync(["default"], worker_id="w")
    cbad = q.dequeue_sync(["default"], worker_id="w")
    assert q.complete_sync(ca) and q.fail_sync(cbad, None, error="x")  # "crash" here
    assert b.status_sync() is TaskStatus.WAITING
    assert run_sync(oq.async_.lifecycle.sweep_waiting) == 2
    assert b.status_sync() is TaskStatus.PENDING
    assert c.status_sync() is TaskStatus.CANCELLED
    assert run_sync(oq.async_.lifecycle.sweep_waiting) == 0


def test_every_lifecycle_hook_reaches_a_plugin() -> None:
    from omniq.plugins import PluginManager, hookimpl

    seen: list[str] = []

    class Observer:
        @hookimpl
        def omniq_before_enqueue(self, task: object) -> None:
            task.metadata["traced"] = "yes"  # type: ignore[attr-defined]
            seen.append("before_enqueue")

        @hookimpl
        def omniq_task_started(self, task: object) -> None:
            seen.append("started")

        @hookimpl
        async def omniq_task_finished(self, task: object, result: object, error: object) -> None:
            seen.append(f"finished:{result}")

        @hookimpl
        def omniq_worker_startup(self, worker: object) -> None:
            seen.append("startup")

        @hookimpl
        def omniq_worker_shutdown(self, worker: object) -> None:
            seen.append("shutdown")

        @hookimpl
        def omniq_on_event(self, event: object) -> None:
            seen.append(f"event:{event.event_type.value}")  # type: ignore[attr-defined]

    pm = PluginManager()
    pm.load_plugins({"OMNIQ_DISABLE_PLUGIN_AUTOLOAD": "1"})
    pm.register(Observer())
    q = OmniQ(task_queue="memory://", plugins=pm)

    @q.task
    def seven() -> int:
        return 7

    with q:
        h = seven.enqueue_sync()
        q.drain_sync()
        assert h.result_sync(timeout=5) == 7
        task = q.get_task_sync(h.id)
        assert task is not None and task.metadata["traced"] == "yes"
    for name in (
        "before_enqueue",
        "started",
        "finished:7",
        "startup",
        "shutdown",
        "event:enqueued",
        "event:executing",
        "event:complete",
    ):
        assert name in seen, (name, seen)
