"""OmniQ's SQLite backend: the embedded default, safe across worker processes.

``sqlite:///relative.db`` (relative to ``OMNIQ_BASE_DIR`` or the current directory),
``sqlite:////abs/path.db`` or ``sqlite://:memory:``. Names are imported lazily, so the
plugin module (``omniq_sqlite.plugin``) loads without importing the driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

_EXPORTS = {
    "AsyncSQLiteQueue": "_queue",
    "AsyncSQLiteResultStorage": "_results",
    "AsyncSQLiteEventStorage": "_events",
    "AsyncSQLiteScheduleStorage": "_schedules",
    "SQLiteQueue": "_sync",
    "SQLiteResultStorage": "_sync",
    "SQLiteEventStorage": "_sync",
    "SQLiteScheduleStorage": "_sync",
    "SQLiteBackend": "_backend",
    "Database": "_database",
    "SQLiteOptions": "_url",
    "DEFAULT_URL": "_url",
    "MIGRATIONS": "_migrations",
    "LATEST_VERSION": "_migrations",
    "Migration": "_migrations",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'omniq_sqlite' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"omniq_sqlite.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
