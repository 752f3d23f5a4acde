"""AsyncEventProcessor: query stored events and follow new ones."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

import anyio

from omniq.models import EventType, TaskEvent
from omniq.sync import SyncWrapper, run_sync

if TYPE_CHECKING:
    from omniq.storage.base import BaseEventStorage


class AsyncEventProcessor:
    """Reads events from an event storage."""

    def __init__(self, storage: BaseEventStorage) -> None:
        self.storage = storage

    async def query(
        self,
        task_id: str | None = None,
        types: Iterable[EventType] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[TaskEvent]:
        """Events matching the filters, oldest first."""
        return await self.storage.query(
            task_id=task_id, types=types, since=since, until=until, limit=limit
        )

    async def follow(
        self,
        task_id: str | None = None,
        types: Iterable[EventType] | None = None,
        since: float | None = None,
        poll: float = 0.5,
    ) -> AsyncIterator[TaskEvent]:
        """Yield matching events as they are written (polls the storage)."""
        wanted = list(types) if types is not None else None
        cursor = since if since is not None else time.time()
        seen: set[str] = set()
        while True:
            events = await self.storage.query(task_id=task_id, types=wanted, since=cursor)
            for e in events:
                if e.id not in seen:
                    seen.add(e.id)
                    yield e
            if events:
                cursor = events[-1].timestamp
                seen = {e.id for e in events if e.timestamp >= cursor}
            await anyio.sleep(poll)


class EventProcessor(SyncWrapper[AsyncEventProcessor], async_class=AsyncEventProcessor):
    """Blocking twin of :class:`AsyncEventProcessor`."""

    def follow_sync(
        self, task_id: str | None = None, types: Iterable[EventType] | None = None
    ) -> Iterator[TaskEvent]:
        """Blocking iterator over new events (polls once per half second)."""
        cursor = time.time()
        seen: set[str] = set()
        while True:
            events = run_sync(self._async.query, task_id, types, cursor)
            for e in events:
                if e.id not in seen:
                    seen.add(e.id)
                    yield e
            if events:
                cursor = events[-1].timestamp
            time.sleep(0.5)
