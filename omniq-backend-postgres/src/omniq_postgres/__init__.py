"""OmniQ's PostgreSQL backend: ``FOR UPDATE SKIP LOCKED`` claims, LISTEN/NOTIFY
wake-ups, a schema per app, versioned migrations under an advisory lock.

``postgresql://user:password@host:5432/database?schema=omniq`` (``postgres://`` too).
Names are imported lazily, so the plugin module (``omniq_postgres.plugin``) loads
without importing asyncpg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins.lazy import lazy_exports

if TYPE_CHECKING:
    from omniq_postgres._backend import PostgresBackend
    from omniq_postgres._database import Database
    from omniq_postgres._events import AsyncPostgresEventStorage
    from omniq_postgres._migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate
    from omniq_postgres._queue import AsyncPostgresQueue
    from omniq_postgres._results import AsyncPostgresResultStorage
    from omniq_postgres._schedules import AsyncPostgresScheduleStorage
    from omniq_postgres._sync import (
        PostgresEventStorage,
        PostgresQueue,
        PostgresResultStorage,
        PostgresScheduleStorage,
    )
    from omniq_postgres._url import DEFAULT_URL, PostgresOptions


__all__ = [
    "DEFAULT_URL",
    "LATEST_VERSION",
    "MIGRATIONS",
    "AsyncPostgresEventStorage",
    "AsyncPostgresQueue",
    "AsyncPostgresResultStorage",
    "AsyncPostgresScheduleStorage",
    "Database",
    "Migration",
    "PostgresBackend",
    "PostgresEventStorage",
    "PostgresOptions",
    "PostgresQueue",
    "PostgresResultStorage",
    "PostgresScheduleStorage",
    "migrate",
]


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "_queue": ["AsyncPostgresQueue"],
        "_results": ["AsyncPostgresResultStorage"],
        "_events": ["AsyncPostgresEventStorage"],
        "_schedules": ["AsyncPostgresScheduleStorage"],
        "_sync": [
            "PostgresQueue",
            "PostgresResultStorage",
            "PostgresEventStorage",
            "PostgresScheduleStorage",
        ],
        "_backend": ["PostgresBackend"],
        "_database": ["Database"],
        "_url": ["PostgresOptions", "DEFAULT_URL"],
        "_migrations": ["MIGRATIONS", "LATEST_VERSION", "Migration", "migrate"],
    },
)
