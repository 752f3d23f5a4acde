"""AsyncSQLiteQueue: the task queue on one SQLite file, shared by worker processes."""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.models import Task, TaskQuery, TaskResult, TaskStatus, WorkerInfo
from omniq.serialization.manager import SerializationManager
from omniq.storage.base import BaseResultStorage, BaseTaskQueue, Released
from omniq.storage.columns import TASK_COLUMNS, task_from_row, task_row
from omniq_sqlite import _task_sql as sql
from omniq_sqlite._component import SQLiteComponent
from omniq_sqlite._database import Poll
from omniq_sqlite._results import AsyncSQLiteResultStorage, store_results
from omniq_sqlite._staging import expand_range


class AsyncSQLiteQueue(SQLiteComponent, BaseTaskQueue):
    """Task queue with priorities, delays, TTL, leases and dependencies.

    Claims run in ``BEGIN IMMEDIATE`` with ``UPDATE ... RETURNING`` (one statement per
    batch); a RUNNING task whose lease lapsed is claimable again with ``attempt + 1``.
    ``dequeue(wait=...)`` is woken at once by enqueues in this process and, through the
    file's change watcher, by commits of other processes; it re-checks every
    ``poll_interval`` too (tasks becoming due by the clock, lapsed leases).
    """

    blocking_dequeue: ClassVar[bool] = False
    cross_process: ClassVar[bool] = True
    supports_pruning: ClassVar[bool] = True

    def __init__(self, url: str | None = None, *, default_lease: float = 30.0, **kw: Any) -> None:
        super().__init__(url, **kw)  # serializer, database, backend options
        self.default_lease = default_lease
        # ids completed by complete_many that had no dependents: their release is a no-op
        self._leaves: set[str] = set()

    def _wake(self) -> None:
        self._db.signal("tasks").notify()

    # --- enqueue -------------------------------------------------------------------------

    async def enqueue(self, task: Task) -> TaskStatus:
        """Store a task; idempotent by id (see :meth:`BaseTaskQueue.enqueue`)."""
        item = (task, task_row(self.serializer, task))
        db = await self._ensure()
        status = await db.run_batched("enqueue", sql.enqueue_encoded, item)
        self._wake()
        return status

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[TaskStatus]:
        """Store several tasks in one transaction (encoded off the event loop)."""
        if not tasks:
            return []
        stage_min = self._db.options.stage_min
        statuses = await self._write(
            sql.enqueue_tasks, self.serializer, builtins.list(tasks), stage_min
        )
        self._wake()
        return statuses

    # --- claim ---------------------------------------------------------------------------

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks in claim order, waiting up to ``wait`` s."""
        db = await self._ensure()
        signal = db.signal("tasks")
        poll = Poll(db, wait > 0)
        deadline = time.monotonic() + wait
        while True:
            seen = signal.version
            claimed, timed = await self._claim(queues, limit, worker_id, lease)
            if claimed:
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await poll.wait(signal, seen, remaining, soon=timed)

    async def _claim(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float
    ) -> tuple[builtins.list[Task], bool]:
        db = await self._ensure()
        while True:
            job = asyncio.ensure_future(db.run_write(sql.claim, queues, limit, worker_id, lease))
            try:
                claimed, timed = await asyncio.shield(job)
            except asyncio.CancelledError:
                # The claim may still commit on the connection's thread: hand those tasks
                # back at once instead of leaving them to lease expiry.
                job.add_done_callback(self._unclaim_lost)
                raise
            # decoded here, after the commit: not while holding the write lock
            tasks, corrupt = sql.decode_claims(self.serializer, claimed)
            if not corrupt:
                return tasks, timed
            try:
                await asyncio.shield(db.run_write(sql.fail_corrupt, corrupt))
            except asyncio.CancelledError:
                self._db.submit_nowait(sql.unclaim, [(t.id, t.attempt) for t in tasks])
                raise
            if tasks:
                return tasks, timed
            # every task claimed was corrupt (now FAILED): claim again at once

    def _unclaim_lost(self, job: asyncio.Future[tuple[builtins.list[sql.Claimed], bool]]) -> None:
        if job.cancelled() or job.exception() is not None or not job.result()[0]:
            return
        claims = [(row[1], row[2]) for row in job.result()[0]]
        self._db.submit_nowait(sql.unclaim, claims)

    # --- fenced updates (group commit) ----------------------------------------------------

    async def _fenced(self, op: sql.FenceOp) -> bool:
        db = await self._ensure()
        return await db.run_batched("fenced", sql.fenced, op)

    async def complete(self, task: Task) -> bool:
        """Mark a claimed task SUCCESS; False for a stale claim."""
        return await self._fenced(sql.FenceOp(sql.Fence.COMPLETE, task.id, task.attempt))

    async def complete_many(self, tasks: Sequence[Task]) -> builtins.list[bool]:
        """Complete several claimed tasks in one transaction (one bool per task)."""
        if not tasks:
            return []
        ok, leaves = await self._write(sql.complete_many, [(t.id, t.attempt) for t in tasks])
        self._remember_leaves(leaves)
        return ok

    def _remember_leaves(self, leaves: builtins.list[str]) -> None:
        if len(self._leaves) > _MAX_LEAVES:  # release_dependents was not called for them
            self._leaves.clear()
        self._leaves.update(leaves)

    async def complete_with_results(
        self, finished: Sequence[tuple[Task, TaskResult]], results: BaseResultStorage
    ) -> builtins.list[bool]:
        """Complete the tasks and store the results of the current claims in one
        transaction (one fsync) when ``results`` lives in this queue's database file;
        else as the base class does. Every result is encoded first: a
        SerializationError leaves nothing written."""
        db = await self._ensure()
        if not (isinstance(results, AsyncSQLiteResultStorage) and self.same_store(results)):
            return await super().complete_with_results(finished, results)
        if not finished:
            return []
        serializer = results.serializer
        rows = [results.encode(result, serializer) for _, result in finished]
        claims = [(task.id, task.attempt) for task, _ in finished]
        ok, leaves = await self._write(_complete_with_results, claims, rows)
        self._remember_leaves(leaves)
        db.signal("results").notify()
        return ok

    async def fail(
        self, task: Task, retry_at: float | None = None, *, error: str | None = None
    ) -> bool:
        """PENDING again at ``retry_at``, or FAILED when None; False for a stale claim."""
        ok = await self._fenced(sql.FenceOp(sql.Fence.FAIL, task.id, task.attempt, retry_at, error))
        if ok and retry_at is not None:
            self._wake()
        return ok

    async def unclaim(self, task: Task) -> bool:
        """PENDING again at once without counting the claim; False for a stale claim."""
        ok = await self._fenced(sql.FenceOp(sql.Fence.UNCLAIM, task.id, task.attempt))
        if ok:
            self._wake()
        return ok

    async def heartbeat(self, task: Task, lease: float | None = None) -> bool:
        """Extend the lease; False when the claim is no longer current."""
        return await self._fenced(
            sql.FenceOp(
                sql.Fence.HEARTBEAT, task.id, task.attempt, lease=lease or self.default_lease
            )
        )

    # --- reads and maintenance -------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The stored task with its effective status, or None."""
        return await self._run(_get, self.serializer, task_id)

    async def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a pending, waiting or running task; False when unknown or final."""
        return await self._run(sql.cancel, task_id, reason or "cancelled")

    async def requeue(self, task_id: str) -> Task | None:
        """Put an ended task back to PENDING with a fresh retry budget."""
        task = await self._run(sql.requeue, self.serializer, task_id)
        if task is not None:
            self._wake()
        return task

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue``."""
        await self._run(sql.pause_queue, queue)

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        await self._run(sql.resume_queue, queue)
        self._wake()

    async def paused_queues(self) -> builtins.set[str]:
        """The paused queues."""
        return await self._run(sql.paused_queues)

    async def record_worker(self, info: WorkerInfo) -> None:
        """Store a worker's heartbeat."""
        await self._run(sql.record_worker, info)

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        await self._run(sql.remove_worker, worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Live workers, oldest first."""
        return await self._run(sql.list_workers)

    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        """Number of tasks, optionally of one queue and/or effective status."""
        return await self._run(sql.count_tasks, queue, status)

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        """Tasks, oldest first, optionally filtered."""
        queue, status, limit = query.queue, query.status, query.limit
        return await self._run(
            sql.select_tasks,
            self.serializer,
            queue,
            status,
            limit,
            query.newest_first,
            query.offset,
        )

    async def purge(self, queue: str | None = None) -> int:
        """Delete every task (of one queue, or all); returns how many."""
        return await self._run(sql.purge, queue)

    async def cleanup_expired(self, now: float | None = None) -> builtins.list[str]:
        """Mark tasks past their TTL EXPIRED; return them (and those expired at claim)."""
        return await self._run(sql.expire, now or time.time())

    async def prune_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` tasks that ended before ``before``; returns how many."""
        return await self._run(sql.prune_finished, before, limit)

    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        """Make waiting dependents ready, or cancel them (transitively) on failure."""
        return await self.release_dependents_many([task_id], succeeded)

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        """:meth:`release_dependents` for several tasks in one transaction; nothing at
        all when :meth:`complete_many` found that none of them has dependents."""
        ids = builtins.list(task_ids)
        leaves = self._leaves
        if all(tid in leaves for tid in ids):
            leaves.difference_update(ids)
            return Released()
        leaves.difference_update(ids)
        ready, cancelled = await self._write(sql.release_many, ids, succeeded)
        if ready:
            self._wake()
        return Released(ready=ready, cancelled=cancelled)


#: Bound on the ids remembered between complete_many and release_dependents_many.
_MAX_LEAVES = 100_000


def _complete_with_results(
    conn: sqlite3.Connection, claims: builtins.list[tuple[str, int]], rows: builtins.list[Any]
) -> tuple[builtins.list[bool], builtins.list[str]]:
    """Complete the current claims and store their results in one transaction: the
    fence (attempt check) decides which results are written, so a stale attempt's
    result never replaces a newer one. Successes (a worker's batch) store their results
    in the task rows, with the same statement (see migration 5); other results go to
    the results table."""
    if all(row[1] == "success" for row in rows):
        return sql.complete_storing(conn, claims, [(row[4], row[3]) for row in rows])
    ok, leaves = sql.complete_many(conn, claims)
    store_results(conn, [row for row, accepted in zip(rows, ok, strict=True) if accepted])
    return ok, leaves


def _get(conn: Any, serializer: SerializationManager, task_id: str) -> Task | None:
    expand_range(conn, task_id, task_id)
    row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else task_from_row(serializer, row, time.time())
