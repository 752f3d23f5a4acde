"""One async front over an ``OmniQ`` or an ``AsyncOmniQ`` for the dashboard.

An ``AsyncOmniQ`` is awaited directly (it must be used on the loop that serves the
dashboard, as when it is mounted in an async app or served by ``omniq dashboard``). An
``OmniQ`` runs on its own background loop: its blocking ``*_sync`` twins are called in a
worker thread, so the serving loop never blocks and no connection changes loops.
Only public methods of the app and of its components are used.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from starlette.concurrency import run_in_threadpool

from omniq.models import Schedule, Task, TaskEvent, TaskResult, TaskStatus, WorkerInfo
from omniq.models.enums import EventType

#: Statuses shown on the overview, in lifecycle order.
STATUSES: tuple[TaskStatus, ...] = (
    TaskStatus.PENDING,
    TaskStatus.WAITING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.EXPIRED,
)


async def _call(target: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """``await target.method(...)``, or ``target.method_sync(...)`` in a thread for a
    blocking twin."""
    sync = getattr(target, method + "_sync", None)
    if sync is not None and hasattr(target, "async_"):
        return await run_in_threadpool(sync, *args, **kwargs)
    return await getattr(target, method)(*args, **kwargs)


class Source:
    """What the dashboard reads and does, as coroutines."""

    def __init__(self, oq: Any) -> None:
        self.oq = oq

    @property
    def has_events(self) -> bool:
        """True when the app stores events."""
        return self.oq.event_storage is not None

    async def connect(self) -> None:
        """Connect the app (idempotent)."""
        await _call(self.oq, "connect")

    async def count(self, queue: str | None, status: TaskStatus | None) -> int:
        """Tasks of one queue and/or status."""
        n: int = await _call(self.oq.task_queue, "count", queue, status)
        return n

    async def list_tasks(
        self, queue: str | None, status: TaskStatus | None, limit: int, offset: int = 0
    ) -> list[Task]:
        """The newest ``limit`` tasks matching after skipping the ``offset`` newest,
        newest first."""
        tasks: list[Task] = await _call(
            self.oq.task_queue, "list", queue, status, limit, newest_first=True, offset=offset
        )
        return tasks

    async def get_task(self, task_id: str) -> Task | None:
        """The stored task, or None."""
        task: Task | None = await _call(self.oq.task_queue, "get", task_id)
        return task

    async def get_result(self, task_id: str) -> TaskResult | None:
        """The task's result (or one made from its final state), or None."""
        res: TaskResult | None = await _call(self.oq, "get_result", task_id)
        return res

    async def events(
        self,
        task_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        types: Iterable[EventType] | None = None,
    ) -> list[TaskEvent]:
        """Stored events, oldest first (empty when event storage is off)."""
        if not self.has_events:
            return []
        found: list[TaskEvent] = await _call(
            self.oq, "get_events", task_id=task_id, types=types, since=since, limit=limit
        )
        return found

    async def workers(self) -> list[WorkerInfo] | None:
        """Live workers, or None when the backend keeps no worker registry."""
        try:
            found: list[WorkerInfo] = await _call(self.oq, "list_workers")
        except NotImplementedError:
            return None
        return found

    async def paused_queues(self) -> set[str] | None:
        """Paused queues, or None when the backend cannot pause queues."""
        try:
            found: set[str] = await _call(self.oq, "paused_queues")
        except NotImplementedError:
            return None
        return found

    async def queues(self, workers: list[WorkerInfo] | None, paused: set[str] | None) -> list[str]:
        """Queues worth showing: default, those of live workers, paused ones and those
        of the 1,000 newest tasks."""
        names: set[str] = {"default", *(paused or ())}
        for w in workers or []:
            names.update(w.queues)
        for t in await self.list_tasks(None, None, 1000):
            names.add(t.queue)
        return sorted(names)

    async def counts(self, queues: list[str]) -> dict[str, dict[str, int]]:
        """Task counts by queue, then status."""
        return {q: {s.value: await self.count(q, s) for s in STATUSES} for q in queues}

    async def throughput(self, minutes: int = 15) -> list[dict[str, Any]]:
        """Tasks finished per minute over the last ``minutes`` (from the event store)."""
        now = time.time()
        start = (int(now // 60) - minutes + 1) * 60
        buckets = [{"t": start + 60 * i, "complete": 0, "error": 0} for i in range(minutes)]
        for e in await self.events(
            since=float(start), types=[EventType.COMPLETE, EventType.ERROR], limit=100_000
        ):
            i = int((e.timestamp - start) // 60)
            if 0 <= i < minutes:
                buckets[i][e.event_type.value] += 1
        return buckets

    async def schedules(self) -> list[Schedule]:
        """Every schedule."""
        found: list[Schedule] = await _call(self.oq, "list_schedules")
        return found

    # --- actions ---------------------------------------------------------------------------

    async def requeue(self, task_id: str) -> Task:
        """Run an ended task again."""
        task: Task = await _call(self.oq, "requeue", task_id)
        return task

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task."""
        done: bool = await _call(self.oq, "cancel", task_id)
        return done

    async def pause_queue(self, queue: str) -> None:
        """Pause a queue."""
        await _call(self.oq, "pause_queue", queue)

    async def resume_queue(self, queue: str) -> None:
        """Resume a queue."""
        await _call(self.oq, "resume_queue", queue)

    async def schedule_action(self, action: str, schedule_id: str) -> bool:
        """``pause``, ``resume`` or ``delete`` a schedule."""
        done: bool = await _call(self.oq, f"{action}_schedule", schedule_id)
        return done
