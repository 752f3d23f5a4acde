"""Conformance tests for task queues (DESIGN §7: claims, leases, order, TTL, deps, cancel)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter

import anyio
import pytest

from omniq.models import Task, TaskResult, TaskStatus, WorkerInfo
from omniq.storage.base import BaseTaskQueue
from omniq.testing.base import (
    ConformanceBase,
    Factory,
    eventually,
    make_task,
    optional_fixture,
    require,
)

N_TASKS = 2000
N_CONSUMERS = 8


class TaskQueueConformance(ConformanceBase):
    """Every task queue must pass these. Needs the ``make_task_queue`` fixture."""

    @pytest.fixture
    async def task_queue(self, make_task_queue: Factory) -> BaseTaskQueue:
        return await make_task_queue()  # type: ignore[no-any-return]

    # --- basics ----------------------------------------------------------------------

    async def test_enqueue_then_get(self, task_queue: BaseTaskQueue) -> None:
        t = make_task(1, kwargs={"k": [1, 2]}, metadata={"trace": "abc"})
        assert await task_queue.enqueue(t) is TaskStatus.PENDING
        got = await task_queue.get(t.id)
        assert got is not None and got.id == t.id
        assert got.func == t.func and list(got.args) == [1] and got.kwargs == {"k": [1, 2]}
        assert got.metadata == {"trace": "abc"}
        assert got.status is TaskStatus.PENDING
        assert await task_queue.get("no-such-task") is None

    async def test_enqueue_is_idempotent_by_id(self, task_queue: BaseTaskQueue) -> None:
        t = make_task()
        await task_queue.enqueue(t)
        assert await task_queue.enqueue(t.copy()) is TaskStatus.PENDING
        await task_queue.enqueue_many([t.copy(), t.copy()])
        assert await task_queue.count() == 1
        first = await task_queue.dequeue(["default"], worker_id="w", lease=30)
        assert first is not None and first.id == t.id
        assert await task_queue.dequeue(["default"], worker_id="w", lease=30) is None
        # a producer re-sending after a crash does not resurrect a running task
        assert await task_queue.enqueue(t.copy()) is TaskStatus.RUNNING

    async def test_enqueue_many_returns_statuses(self, task_queue: BaseTaskQueue) -> None:
        tasks = [make_task(i) for i in range(50)]
        statuses = await task_queue.enqueue_many(tasks)
        assert statuses == [TaskStatus.PENDING] * 50
        assert await task_queue.count(status=TaskStatus.PENDING) == 50

    async def test_claim_marks_running_with_attempt_and_lease(
        self, task_queue: BaseTaskQueue
    ) -> None:
        t = make_task()
        await task_queue.enqueue(t)
        before = time.time()
        c = await task_queue.dequeue(["default"], worker_id="w1", lease=30)
        assert c is not None and c.id == t.id
        assert c.status is TaskStatus.RUNNING and c.attempt == 1 and c.worker_id == "w1"
        assert c.lease_until is not None and c.lease_until >= before + 29
        stored = await task_queue.get(t.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING

    async def test_complete_and_fail_final(self, task_queue: BaseTaskQueue) -> None:
        a, b = make_task(1), make_task(2)
        await task_queue.enqueue_many([a, b])
        ca = await task_queue.dequeue(["default"], worker_id="w")
        cb = await task_queue.dequeue(["default"], worker_id="w")
        assert ca is not None and cb is not None
        assert await task_queue.complete(ca)
        assert await task_queue.fail(cb, None, error="ValueError: boom")
        sa, sb = await task_queue.get(a.id), await task_queue.get(b.id)
        assert sa is not None and sa.status is TaskStatus.SUCCESS
        assert sb is not None and sb.status is TaskStatus.FAILED and "boom" in (sb.error or "")
        assert await task_queue.dequeue(["default"], worker_id="w") is None

    @pytest.fixture
    def _make_result_storage(self, request: pytest.FixtureRequest) -> Factory | None:
        # looked up in a sync fixture: async tests cannot resolve async fixtures by name
        return optional_fixture(request, "make_result_storage")  # type: ignore[no-any-return]

    async def test_complete_with_results(
        self, task_queue: BaseTaskQueue, _make_result_storage: Factory | None
    ) -> None:
        make_results = _make_result_storage
        if make_results is None:
            pytest.skip("backend gives no make_result_storage fixture")
        results = await make_results()
        tasks = [make_task(i) for i in range(5)]
        await task_queue.enqueue_many(tasks)
        claimed = await task_queue.dequeue_many(["default"], 5, worker_id="w", lease=30)
        assert len(claimed) == 5
        # the last claim goes stale: its lease lapses and another worker claims it again
        await task_queue.fail(claimed[-1], time.time(), error="lost")
        again = await task_queue.dequeue(["default"], worker_id="w2", lease=30)
        assert again is not None and again.id == claimed[-1].id
        done = [
            (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=i, attempt=t.attempt))
            for i, t in enumerate(claimed)
        ]
        accepted = await task_queue.complete_with_results(done, results)
        assert accepted == [True, True, True, True, False]
        for i, t in enumerate(claimed[:4]):
            stored = await task_queue.get(t.id)
            assert stored is not None and stored.status is TaskStatus.SUCCESS
            r = await results.get(t.id)
            assert r is not None and r.status is TaskStatus.SUCCESS and r.result == i
        stale = await task_queue.get(again.id)
        assert stale is not None and stale.status is TaskStatus.RUNNING
        assert await task_queue.complete_with_results([], results) == []

    async def _two_attempts(self, task_queue: BaseTaskQueue) -> tuple[Task, Task]:
        """One task claimed twice: the first claim lost (its lease handed on), the
        second current. Returns (stale claim, current claim)."""
        await task_queue.enqueue(make_task())
        first = await task_queue.dequeue(["default"], worker_id="w1", lease=30)
        assert first is not None
        assert await task_queue.fail(first, time.time(), error="lease lost")
        second = await task_queue.dequeue(["default"], worker_id="w2", lease=30, wait=5)
        assert second is not None and second.id == first.id
        assert second.attempt > first.attempt, "a new claim must carry a new fencing token"
        return first, second

    async def test_stale_result_never_replaces_newer_success(
        self, task_queue: BaseTaskQueue, _make_result_storage: Factory | None
    ) -> None:
        if _make_result_storage is None:
            pytest.skip("backend gives no make_result_storage fixture")
        results = await _make_result_storage()
        stale, current = await self._two_attempts(task_queue)

        def ok(t: Task, value: str) -> TaskResult:
            return TaskResult(
                task_id=t.id, status=TaskStatus.SUCCESS, result=value, attempt=t.attempt
            )

        assert await task_queue.complete_with_results([(current, ok(current, "new"))], results) == [
            True
        ]
        assert await task_queue.complete_with_results([(stale, ok(stale, "old"))], results) == [
            False
        ], "a stale claim's completion must be refused"
        r = await results.get(current.id)
        assert r is not None and r.result == "new" and r.attempt == current.attempt, (
            f"the newer attempt's result must stay; found {r!r}"
        )

    async def test_stale_result_is_not_written_while_newer_attempt_runs(
        self, task_queue: BaseTaskQueue, _make_result_storage: Factory | None
    ) -> None:
        if _make_result_storage is None:
            pytest.skip("backend gives no make_result_storage fixture")
        results = await _make_result_storage()
        stale, current = await self._two_attempts(task_queue)
        late = TaskResult(
            task_id=stale.id, status=TaskStatus.SUCCESS, result="old", attempt=stale.attempt
        )
        assert await task_queue.complete_with_results([(stale, late)], results) == [False]
        assert await results.get(stale.id) is None, (
            "a stale claim wrote its result while a newer attempt was running"
        )
        # the newer attempt fails for good: its FAILED result stands
        assert await task_queue.fail(current, None, error="boom")
        await results.set(
            TaskResult(task_id=current.id, status=TaskStatus.FAILED, error="boom",
                       attempt=current.attempt)
        )  # fmt: skip
        assert await task_queue.complete_with_results([(stale, late)], results) == [False]
        r = await results.get(current.id)
        assert r is not None and r.status is TaskStatus.FAILED, (
            f"a stale SUCCESS replaced the newer FAILED result: {r!r}"
        )

    async def test_prune_finished_deletes_only_old_finished_tasks(
        self, task_queue: BaseTaskQueue
    ) -> None:
        require(task_queue, "supports_pruning")
        tasks = [make_task(i) for i in range(5)]
        await task_queue.enqueue_many(tasks)
        claimed = await task_queue.dequeue_many(["default"], 3, worker_id="w", lease=30)
        assert len(claimed) == 3
        assert await task_queue.complete(claimed[0])
        assert await task_queue.fail(claimed[1], None, error="boom")
        assert await task_queue.cancel(tasks[4].id)
        # claimed[2] runs, tasks[3] waits: never pruned
        assert await task_queue.prune_finished(time.time() - 3600) == 0, (
            "nothing ended an hour ago"
        )
        assert await task_queue.prune_finished(time.time() + 1, limit=2) == 2
        assert await task_queue.prune_finished(time.time() + 1) == 1
        assert await task_queue.prune_finished(time.time() + 1) == 0
        left = {t.id: t.status for t in await task_queue.list(limit=10)}
        assert left == {claimed[2].id: TaskStatus.RUNNING, tasks[3].id: TaskStatus.PENDING}, (
            f"only finished tasks may be pruned; left: {left}"
        )

    async def test_fail_with_retry_at_requeues(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_delay")
        await task_queue.enqueue(make_task())
        c = await task_queue.dequeue(["default"], worker_id="w")
        assert c is not None
        assert await task_queue.fail(c, time.time() + 0.4, error="retry me")
        assert await task_queue.dequeue(["default"], worker_id="w") is None
        again = await task_queue.dequeue(["default"], worker_id="w", wait=5)
        assert again is not None and again.id == c.id and again.attempt == 2

    async def test_unclaim_gives_the_task_back_uncounted(self, task_queue: BaseTaskQueue) -> None:
        first, second = make_task(1), make_task(2)
        await task_queue.enqueue_many([first, second])
        claimed = await task_queue.dequeue_many(["default"], 2, worker_id="w")
        assert [c.id for c in claimed] == [first.id, second.id]
        assert await task_queue.unclaim(claimed[1])
        assert not await task_queue.unclaim(claimed[1])  # no longer this claim
        stored = await task_queue.get(second.id)
        assert stored is not None and stored.status is TaskStatus.PENDING
        again = await task_queue.dequeue(["default"], worker_id="w2", wait=5)
        assert again is not None and again.id == second.id
        if type(task_queue).unclaim is not BaseTaskQueue.unclaim:
            # the backend implements unclaim: the handed-back claim did not count
            assert again.attempt == 1
        assert await task_queue.complete(again)
        assert await task_queue.complete(claimed[0])

    # --- exclusive claim -------------------------------------------------------------

    async def test_exclusive_claim_concurrent_consumers(self, make_task_queue: Factory) -> None:
        producer: BaseTaskQueue = await make_task_queue()
        tasks = [make_task(i) for i in range(N_TASKS)]
        for i in range(0, N_TASKS, 500):
            await producer.enqueue_many(tasks[i : i + 500])
        consumers = [await make_task_queue() for _ in range(N_CONSUMERS)]
        claims: list[str] = []

        async def consume(q: BaseTaskQueue, n: int) -> None:
            idle = 0
            while idle < 3:
                got = (
                    await q.dequeue_many(["default"], 7, worker_id=f"w{n}", lease=60)
                    if n % 2
                    else [
                        t for t in [await q.dequeue(["default"], worker_id=f"w{n}", lease=60)] if t
                    ]
                )
                if not got:
                    idle += 1
                    await anyio.sleep(0.01)
                    continue
                idle = 0
                for t in got:
                    claims.append(t.id)
                    assert await q.complete(t)

        async with anyio.create_task_group() as tg:
            for n, q in enumerate(consumers):
                tg.start_soon(consume, q, n)
        dupes = [tid for tid, c in Counter(claims).items() if c > 1]
        assert not dupes, f"{len(dupes)} tasks were claimed more than once"
        assert len(claims) == N_TASKS, f"{N_TASKS - len(claims)} tasks never claimed"
        assert await producer.count(status=TaskStatus.SUCCESS) == N_TASKS

    async def test_exclusive_claim_across_processes(
        self, make_task_queue: Factory, request: pytest.FixtureRequest
    ) -> None:
        process_spec = optional_fixture(request, "process_spec")
        if not process_spec or "task_queue" not in process_spec:
            pytest.skip("backend gives no process_spec (in-process only)")
        producer: BaseTaskQueue = await make_task_queue()
        tasks = [make_task(i) for i in range(N_TASKS)]
        for i in range(0, N_TASKS, 500):
            await producer.enqueue_many(tasks[i : i + 500])
        spec = json.dumps(process_spec["task_queue"])
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _CONSUMER_SCRIPT, spec, f"p{n}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(N_CONSUMERS)
        ]
        claims: list[str] = []
        for p in procs:
            out, err = await anyio.to_thread.run_sync(p.communicate)
            assert p.returncode == 0, f"consumer process failed:\n{err}"
            claims.extend(out.split())
        dupes = [tid for tid, c in Counter(claims).items() if c > 1]
        assert not dupes, f"{len(dupes)} tasks were claimed by two processes"
        assert len(set(claims)) == N_TASKS
        assert await producer.count(status=TaskStatus.SUCCESS) == N_TASKS

    # --- leases and fencing ----------------------------------------------------------

    async def test_lapsed_lease_is_reclaimed_and_stale_claim_fenced(
        self, task_queue: BaseTaskQueue, make_task_queue: Factory
    ) -> None:
        other: BaseTaskQueue = await make_task_queue()
        await task_queue.enqueue(make_task())
        first = await task_queue.dequeue(["default"], worker_id="dead", lease=0.5)
        assert first is not None
        second = await other.dequeue(["default"], worker_id="alive", lease=30, wait=10)
        assert second is not None and second.id == first.id, "lapsed lease was not re-claimed"
        assert second.attempt == first.attempt + 1
        # the first worker wakes up late: everything it sends is rejected
        assert not await task_queue.heartbeat(first, 30)
        assert not await task_queue.complete(first)
        assert not await task_queue.fail(first, None, error="late")
        stored = await other.get(first.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING
        assert stored.attempt == second.attempt
        assert await other.complete(second)
        done = await other.get(first.id)
        assert done is not None and done.status is TaskStatus.SUCCESS

    async def test_heartbeat_keeps_the_claim(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        c = await task_queue.dequeue(["default"], worker_id="w", lease=1.0)
        assert c is not None
        for _ in range(4):
            await anyio.sleep(0.4)
            assert await task_queue.heartbeat(c, 1.0)
        assert await task_queue.dequeue(["default"], worker_id="x", lease=1.0) is None
        assert await task_queue.complete(c)

    async def test_completed_task_is_never_reclaimed(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        c = await task_queue.dequeue(["default"], worker_id="w", lease=0.3)
        assert c is not None and await task_queue.complete(c)
        await anyio.sleep(0.6)
        assert await task_queue.dequeue(["default"], worker_id="w", lease=0.3) is None
        assert not await task_queue.complete(c.copy(attempt=c.attempt + 1))

    # --- ordering and delay ----------------------------------------------------------

    async def test_queue_order_then_priority_then_fifo(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_priority")
        low = [make_task(i, queue="low", priority=9) for i in range(3)]
        high = [
            make_task(10, queue="high", priority=1),
            make_task(11, queue="high", priority=5),
            make_task(12, queue="high", priority=5),
            make_task(13, queue="high", priority=3),
        ]
        for t in low + high:
            await task_queue.enqueue(t)
        order = []
        while c := await task_queue.dequeue(["high", "low"], worker_id="w"):
            order.append(c.args[0])
            await task_queue.complete(c)
        assert order == [11, 12, 13, 10, 0, 1, 2]

    async def test_dequeue_many_respects_order_and_limit(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(i) for i in range(10)])
        got = await task_queue.dequeue_many(["default"], 4, worker_id="w")
        assert [t.args[0] for t in got] == [0, 1, 2, 3]
        rest = await task_queue.dequeue_many(["default"], 100, worker_id="w")
        assert [t.args[0] for t in rest] == list(range(4, 10))

    async def test_other_queues_are_not_claimed(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task(queue="other"))
        assert await task_queue.dequeue(["default"], worker_id="w") is None
        assert await task_queue.dequeue(["other"], worker_id="w") is not None

    async def test_delayed_task_not_claimable_early(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_delay")
        t = make_task(run_at=time.time() + 0.6)
        await task_queue.enqueue(t)
        await task_queue.enqueue(make_task(2))
        first = await task_queue.dequeue(["default"], worker_id="w")
        assert first is not None and first.args[0] == 2
        assert await task_queue.dequeue(["default"], worker_id="w") is None
        late = await task_queue.dequeue(["default"], worker_id="w", wait=10)
        assert late is not None and late.id == t.id
        assert time.time() >= t.run_at  # type: ignore[operator]

    async def test_wait_wakes_on_enqueue(
        self, task_queue: BaseTaskQueue, make_task_queue: Factory
    ) -> None:
        producer: BaseTaskQueue = await make_task_queue()
        t0 = time.monotonic()
        assert await task_queue.dequeue(["default"], worker_id="w", wait=0.3) is None
        assert time.monotonic() - t0 >= 0.25
        result: list[Task | None] = []

        async def consumer() -> None:
            result.append(await task_queue.dequeue(["default"], worker_id="w", wait=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.sleep(0.2)
            await producer.enqueue(make_task(7))
        assert result and result[0] is not None and result[0].args[0] == 7

    # --- TTL -------------------------------------------------------------------------

    async def test_expired_task_is_never_claimed(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_ttl")
        t = make_task(expires_at=time.time() + 0.3)
        keep = make_task(2)
        await task_queue.enqueue_many([t, keep])
        await anyio.sleep(0.5)
        c = await task_queue.dequeue(["default"], worker_id="w")
        assert c is not None and c.id == keep.id
        assert await task_queue.dequeue(["default"], worker_id="w") is None
        stored = await task_queue.get(t.id)
        assert stored is not None and stored.status is TaskStatus.EXPIRED
        assert t.id in await task_queue.cleanup_expired()
        assert t.id not in await task_queue.cleanup_expired()  # reported once

    async def test_cleanup_expired_marks_unclaimed_tasks(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_ttl")
        t = make_task(expires_at=time.time() + 0.2)
        await task_queue.enqueue(t)
        await anyio.sleep(0.4)
        assert await task_queue.cleanup_expired() == [t.id]
        assert await task_queue.count(status=TaskStatus.EXPIRED) == 1

    # --- dependencies ----------------------------------------------------------------

    async def _run_one(self, q: BaseTaskQueue, ok: bool = True) -> Task:
        c = await q.dequeue(["default"], worker_id="w")
        assert c is not None, "expected a claimable task"
        assert await (q.complete(c) if ok else q.fail(c, None, error="boom"))
        return c

    async def test_dependency_chain_releases_in_order(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_dependencies")
        a = make_task(1)
        b = make_task(2, depends_on=[a.id])
        c = make_task(3, depends_on=[b.id])
        assert await task_queue.enqueue(a) is TaskStatus.PENDING
        assert await task_queue.enqueue(b) is TaskStatus.WAITING
        assert await task_queue.enqueue(c) is TaskStatus.WAITING
        assert (await self._run_one(task_queue)).id == a.id
        assert await task_queue.dequeue(["default"], worker_id="w") is None
        assert (await task_queue.release_dependents(a.id, True)).ready == [b.id]
        assert (await self._run_one(task_queue)).id == b.id
        assert (await task_queue.release_dependents(b.id, True)).ready == [c.id]
        assert (await self._run_one(task_queue)).id == c.id

    async def test_dependency_diamond(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_dependencies")
        a = make_task(1)
        b, c = make_task(2, depends_on=[a.id]), make_task(3, depends_on=[a.id])
        d = make_task(4, depends_on=[b.id, c.id])
        await task_queue.enqueue_many([a, b, c, d])
        await self._run_one(task_queue)
        assert sorted((await task_queue.release_dependents(a.id, True)).ready) == sorted(
            [b.id, c.id]
        )
        first = await self._run_one(task_queue)
        assert (await task_queue.release_dependents(first.id, True)).ready == []
        stored = await task_queue.get(d.id)
        assert stored is not None and stored.status is TaskStatus.WAITING
        second = await self._run_one(task_queue)
        assert (await task_queue.release_dependents(second.id, True)).ready == [d.id]
        assert (await self._run_one(task_queue)).id == d.id

    async def test_failed_dependency_cancels_dependents(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_dependencies")
        a = make_task(1)
        b = make_task(2, depends_on=[a.id])
        c = make_task(3, depends_on=[b.id])
        await task_queue.enqueue_many([a, b, c])
        await self._run_one(task_queue, ok=False)
        released = await task_queue.release_dependents(a.id, False)
        assert released.ready == [] and sorted(released.cancelled) == sorted([b.id, c.id])
        for t in (b, c):
            stored = await task_queue.get(t.id)
            assert stored is not None and stored.status is TaskStatus.CANCELLED
        assert await task_queue.dequeue(["default"], worker_id="w") is None

    async def test_dependency_already_finished_at_enqueue(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_dependencies")
        ok, bad = make_task(1), make_task(2)
        await task_queue.enqueue_many([ok, bad])
        await self._run_one(task_queue, ok=True)
        await self._run_one(task_queue, ok=False)
        assert await task_queue.enqueue(make_task(3, depends_on=[ok.id])) is TaskStatus.PENDING
        assert await task_queue.enqueue(make_task(4, depends_on=[bad.id])) is TaskStatus.CANCELLED

    # --- cancellation ----------------------------------------------------------------

    async def test_cancel_queued_task_never_runs(self, task_queue: BaseTaskQueue) -> None:
        t, keep = make_task(1), make_task(2)
        await task_queue.enqueue_many([t, keep])
        assert await task_queue.cancel(t.id, "not needed")
        c = await task_queue.dequeue(["default"], worker_id="w")
        assert c is not None and c.id == keep.id
        assert await task_queue.dequeue(["default"], worker_id="w") is None
        stored = await task_queue.get(t.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED
        assert not await task_queue.cancel(t.id)
        assert not await task_queue.cancel("no-such-task")

    async def test_cancel_running_task_fences_the_worker(self, task_queue: BaseTaskQueue) -> None:
        require(task_queue, "supports_cancel_running")
        await task_queue.enqueue(make_task())
        c = await task_queue.dequeue(["default"], worker_id="w")
        assert c is not None
        assert await task_queue.cancel(c.id)
        assert not await task_queue.heartbeat(c, 30)
        assert not await task_queue.complete(c)
        stored = await task_queue.get(c.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED

    async def test_cancel_finished_task_is_refused(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue(make_task())
        c = await self._run_one(task_queue)
        assert not await task_queue.cancel(c.id)

    # --- re-queue of ended tasks ------------------------------------------------------

    async def test_requeue_failed_task_runs_again_with_fresh_retries(
        self, task_queue: BaseTaskQueue
    ) -> None:
        t = make_task(7, retries=1)
        await task_queue.enqueue(t)
        for _ in range(2):  # two runs: the first retried at once, the second final
            c = await task_queue.dequeue(["default"], worker_id="w", lease=30)
            assert c is not None, "the task should be claimable for each of its two runs"
            last = c
            assert await task_queue.fail(c, time.time() if c.attempt == 1 else None, error="boom")
        stored = await task_queue.get(t.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        fresh = await task_queue.requeue(t.id)
        assert fresh is not None and fresh.status is TaskStatus.PENDING
        assert fresh.error is None and fresh.retries == 1 + 2, "retries grow by attempts made"
        again = await task_queue.dequeue(["default"], worker_id="w2", lease=30)
        assert again is not None and again.id == t.id, "a re-queued task is claimable at once"
        assert again.attempt == 3 and list(again.args) == [7], "attempt keeps counting"
        # the claim of the old run is stale: it can neither complete nor fail the new run
        assert not await task_queue.complete(last)
        assert await task_queue.complete(again)

    async def test_requeue_refuses_unknown_and_live_tasks(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.requeue("no-such-task") is None
        t = make_task()
        await task_queue.enqueue(t)
        assert await task_queue.requeue(t.id) is None, "a PENDING task is not re-queued"
        c = await task_queue.dequeue(["default"], worker_id="w", lease=30)
        assert c is not None
        assert await task_queue.requeue(t.id) is None, "a RUNNING task is not re-queued"
        stored = await task_queue.get(t.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING and stored.attempt == 1

    async def test_requeue_cancelled_and_succeeded_tasks(self, task_queue: BaseTaskQueue) -> None:
        cancelled, done = make_task(1), make_task(2)
        await task_queue.enqueue_many([cancelled, done])
        assert await task_queue.cancel(cancelled.id, "not now")
        c = await task_queue.dequeue(["default"], worker_id="w", lease=30)
        assert c is not None and c.id == done.id
        assert await task_queue.complete(c)
        for t in (cancelled, done):
            fresh = await task_queue.requeue(t.id)
            assert fresh is not None and fresh.status is TaskStatus.PENDING, t.id
        claimed = {c.id for c in await task_queue.dequeue_many(["default"], 10, worker_id="w")}
        assert claimed == {cancelled.id, done.id}, "both re-queued tasks run again"

    # --- paused queues ----------------------------------------------------------------

    async def test_pause_and_resume_queues(self, task_queue: BaseTaskQueue) -> None:
        assert await task_queue.paused_queues() == set()
        await task_queue.pause_queue("reports")
        await task_queue.pause_queue("reports")  # idempotent
        await task_queue.pause_queue("emails")
        assert await task_queue.paused_queues() == {"reports", "emails"}
        await task_queue.enqueue(make_task(1, queue="reports"))
        assert await task_queue.count("reports") == 1, "a paused queue still takes tasks"
        await task_queue.resume_queue("reports")
        await task_queue.resume_queue("never-paused")
        assert await task_queue.paused_queues() == {"emails"}
        c = await task_queue.dequeue(["reports"], worker_id="w")
        assert c is not None and list(c.args) == [1]

    # --- live workers ----------------------------------------------------------------

    async def test_worker_registry(self, task_queue: BaseTaskQueue) -> None:
        now = time.time()
        a = WorkerInfo(id="host-a:1:x", host="host-a", pid=1, queues=["default", "high"],
                       started_at=now - 5, last_seen=now, expires_at=now + 60, running=2)
        b = WorkerInfo(id="host-b:2:y", host="host-b", pid=2, started_at=now - 1,
                       last_seen=now, expires_at=now + 60)
        dead = WorkerInfo(id="host-c:3:z", host="host-c", pid=3, started_at=now - 9,
                          last_seen=now - 100, expires_at=now - 40)
        for info in (b, a, dead):
            await task_queue.record_worker(info)
        listed = await task_queue.list_workers()
        assert [w.id for w in listed] == [a.id, b.id], "live workers, oldest first"
        assert listed[0].queues == ["default", "high"] and listed[0].running == 2
        await task_queue.record_worker(
            WorkerInfo(id=a.id, host="host-a", pid=1, started_at=a.started_at,
                       last_seen=now + 1, expires_at=now + 61, processed=10)
        )
        listed = await task_queue.list_workers()
        assert [w.processed for w in listed] == [10, 0], "a heartbeat replaces the record"
        await task_queue.remove_worker(a.id)
        await task_queue.remove_worker("never-seen")
        assert [w.id for w in await task_queue.list_workers()] == [b.id]

    # --- inspection ------------------------------------------------------------------

    async def test_count_list_purge(self, task_queue: BaseTaskQueue) -> None:
        await task_queue.enqueue_many([make_task(i, queue="a") for i in range(3)])
        await task_queue.enqueue_many([make_task(i, queue="b") for i in range(2)])
        assert await task_queue.count() == 5
        assert await task_queue.count("a") == 3
        assert await task_queue.count("b", TaskStatus.PENDING) == 2
        listed = await task_queue.list("a")
        assert [t.args[0] for t in listed] == [0, 1, 2]
        assert len(await task_queue.list(limit=2)) == 2
        newest = await task_queue.list("a", limit=2, newest_first=True)
        assert [t.args[0] for t in newest] == [2, 1], "the newest two, newest first"
        newest_b = await task_queue.list(None, TaskStatus.PENDING, 1, newest_first=True)
        assert [(t.queue, t.args[0]) for t in newest_b] == [("b", 1)]
        assert await task_queue.purge("a") == 3
        assert await task_queue.count() == 2
        assert await task_queue.purge() == 2
        assert await task_queue.count() == 0

    async def test_list_offset_pages(self, task_queue: BaseTaskQueue) -> None:
        """``offset`` skips that many matching tasks in the requested order, on every
        backend alike: with and without a status filter, both orders, past the end."""
        ps = [make_task(i, queue="p") for i in range(7)]
        await task_queue.enqueue_many(ps)
        await task_queue.enqueue_many([make_task(i, queue="o") for i in range(2)])
        done = set()
        for _ in range(2):
            c = await task_queue.dequeue(["p"], worker_id="w", lease=30)
            assert c is not None, "two of queue p's seven tasks should be claimable"
            assert await task_queue.complete(c)
            done.add(c.id)
        order = [t.id for t in ps]  # oldest first
        pending = [i for i in order if i not in done]
        finished = [i for i in order if i in done]

        async def ids(*args: object, **kw: object) -> list[str]:
            return [t.id for t in await task_queue.list(*args, **kw)]  # type: ignore[arg-type]

        for k in (0, 3, 6, 7, 20):
            assert await ids("p", limit=3, offset=k) == order[k : k + 3], f"oldest, offset {k}"
            newest = order[::-1][k : k + 3]
            got = await ids("p", limit=3, offset=k, newest_first=True)
            assert got == newest, f"newest first, offset {k}"
        for k in (0, 1, 2, 4, 5, 9):
            got = await ids("p", TaskStatus.PENDING, 3, offset=k)
            assert got == pending[k : k + 3], f"pending oldest first, offset {k}"
            got = await ids("p", TaskStatus.PENDING, 3, offset=k, newest_first=True)
            assert got == pending[::-1][k : k + 3], f"pending newest first, offset {k}"
        assert await ids("p", TaskStatus.SUCCESS, 3, offset=1, newest_first=True) == [
            finished[0]
        ], "the older finished task, newest first after skipping one"
        all_pending = await ids(None, TaskStatus.PENDING, 100)
        assert len(all_pending) == 7, "five pending in p and two in o"
        got = await ids(None, TaskStatus.PENDING, 3, offset=4, newest_first=True)
        assert got == all_pending[::-1][4:7], "an offset over queues counts matching tasks"
        assert await ids(None, None, 4, offset=9) == [], "an offset past the end lists nothing"
        with pytest.raises(ValueError, match="offset"):
            await task_queue.list("p", offset=-1)

    # --- bad input -------------------------------------------------------------------

    async def test_corrupt_payload_does_not_block_other_tasks(
        self, task_queue: BaseTaskQueue, request: pytest.FixtureRequest
    ) -> None:
        corrupt_task = optional_fixture(request, "corrupt_task")
        if corrupt_task is None:
            pytest.skip("backend gives no corrupt_task fixture (it stores no payload bytes)")
        tasks = [make_task(i) for i in range(3)]
        await task_queue.enqueue_many(tasks)
        await corrupt_task(task_queue, tasks[1].id)
        claimed = []
        for _ in range(5):
            c = await task_queue.dequeue(["default"], worker_id="w")
            if c is None:
                break
            claimed.append(c.id)
            await task_queue.complete(c)
        assert claimed == [tasks[0].id, tasks[2].id]
        assert await eventually(lambda: _count_is(task_queue, TaskStatus.FAILED, 1), timeout=5), (
            "the corrupt task should be recorded as FAILED"
        )


async def _count_is(q: BaseTaskQueue, status: TaskStatus, n: int) -> bool:
    return await q.count(status=status) == n


_CONSUMER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from omniq.plugins.specs import load_object

    async def main():
        spec = json.loads(sys.argv[1])
        q = load_object(spec["class"]).from_url(spec["url"], **spec.get("options", {}))
        await q.connect()
        claimed, idle = [], 0
        while idle < 5:
            got = await q.dequeue_many(["default"], 5, worker_id=sys.argv[2], lease=60)
            if not got:
                idle += 1
                await asyncio.sleep(0.05)
                continue
            idle = 0
            for t in got:
                claimed.append(t.id)
                assert await q.complete(t), "complete of a fresh claim was rejected"
        await q.close()
        print("\\n".join(claimed))

    asyncio.run(main())
    """
)
