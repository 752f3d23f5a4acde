"""TaskLifecycle: what happens around a task's end, and the periodic sweeps.

The worker finishes tasks through it (results of tasks that end without running,
dependents released or cancelled, callbacks enqueued), ``AsyncOmniQ.cancel`` records a
cancellation through it, and every worker runs its sweeps: the scheduler tick, the TTL
sweep, the sweep for dependents stranded by a crash, and the retention sweep. The
decisions themselves (what a dependency outcome means, which messages) are
:mod:`omniq.rules`; this module does the I/O around them, on the app's components.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from omniq import rules
from omniq.errors import TaskNotFinalError, TaskNotFoundError
from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus

if TYPE_CHECKING:
    from omniq.config import OmniQConfig
    from omniq.events import AsyncEventLogger
    from omniq.queue.scheduler import AsyncScheduler
    from omniq.storage.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue

log = logging.getLogger("omniq")

#: Seconds between TTL sweeps (expired tasks are never claimed in between; the sweep
#: records them as EXPIRED and cancels their dependents).
TTL_SWEEP_INTERVAL = 5.0
#: Seconds between sweeps for WAITING tasks whose dependencies already ended.
DEPENDENCY_SWEEP_INTERVAL = 10.0
#: Seconds between retention sweeps (expired results, old events, old finished tasks).
RETENTION_SWEEP_INTERVAL = 60.0
#: Rows deleted per call in a retention sweep (each call is one short write).
PRUNE_BATCH = 1000

Enqueue = Callable[[list[Task]], Awaitable[Any]]


class TaskLifecycle:
    """The end of a task's life and the sweeps, on one app's components."""

    def __init__(
        self,
        *,
        queue: BaseTaskQueue,
        results: BaseResultStorage,
        event_storage: BaseEventStorage | None,
        events: AsyncEventLogger,
        config: OmniQConfig,
        scheduler: AsyncScheduler,
        enqueue: Enqueue,
    ) -> None:
        self.queue = queue
        self.results = results
        self.event_storage = event_storage
        self.events = events
        self.config = config
        self.scheduler = scheduler
        self._enqueue = enqueue
        self._last_ttl_sweep = 0.0
        self._last_dependency_sweep = time.time()
        self._last_prune = 0.0

    # --- ends ------------------------------------------------------------------------------

    def result_expiry(self, task: Task) -> float | None:
        """When the task's result expires (its ``result_ttl`` or the configured one)."""
        ttl = task.result_ttl if task.result_ttl is not None else self.config.result_ttl
        return time.time() + ttl if ttl else None

    async def record_end(self, task_id: str, status: TaskStatus, reason: str) -> None:
        """The result and event of a task that ended without a worker finishing it
        (cancelled, expired, cancelled by a dependency). The stored task's own
        reason, when the backend recorded one, wins over ``reason``."""
        task = await self.queue.get(task_id)
        error = (task.error if task is not None else None) or reason
        await self.results.set(
            TaskResult(
                task_id=task_id,
                status=status,
                error=error,
                attempt=task.attempt if task else 0,
                expires_at=self.result_expiry(task) if task else None,
            )
        )
        kind = EventType.CANCELLED if status is TaskStatus.CANCELLED else EventType.EXPIRED
        self.events.emit(
            TaskEvent(
                event_type=kind,
                task_id=task_id,
                message=error,
                queue=task.queue if task else None,
                func=task.func if task else None,
            )
        )

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task (see ``AsyncOmniQ.cancel``) and, transitively, its dependents."""
        if not await self.queue.cancel(task_id, rules.CANCELLED_BY_REQUEST):
            return False
        await self.record_end(task_id, TaskStatus.CANCELLED, rules.CANCELLED_BY_REQUEST)
        await self.release([task_id], succeeded=False)
        return True

    async def requeue(self, task_id: str) -> Task:
        """Run an ended task again (see ``AsyncOmniQ.requeue``). Its old result goes
        first, so a waiter never takes it for the new run's."""
        task = await self.queue.get(task_id)
        if task is None:
            raise TaskNotFoundError(f"no task with id {task_id!r}", task_id=task_id)
        if not task.status.is_final:
            raise TaskNotFinalError(
                f"task {task_id} is {task.status.value}, not ended: only a task that "
                "ended (failed, cancelled, expired or succeeded) can be re-queued; "
                "cancel it first or wait for it"
            )
        await self.results.delete(task_id)
        fresh = await self.queue.requeue(task_id)
        if fresh is None:  # re-queued (or removed) by someone else meanwhile
            raise TaskNotFinalError(f"task {task_id} changed while it was re-queued; try again")
        self.events.emit(
            TaskEvent(
                event_type=EventType.REQUEUED,
                task_id=task_id,
                message=rules.REQUEUED_MESSAGE,
                queue=fresh.queue,
                func=fresh.func,
            )
        )
        return fresh

    async def release(self, task_ids: Sequence[str], *, succeeded: bool) -> None:
        """Release (or cancel) the dependents of ended tasks; record the cancelled."""
        if not task_ids:
            return
        released = await self.queue.release_dependents_many(list(task_ids), succeeded)
        for dep in released.cancelled:
            await self.record_end(dep, TaskStatus.CANCELLED, rules.DEPENDENCY_FAILED)

    async def after_finish(
        self, finished: Sequence[tuple[Task, Any]], *, succeeded: bool
    ) -> None:
        """After tasks ran to their end (value or error): one release of their
        dependents for the batch, then their ``on_success``/``on_failure`` callbacks."""
        if not finished:
            return
        await self.release([t.id for t, _ in finished], succeeded=succeeded)
        callbacks = []
        for task, value in finished:
            callback = task.on_success if succeeded else task.on_failure
            if callback:
                args = (value,) if succeeded else (task.id, value)
                callbacks.append(
                    Task(func=callback, args=args, queue=task.queue,
                         metadata={"callback_of": task.id})
                )  # fmt: skip
        if callbacks:
            await self._enqueue(callbacks)

    # --- sweeps ----------------------------------------------------------------------------

    async def maintenance(self, *, run_scheduler: bool = True) -> None:
        """One round of background duties, each at its own interval: the scheduler
        tick, the TTL sweep, the stranded-dependents sweep, the retention sweep."""
        if run_scheduler:
            await self.scheduler.tick()
        now = time.time()
        if now - self._last_ttl_sweep >= TTL_SWEEP_INTERVAL:
            self._last_ttl_sweep = now
            expired = await self.queue.cleanup_expired()
            for task_id in expired:
                await self.record_end(task_id, TaskStatus.EXPIRED, rules.EXPIRED_MESSAGE)
            await self.release(expired, succeeded=False)
        if now - self._last_dependency_sweep >= DEPENDENCY_SWEEP_INTERVAL:
            self._last_dependency_sweep = now
            await self.sweep_waiting()
        if now - self._last_prune >= RETENTION_SWEEP_INTERVAL:
            self._last_prune = now
            await self.prune(now)
        await self.events.flush()

    async def sweep_waiting(self, limit: int = 1000) -> int:
        """Release (or cancel) WAITING tasks whose dependencies have all ended.

        Normally the worker that finishes a dependency releases its dependents at once;
        this catches the ones stranded by a worker killed between the two steps.
        Returns how many dependencies were released again.
        """
        queue = self.queue
        released = 0
        now = time.time()
        for task in await queue.list(status=TaskStatus.WAITING, limit=limit):
            deps = [await queue.get(d) for d in task.depends_on]
            statuses = [d.effective_status(now) if d else None for d in deps]
            outcome, failed = rules.dependency_outcome(statuses)
            if outcome is TaskStatus.CANCELLED:
                assert failed is not None
                await self.release([task.depends_on[failed]], succeeded=False)
                released += 1
            elif outcome is TaskStatus.PENDING and deps:
                await self.release([task.depends_on[-1]], succeeded=True)
                released += 1
        return released

    async def prune(self, now: float | None = None) -> dict[str, int]:
        """Delete what the retention settings no longer keep, in bounded batches:
        results past their TTL, events older than ``event_retention``, and finished
        tasks that ended more than ``result_ttl`` ago (a finished task is kept as long
        as its result). Returns how many of each were deleted."""
        now = time.time() if now is None else now
        cfg = self.config
        counts = {"results": await self.results.cleanup_expired(now), "events": 0, "tasks": 0}
        if self.event_storage is not None and cfg.event_retention:
            await self.events.flush()
            counts["events"] = await self.event_storage.cleanup(now - cfg.event_retention)
        if cfg.result_ttl:
            before = now - cfg.result_ttl
            while True:
                n = await self.queue.prune_finished(before, PRUNE_BATCH)
                counts["tasks"] += n
                if n < PRUNE_BATCH:
                    break
        if any(counts.values()):
            log.info("retention sweep deleted %s", counts)
        return counts
