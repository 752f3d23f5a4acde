"""AsyncScheduler: turns due schedules into tasks, each due time exactly once.

Safe to run in every worker at once: ``claim_due`` hands each due time to one caller,
and the enqueued task's id is the fire id ``(schedule_id, fire_time)``, so even a fire
claimed twice (e.g. after a crash between claim and enqueue) is stored once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from omniq.models import Schedule, Task
from omniq.options import SCHEDULE_OPTIONS, resolve_options
from omniq.sync import SyncWrapper

if TYPE_CHECKING:
    from omniq.storage.base import BaseScheduleStorage

log = logging.getLogger("omniq.scheduler")


def fire_task(
    schedule: Schedule, fire_time: float, defaults: dict[str, float | int | None]
) -> Task:
    """The task that runs ``schedule`` for due time ``fire_time``."""
    r = resolve_options({name: getattr(schedule, name) for name in SCHEDULE_OPTIONS}, defaults)
    return Task(
        id=schedule.fire_id(fire_time),
        func=schedule.func,
        args=tuple(schedule.args),
        kwargs=dict(schedule.kwargs),
        queue=r.queue,
        priority=r.priority,
        timeout=r.timeout,
        retries=r.retries,
        retry_delay=r.retry_delay,
        expires_at=r.expires_at(fire_time),
        result_ttl=r.result_ttl,
        schedule_id=schedule.id,
        metadata={**r.metadata, "fire_time": fire_time},
    )


class AsyncScheduler:
    """Claims due schedules and enqueues their runs."""

    def __init__(
        self,
        storage: BaseScheduleStorage | None,
        *,
        enqueue: Callable[[list[Task]], Awaitable[Any]],
        defaults: Callable[[], dict[str, float | int | None]],
        interval: float = 1.0,
        batch: int = 100,
    ) -> None:
        self.storage = storage
        self._enqueue = enqueue
        self._defaults = defaults
        self.interval = interval
        self.batch = batch

    async def tick(self, now: float | None = None) -> list[Task]:
        """Enqueue every run due at ``now``; returns the tasks enqueued."""
        storage = self.storage
        if storage is None:
            return []
        now = time.time() if now is None else now
        defaults = self._defaults()
        tasks: list[Task] = []
        while True:
            claimed = await storage.claim_due(now, self.batch)
            for s in claimed:
                tasks.extend(fire_task(s, f, defaults) for f in s.fires(now))
            if len(claimed) < self.batch:
                break
        if tasks:
            await self._enqueue(tasks)
            log.debug("scheduler enqueued %d runs", len(tasks))
        return tasks


class Scheduler(SyncWrapper[AsyncScheduler], async_class=AsyncScheduler):
    """Blocking twin of :class:`AsyncScheduler`."""
