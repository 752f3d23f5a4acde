"""SQLiteBackend: the four components over one database and one connection."""

from __future__ import annotations

from typing import Any

from omniq.serialization.manager import SerializationManager
from omniq.storage.base import BackendBundle
from omniq_sqlite._database import Database
from omniq_sqlite._events import AsyncSQLiteEventStorage
from omniq_sqlite._queue import AsyncSQLiteQueue
from omniq_sqlite._results import AsyncSQLiteResultStorage
from omniq_sqlite._schedules import AsyncSQLiteScheduleStorage


class SQLiteBackend(BackendBundle):
    """Task queue, results, events and schedules in one SQLite file, sharing one
    connection (so ``sqlite://:memory:`` works for all four in one process).

    ``async with SQLiteBackend("sqlite:///app.db") as b: await b.task_queue.enqueue(t)``;
    ``with`` works too. The components are the ``Async*`` classes; wrap one with its
    blocking twin (``SQLiteQueue.wrap(b.task_queue)``) for ``*_sync`` calls.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        default_lease: float = 30.0,
        serializer: SerializationManager | None = None,
        base_dir: str | None = None,
        **options: Any,
    ) -> None:
        self.database = Database.from_url(url, base_dir=base_dir, **options)
        shared: dict[str, Any] = {"serializer": serializer, "database": self.database}
        self.task_queue = AsyncSQLiteQueue(default_lease=default_lease, **shared)
        self.result_storage = AsyncSQLiteResultStorage(**shared)
        self.event_storage = AsyncSQLiteEventStorage(**shared)
        self.schedule_storage = AsyncSQLiteScheduleStorage(**shared)

    @property
    def url(self) -> str:
        """The ``sqlite://`` URL of the database."""
        return self.database.url

    async def close_shared(self) -> None:
        """Close the shared connection."""
        await self.database.close()
