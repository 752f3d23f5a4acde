"""PostgresBackend: the four components over one schema and one asyncpg pool."""

from __future__ import annotations

from typing import Any

from omniq.serialization.manager import SerializationManager
from omniq.storage.base import BackendBundle
from omniq_postgres._database import Database
from omniq_postgres._events import AsyncPostgresEventStorage
from omniq_postgres._queue import AsyncPostgresQueue
from omniq_postgres._results import AsyncPostgresResultStorage
from omniq_postgres._schedules import AsyncPostgresScheduleStorage


class PostgresBackend(BackendBundle):
    """Task queue, results, events and schedules in one PostgreSQL schema, sharing one
    connection pool (and one LISTEN connection).

    ``async with PostgresBackend("postgresql://host/db", schema="app") as b: ...``;
    ``with`` works too. The components are the ``Async*`` classes; wrap one with its
    blocking twin (``PostgresQueue.wrap(b.task_queue)``) for ``*_sync`` calls.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        default_lease: float = 30.0,
        serializer: SerializationManager | None = None,
        **options: Any,
    ) -> None:
        self.database = Database.from_url(url, **options)
        shared: dict[str, Any] = {"serializer": serializer, "database": self.database}
        self.task_queue = AsyncPostgresQueue(default_lease=default_lease, **shared)
        self.result_storage = AsyncPostgresResultStorage(**shared)
        self.event_storage = AsyncPostgresEventStorage(**shared)
        self.schedule_storage = AsyncPostgresScheduleStorage(**shared)

    @property
    def url(self) -> str:
        """The URL (password redacted)."""
        return self.database.url

    async def close_shared(self) -> None:
        """Close the shared connection."""
        await self.database.close()
