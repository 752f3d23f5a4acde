"""AsyncScheduler: turns due schedules into tasks, each due time exactly once.

Safe to run in every worker at once: ``claim_due`` hands each due time to one caller,
and the enqueued task's id is the fire id ``(schedule_id, fire_time)``, so even a fire
claimed twice (e.g. after a crash between claim and enqueue) is stored once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from omniq.models import Schedule, Task
from omniq.sync import SyncWrapper

if TYPE_CHECKING:
    from omniq.core import AsyncOmniQ

log = logging.getLogger("omniq.scheduler")


def fire_task(
    schedule: Schedule, fire_time: float, defaults: dict[str, float | int | None]
) -> Task:
    """The task that runs ``schedule`` for due time ``fire_time``."""
    ttl = schedule.ttl if schedule.ttl is not None else defaults.get("ttl")
    return Task(
        id=schedule.fire_id(fire_time),
        func=schedule.func,
        args=tuple(schedule.args),
        kwargs=dict(schedule.kwargs),
        queue=schedule.queue,
        priority=schedule.priority,
        timeout=schedule.timeout if schedule.timeout is not None else defaults.get("timeout"),
        retries=int(
            schedule.retries if schedule.retries is not None else defaults.get("retries") or 0
        ),
        retry_delay=float(
            schedule.retry_delay
            if schedule.retry_delay is not None
            else defaults.get("retry_delay") or 1.0
        ),
        expires_at=fire_time + ttl if ttl else None,
        result_ttl=schedule.result_ttl,
        schedule_id=schedule.id,
        metadata={**schedule.metadata, "fire_time": fire_time},
    )


class AsyncScheduler:
    """Claims due schedules and enqueues their runs."""

    def __init__(self, oq: AsyncOmniQ, *, interval: float = 1.0, batch: int = 100) -> None:
        self.oq = oq
        self.interval = interval
        self.batch = batch

    async def tick(self, now: float | None = None) -> list[Task]:
        """Enqueue every run due at ``now``; returns the tasks enqueued."""
        storage = self.oq.schedule_storage
        if storage is None:
            return []
        now = time.time() if now is None else now
        defaults = self.oq.task_defaults()
        tasks: list[Task] = []
        while True:
            claimed = await storage.claim_due(now, self.batch)
            for s in claimed:
                tasks.extend(fire_task(s, f, defaults) for f in s.fires(now))
            if len(claimed) < self.batch:
                break
        if tasks:
            await self.oq.enqueue_prepared(tasks)
            log.debug("scheduler enqueued %d runs", len(tasks))
        return tasks


class Scheduler(SyncWrapper[AsyncScheduler], async_class=AsyncScheduler):
    """Blocking twin of :class:`AsyncScheduler`."""
