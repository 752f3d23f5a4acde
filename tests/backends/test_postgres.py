"""The conformance suite (omniq.testing) against the PostgreSQL backend.

Runs against the real server on 127.0.0.1:5432 (``POSTGRES_TEST_URL`` overrides).
Each test gets its own schema; the fixture drops it (``CASCADE``) at teardown. Without
a server the tests are skipped; under ``OMNIQ_REQUIRE_SERVICES=1`` they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest
from omniq_postgres import (
    AsyncPostgresEventStorage,
    AsyncPostgresQueue,
    AsyncPostgresResultStorage,
    AsyncPostgresScheduleStorage,
)

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
    component_factory,
)

T = TypeVar("T")

SERVER_URL = os.environ.get("POSTGRES_TEST_URL", "postgresql://postgres@127.0.0.1:5432/test")


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh loop in another thread (sync fixtures are called
    from inside the test's running loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _probe() -> str | None:
    try:
        conn = await asyncpg.connect(SERVER_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        return f"PostgreSQL not reachable at {SERVER_URL}: {e}"
    await conn.close()
    return None


def require_postgres() -> None:
    """Skip without the server; fail instead under OMNIQ_REQUIRE_SERVICES=1."""
    message = run_sync(_probe)
    if message is None:
        return
    if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (OMNIQ_REQUIRE_SERVICES=1)")
    pytest.skip(message)


async def drop_schema(schema: str) -> None:
    """Drop a test's schema and everything in it."""
    conn = await asyncpg.connect(SERVER_URL, timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def schema_url(schema: str) -> str:
    """The server URL with a ``schema`` query parameter."""
    sep = "&" if "?" in SERVER_URL else "?"
    return f"{SERVER_URL}{sep}schema={schema}"


class PostgresFixtures:
    """Fixture contract of omniq.testing: one fresh schema per test."""

    @pytest.fixture
    def pg_schema(self) -> str:
        return f"omniq_test_{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def backend_url(self, pg_schema: str) -> Iterator[str]:
        require_postgres()
        yield schema_url(pg_schema)
        run_sync(lambda: drop_schema(pg_schema))

    make_task_queue = component_factory(AsyncPostgresQueue)
    make_result_storage = component_factory(AsyncPostgresResultStorage)
    make_event_storage = component_factory(AsyncPostgresEventStorage)
    make_schedule_storage = component_factory(AsyncPostgresScheduleStorage)

    @pytest.fixture
    def process_spec(self, backend_url: str) -> dict[str, Any]:
        return {
            "task_queue": {
                "class": "omniq_postgres:AsyncPostgresQueue",
                "url": backend_url,
                "options": {},
            },
            "schedule_storage": {
                "class": "omniq_postgres:AsyncPostgresScheduleStorage",
                "url": backend_url,
                "options": {},
            },
        }

    @pytest.fixture
    def corrupt_task(self, pg_schema: str) -> Callable[[Any, str], Awaitable[None]]:
        async def corrupt(task_queue: AsyncPostgresQueue, task_id: str) -> None:
            # a separate, plain connection: what a damaged disk or a foreign writer does
            conn = await asyncpg.connect(SERVER_URL, timeout=10)
            try:
                await conn.execute(
                    f'UPDATE "{pg_schema}".tasks SET data = $1 WHERE id = $2',
                    b"\x01\xc1 garbage, not msgpack",
                    task_id,
                )
            finally:
                await conn.close()

        return corrupt


class TestPostgresQueue(PostgresFixtures, TaskQueueConformance):
    pass


class TestPostgresResultStorage(PostgresFixtures, ResultStorageConformance):
    pass


class TestPostgresEventStorage(PostgresFixtures, EventStorageConformance):
    pass


class TestPostgresScheduleStorage(PostgresFixtures, ScheduleStorageConformance):
    pass
