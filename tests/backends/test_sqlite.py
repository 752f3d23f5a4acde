"""The conformance suite (omniq.testing) against the SQLite backend.

Each test gets its own database file under pytest's ``tmp_path``; the fixtures close every
component they made and delete the file (and its -wal/-shm companions) at teardown.
SQLite needs no server, so nothing here is skipped for a missing service.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
)
from omniq_sqlite import (
    AsyncSQLiteEventStorage,
    AsyncSQLiteQueue,
    AsyncSQLiteResultStorage,
    AsyncSQLiteScheduleStorage,
)

Factory = Callable[[], Awaitable[Any]]


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            p.unlink()


class SQLiteFixtures:
    """Fixture contract of omniq.testing: one fresh database file per test."""

    @pytest.fixture
    def sqlite_path(self, tmp_path: Path) -> Path:
        return tmp_path / "omniq.db"

    @pytest.fixture
    def sqlite_url(self, sqlite_path: Path) -> str:
        return f"sqlite:///{sqlite_path}"  # absolute path: sqlite:////tmp/.../omniq.db

    async def _factory(self, cls: type[Any], url: str, path: Path) -> AsyncIterator[Factory]:
        made: list[Any] = []

        async def make() -> Any:
            component = cls.from_url(url)
            await component.connect()
            made.append(component)
            return component

        yield make
        for component in made:
            await component.close()
        _remove_db(path)

    @pytest.fixture
    async def make_task_queue(self, sqlite_url: str, sqlite_path: Path) -> AsyncIterator[Factory]:
        async for f in self._factory(AsyncSQLiteQueue, sqlite_url, sqlite_path):
            yield f

    @pytest.fixture
    async def make_result_storage(
        self, sqlite_url: str, sqlite_path: Path
    ) -> AsyncIterator[Factory]:
        async for f in self._factory(AsyncSQLiteResultStorage, sqlite_url, sqlite_path):
            yield f

    @pytest.fixture
    async def make_event_storage(
        self, sqlite_url: str, sqlite_path: Path
    ) -> AsyncIterator[Factory]:
        async for f in self._factory(AsyncSQLiteEventStorage, sqlite_url, sqlite_path):
            yield f

    @pytest.fixture
    async def make_schedule_storage(
        self, sqlite_url: str, sqlite_path: Path
    ) -> AsyncIterator[Factory]:
        async for f in self._factory(AsyncSQLiteScheduleStorage, sqlite_url, sqlite_path):
            yield f

    @pytest.fixture
    def process_spec(self, sqlite_url: str) -> dict[str, Any]:
        return {
            "task_queue": {
                "class": "omniq_sqlite:AsyncSQLiteQueue",
                "url": sqlite_url,
                "options": {},
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
                garbage = b"\x01\xc1 garbage, not msgpack"
                conn.execute("UPDATE tasks SET data = ? WHERE id = ?", (garbage, task_id))
            conn.close()

        return corrupt


class TestSQLiteQueue(SQLiteFixtures, TaskQueueConformance):
    pass


class TestSQLiteResultStorage(SQLiteFixtures, ResultStorageConformance):
    pass


class TestSQLiteEventStorage(SQLiteFixtures, EventStorageConformance):
    pass


class TestSQLiteScheduleStorage(SQLiteFixtures, ScheduleStorageConformance):
    pass
