"""OmniQ's PostgreSQL backend: ``FOR UPDATE SKIP LOCKED`` claims, LISTEN/NOTIFY
wake-ups, a schema per app, versioned migrations under an advisory lock.

``postgresql://user:password@host:5432/database?schema=omniq`` (``postgres://`` too).
Names are imported lazily, so the plugin module (``omniq_postgres.plugin``) loads
without importing asyncpg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

_EXPORTS = {
    "AsyncPostgresQueue": "_queue",
    "AsyncPostgresResultStorage": "_results",
    "AsyncPostgresEventStorage": "_events",
    "AsyncPostgresScheduleStorage": "_schedules",
    "PostgresQueue": "_sync",
    "PostgresResultStorage": "_sync",
    "PostgresEventStorage": "_sync",
    "PostgresScheduleStorage": "_sync",
    "PostgresBackend": "_backend",
    "Database": "_database",
    "PostgresOptions": "_url",
    "DEFAULT_URL": "_url",
    "MIGRATIONS": "_migrations",
    "LATEST_VERSION": "_migrations",
    "Migration": "_migrations",
    "migrate": "_migrations",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'omniq_postgres' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"omniq_postgres.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
