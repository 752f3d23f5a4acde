"""The conformance suite (omniq.testing) against the SQLite backend.

Each test gets its own database file under pytest's ``tmp_path``; the fixtures close every
component they made and delete the file (and its -wal/-shm companions) at teardown.
SQLite needs no server, so nothing here is skipped for a missing service.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
    component_factory,
)
from omniq_sqlite import (
    AsyncSQLiteEventStorage,
    AsyncSQLiteQueue,
    AsyncSQLiteResultStorage,
    AsyncSQLiteScheduleStorage,
)
from omniq_sqlite._staging import expand

Factory = Callable[[], Awaitable[Any]]


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        # missing_ok: SQLite may remove its -wal/-shm files itself as the last connection closes
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class SQLiteFixtures:
    """Fixture contract of omniq.testing: one fresh database file per test."""

    @pytest.fixture
    def sqlite_path(self, tmp_path: Path) -> Path:
        return tmp_path / "omniq.db"

    @pytest.fixture
    def sqlite_url(self, sqlite_path: Path) -> str:
        return f"sqlite:///{sqlite_path}"  # absolute path: sqlite:////tmp/.../omniq.db

    @pytest.fixture
    def backend_url(self, sqlite_url: str, sqlite_path: Path) -> Iterator[str]:
        yield sqlite_url
        _remove_db(sqlite_path)

    make_task_queue = component_factory(AsyncSQLiteQueue)
    make_result_storage = component_factory(AsyncSQLiteResultStorage)
    make_event_storage = component_factory(AsyncSQLiteEventStorage)
    make_schedule_storage = component_factory(AsyncSQLiteScheduleStorage)

    queue_options: dict[str, Any] = {}

    @pytest.fixture
    def process_spec(self, sqlite_url: str) -> dict[str, Any]:
        return {
            "task_queue": {
                "class": "omniq_sqlite:AsyncSQLiteQueue",
                "url": sqlite_url,
                "options": self.queue_options,
            },
            "schedule_storage": {
                "class": "omniq_sqlite:AsyncSQLiteScheduleStorage",
                "url": sqlite_url,
                "options": {},
            },
        }

    @pytest.fixture
    def corrupt_task(self) -> Callable[[Any, str], Awaitable[None]]:
        async def corrupt(task_queue: AsyncSQLiteQueue, task_id: str) -> None:
            # a separate, plain connection: what a damaged disk or a foreign writer does
            with sqlite3.connect(task_queue.path, timeout=10) as conn:
                expand(conn)  # a task of a staged bulk enqueue gets its own row first
                garbage = b"\x01\xc1 garbage, not msgpack"
                conn.execute("UPDATE tasks SET data = ? WHERE id = ?", (garbage, task_id))
            conn.close()

        return corrupt


class TestSQLiteQueue(SQLiteFixtures, TaskQueueConformance):
    pass


class TestSQLiteQueueStaged(SQLiteFixtures, TaskQueueConformance):
    """The whole queue contract again with every bulk enqueue staged (``stage_min=1``):
    staged tasks must be indistinguishable from inserted ones."""

    queue_options = {"stage_min": 1}
    make_task_queue = component_factory(AsyncSQLiteQueue, **queue_options)


class TestSQLiteResultStorage(SQLiteFixtures, ResultStorageConformance):
    pass


class TestSQLiteEventStorage(SQLiteFixtures, EventStorageConformance):
    pass


class TestSQLiteScheduleStorage(SQLiteFixtures, ScheduleStorageConformance):
    pass
