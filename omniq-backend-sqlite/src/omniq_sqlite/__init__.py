"""OmniQ's SQLite backend: the embedded default, safe across worker processes.

``sqlite:///relative.db`` (relative to ``OMNIQ_BASE_DIR`` or the current directory),
``sqlite:////abs/path.db`` or ``sqlite://:memory:``. Names are imported lazily, so the
plugin module (``omniq_sqlite.plugin``) loads without importing the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins.lazy import lazy_exports

if TYPE_CHECKING:
    from omniq_sqlite._backend import SQLiteBackend
    from omniq_sqlite._database import Database
    from omniq_sqlite._events import AsyncSQLiteEventStorage
    from omniq_sqlite._migrations import LATEST_VERSION, MIGRATIONS, Migration
    from omniq_sqlite._queue import AsyncSQLiteQueue
    from omniq_sqlite._results import AsyncSQLiteResultStorage
    from omniq_sqlite._schedules import AsyncSQLiteScheduleStorage
    from omniq_sqlite._sync import (
        SQLiteEventStorage,
        SQLiteQueue,
        SQLiteResultStorage,
        SQLiteScheduleStorage,
    )
    from omniq_sqlite._url import DEFAULT_URL, SQLiteOptions


__all__ = [
    "DEFAULT_URL",
    "LATEST_VERSION",
    "MIGRATIONS",
    "AsyncSQLiteEventStorage",
    "AsyncSQLiteQueue",
    "AsyncSQLiteResultStorage",
    "AsyncSQLiteScheduleStorage",
    "Database",
    "Migration",
    "SQLiteBackend",
    "SQLiteEventStorage",
    "SQLiteOptions",
    "SQLiteQueue",
    "SQLiteResultStorage",
    "SQLiteScheduleStorage",
]


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "_queue": ["AsyncSQLiteQueue"],
        "_results": ["AsyncSQLiteResultStorage"],
        "_events": ["AsyncSQLiteEventStorage"],
        "_schedules": ["AsyncSQLiteScheduleStorage"],
        "_sync": [
            "SQLiteQueue",
            "SQLiteResultStorage",
            "SQLiteEventStorage",
            "SQLiteScheduleStorage",
        ],
        "_backend": ["SQLiteBackend"],
        "_database": ["Database"],
        "_url": ["SQLiteOptions", "DEFAULT_URL"],
        "_migrations": ["MIGRATIONS", "LATEST_VERSION", "Migration"],
    },
)
