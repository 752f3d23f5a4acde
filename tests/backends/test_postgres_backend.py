"""PostgreSQL backend specifics beyond the conformance suite: plugin, URLs, connection
errors, the shared pool, migrations under a lock, schemas, sync twins, pruning.

Against the real server (see :mod:`tests.backends.test_postgres`); each test uses a
schema of its own and drops it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from omniq_postgres import (
    LATEST_VERSION,
    MIGRATIONS,
    AsyncPostgresQueue,
    AsyncPostgresResultStorage,
    PostgresBackend,
    PostgresQueue,
)

from omniq.errors import BackendUnavailableError, ConfigurationError
from omniq.models import Task, TaskResult, TaskStatus
from omniq.plugins import get_plugin_manager
from tests.backends.test_postgres import (
    SERVER_URL,
    drop_schema,
    require_postgres,
    run_sync,
    schema_url,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def schema() -> Iterator[str]:
    require_postgres()
    name = f"omniq_test_{uuid.uuid4().hex[:12]}"
    yield name
    run_sync(lambda: drop_schema(name))


def task(i: int = 0, **fields: object) -> Task:
    return Task(func="tests:noop", args=(i,), **fields)  # type: ignore[arg-type]


# --- plugin and URLs -------------------------------------------------------------------


def test_plugin_registers_the_backend() -> None:
    spec, _ = get_plugin_manager().backends()["postgres"]
    assert spec.schemes == ("postgresql", "postgres")
    assert spec.default_url == "postgresql://127.0.0.1:5432/postgres"
    assert spec.package == "omniq-backend-postgres"
    assert spec.bundle == "omniq_postgres:PostgresBackend"


def test_url_options_and_redaction() -> None:
    q = AsyncPostgresQueue("postgres://u:s3cret@db.example:6543/app?schema=mine&max_size=4")
    opts = q.database.options
    assert (opts.schema, opts.max_size, opts.host, opts.database) == (
        "mine", 4, "db.example:6543", "app",
    )  # fmt: skip
    assert "s3cret" not in repr(q) and "s3cret" not in q.url
    assert opts.dsn.startswith("postgresql://") and "schema" not in opts.dsn
    # keywords win over the query
    assert AsyncPostgresQueue("postgresql:///x?schema=a", schema="b").schema == "b"


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("postgresql://h/db?schema=bad-name", {}, "schema name"),
        ("postgresql://h/db", {"schema": "1x"}, "schema name"),
        ("postgresql://h/db", {"bogus": 1}, "unknown PostgreSQL backend option"),
        ("postgresql://h:notaport/db", {}, "malformed PostgreSQL URL"),
        ("mysql://h/db", {}, "not a PostgreSQL URL"),
        ("postgresql://h/db?max_size=many", {}, "bad PostgreSQL backend option"),
    ],
)
def test_bad_urls_and_options(url: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AsyncPostgresQueue(url, **options)


# --- connection errors ------------------------------------------------------------------


async def test_unknown_user_names_host_and_database_without_password() -> None:
    require_postgres()
    q = AsyncPostgresQueue("postgresql://no_such_user_x:hunter2@127.0.0.1:5432/test")
    with pytest.raises(ConfigurationError) as info:
        await q.connect()
    text = str(info.value)
    assert "127.0.0.1:5432" in text and "'test'" in text and "no_such_user_x" in text
    assert "hunter2" not in text


async def test_missing_database_is_named() -> None:
    require_postgres()
    q = AsyncPostgresQueue("postgresql://postgres:hunter2@127.0.0.1:5432/no_such_db_x")
    with pytest.raises(ConfigurationError, match=r"no_such_db_x.*does not exist") as info:
        await q.connect()
    assert "hunter2" not in str(info.value)


async def test_unreachable_server_fails_within_the_timeout() -> None:
    with socket_port() as port:
        q = AsyncPostgresQueue(
            f"postgresql://postgres:hunter2@127.0.0.1:{port}/test?connect_timeout=2"
        )
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{port}") as info:
            await q.connect()
        assert time.monotonic() - t0 < 5
        assert "hunter2" not in str(info.value) and "'test'" in str(info.value)


class socket_port:
    """A local port nothing listens on (bound, never listening, while in use)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# --- bundle, schema, migrations -----------------------------------------------------------


async def test_bundle_shares_one_pool_and_completes_with_results(schema: str) -> None:
    async with PostgresBackend(SERVER_URL, schema=schema) as b:
        pools = {id(c.database) for c in b.components}
        assert len(pools) == 1
        q, results = b.task_queue, b.result_storage
        t = task()
        assert await q.enqueue(t) is TaskStatus.PENDING
        c = await q.dequeue(["default"], worker_id="w")
        assert c is not None
        r = TaskResult(task_id=c.id, status=TaskStatus.SUCCESS, result=42, attempt=c.attempt)
        waiter = asyncio.ensure_future(results.wait(c.id, timeout=10))
        await asyncio.sleep(0.05)
        assert await q.complete_with_results([(c, r)], results) == [True]
        got = await waiter
        assert got is not None and got.result == 42
        assert b.database.is_open
    assert not b.database.is_open


async def test_schemas_are_isolated(schema: str) -> None:
    other = f"{schema}_b"
    try:
        async with (
            AsyncPostgresQueue(schema_url(schema)) as a,
            AsyncPostgresQueue(schema_url(other)) as b,
        ):
            await a.enqueue(task(1))
            assert await a.count() == 1
            assert await b.count() == 0
            assert await b.dequeue(["default"], worker_id="w") is None
    finally:
        await drop_schema(other)


async def test_many_workers_starting_at_once_migrate_once(schema: str) -> None:
    queues = [AsyncPostgresQueue(schema_url(schema)) for _ in range(10)]
    await asyncio.gather(*(q.connect() for q in queues))
    try:
        conn = await asyncpg.connect(SERVER_URL)
        try:
            rows = await conn.fetch(f'SELECT version FROM "{schema}".omniq_migrations')
        finally:
            await conn.close()
        assert sorted(r[0] for r in rows) == [m.version for m in MIGRATIONS]
        assert max(r[0] for r in rows) == LATEST_VERSION
    finally:
        for q in queues:
            await q.close()


async def test_result_storage_alone_still_fenced_with_another_pool(schema: str) -> None:
    url = schema_url(schema)
    async with AsyncPostgresQueue(url) as q, AsyncPostgresResultStorage(url) as results:
        await q.enqueue(task())
        first = await q.dequeue(["default"], worker_id="a", lease=30)
        assert first is not None
        assert await q.fail(first, time.time(), error="lost")
        second = await q.dequeue(["default"], worker_id="b", lease=30, wait=5)
        assert second is not None
        late = TaskResult(task_id=first.id, status=TaskStatus.SUCCESS, result="old",
                          attempt=first.attempt)  # fmt: skip
        assert await q.complete_with_results([(first, late)], results) == [False]
        assert await results.get(first.id) is None


async def test_prune_in_bounded_batches(schema: str) -> None:
    async with AsyncPostgresQueue(schema_url(schema)) as q:
        await q.enqueue_many([task(i) for i in range(25)])
        claimed = await q.dequeue_many(["default"], 25, worker_id="w")
        assert await q.complete_many(claimed) == [True] * 25
        later = time.time() + 1
        assert [await q.prune_finished(later, limit=10) for _ in range(4)] == [10, 10, 5, 0]


async def test_wait_is_woken_by_notify_from_another_pool(schema: str) -> None:
    url = schema_url(schema)
    # a slow fallback poll: only the notification can wake the waiter quickly
    async with (
        AsyncPostgresQueue(url, poll_interval=30) as consumer,
        AsyncPostgresQueue(url) as producer,
    ):
        waiter = asyncio.ensure_future(consumer.dequeue(["default"], worker_id="w", wait=20))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await producer.enqueue(task(5))
        got = await asyncio.wait_for(waiter, 15)
        assert got is not None and got.args == (5,)
        assert time.monotonic() - t0 < 10, "woken by the 30 s fallback poll, not by NOTIFY"


def test_sync_twin(schema: str) -> None:
    q = PostgresQueue(schema_url(schema))
    try:
        assert q.enqueue_sync(task(3)) is TaskStatus.PENDING
        c = q.dequeue_sync(["default"], worker_id="w")
        assert c is not None and c.args == (3,)
        assert q.complete_sync(c)
        assert q.count_sync(status=TaskStatus.SUCCESS) == 1
    finally:
        q.close_sync()


async def test_newer_schema_is_refused(schema: str) -> None:
    async with AsyncPostgresQueue(schema_url(schema)):
        pass
    conn = await asyncpg.connect(SERVER_URL)
    try:
        await conn.execute(
            f"INSERT INTO \"{schema}\".omniq_migrations (version, name) VALUES ($1, 'future')",
            LATEST_VERSION + 1,
        )
    finally:
        await conn.close()
    with pytest.raises(ConfigurationError, match="newer omniq-backend-postgres"):
        await AsyncPostgresQueue(schema_url(schema)).connect()


def test_migrations_command_shows_and_applies(
    schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from omniq_postgres.__main__ import main

    url = schema_url(schema).replace("postgres@", "postgres:hunter2@")
    assert main(["show", url]) == 0
    assert "pending" in capsys.readouterr().out
    assert main(["apply", url]) == 0
    assert main(["show", url]) == 0
    out = capsys.readouterr().out
    assert "applied" in out and "pending" not in out and "hunter2" not in out


def test_omniq_migrations_command(schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The core CLI's generic ``omniq migrations`` reaches this backend's hook."""
    from omniq.cli import main

    url = schema_url(schema).replace("postgres@", "postgres:hunter2@")
    assert main(["migrations", "show", "--url", url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    [store] = shown["stores"]
    assert [m["version"] for m in store["migrations"]] == [m.version for m in MIGRATIONS]
    assert not any(m["applied"] for m in store["migrations"]), "show must not migrate"
    assert main(["migrations", "apply", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "applied now" in out and "hunter2" not in out, out
    assert main(["migrations", "show", "--url", url, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["stores"][0]
    assert all(m["applied"] for m in again["migrations"]) and again["applied_now"] == []


# --- bulk enqueue by COPY, counts, fixed plans ---------------------------------------------


async def test_bulk_enqueue_by_copy_keeps_idempotency(schema: str) -> None:
    async with AsyncPostgresQueue(schema_url(schema)) as q:
        first = [task(i) for i in range(50)]
        assert await q.enqueue_many(first) == [TaskStatus.PENDING] * 50
        claimed = await q.dequeue_many(["default"], 1, worker_id="w")
        assert await q.complete_many(claimed) == [True]
        # a batch repeating stored ids (COPY refuses it whole): new ones stored, the
        # stored ones left as they are and reported with their status
        again = [*first[:20], *(task(100 + i) for i in range(30))]
        statuses = await q.enqueue_many(again)
        assert statuses.count(TaskStatus.SUCCESS) == 1, statuses
        assert statuses.count(TaskStatus.PENDING) == 49, statuses
        assert await q.count() == 80
        # a batch naming one id twice stores it once
        twice = [task(200 + i) for i in range(20)]
        assert await q.enqueue_many([*twice, twice[0]]) == [TaskStatus.PENDING] * 21
        assert await q.count("default", TaskStatus.PENDING) == 79 + 20


async def test_bulk_enqueue_notifies_an_idle_worker(schema: str) -> None:
    url = schema_url(schema)
    async with (
        AsyncPostgresQueue(url, poll_interval=30) as consumer,
        AsyncPostgresQueue(url) as producer,
    ):
        waiter = asyncio.ensure_future(consumer.dequeue(["other"], worker_id="w", wait=20))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await producer.enqueue_many([task(i, queue="other") for i in range(40)])
        assert (await asyncio.wait_for(waiter, 15)) is not None
        assert time.monotonic() - t0 < 10, "a COPY batch must NOTIFY its queue"


async def test_counts_by_queue_and_status(schema: str) -> None:
    async with AsyncPostgresQueue(schema_url(schema)) as q:
        await q.enqueue_many([task(i, queue="a") for i in range(30)])
        await q.enqueue_many([task(i, queue="b") for i in range(5)])
        running = await q.dequeue_many(["a"], 10, worker_id="w")
        assert await q.complete_many(running[:4]) == [True] * 4
        assert await q.fail(running[4])
        expected = {
            TaskStatus.PENDING: 20, TaskStatus.RUNNING: 5, TaskStatus.SUCCESS: 4,
            TaskStatus.FAILED: 1, TaskStatus.WAITING: 0,
        }  # fmt: skip
        for status, n in expected.items():
            assert await q.count("a", status) == n, status
        assert await q.count("a") == 30 and await q.count("b") == 5 and await q.count() == 35
        assert await q.count(None, TaskStatus.PENDING) == 25


async def test_claim_plan_walks_the_index_on_a_stale_table(schema: str) -> None:
    """A claim (and a completion) must not cost O(queue depth) when the statistics are
    wrong: a never-analyzed table of pending tasks is what a new queue looks like."""
    async with AsyncPostgresQueue(schema_url(schema)) as q:
        await q.enqueue_many([task(i) for i in range(3000)])
        conn = await asyncpg.connect(SERVER_URL, server_settings={"search_path": schema})
        try:
            await conn.execute("LOAD 'auto_explain'")
            await conn.execute(
                "SET auto_explain.log_min_duration = 0; "
                "SET auto_explain.log_nested_statements = on; "
                "SET auto_explain.log_analyze = on; SET client_min_messages = log"
            )
            plans: list[str] = []
            conn.add_log_listener(lambda _c, m: plans.append(m.message))
            claimed = await conn.fetch(
                "SELECT * FROM omniq_claim('default', $1, 10, 'w', $2, 'x')",
                time.time(), time.time() + 30,
            )  # fmt: skip
            assert len(claimed) == 10
            done = await conn.fetch(
                "SELECT * FROM omniq_complete($1::text[], $2::int[], $3)",
                [r[0] for r in claimed], [r[6] for r in claimed], time.time(),
            )  # fmt: skip
            assert len(done) == 10
        finally:
            await conn.close()
        claim_plan = next(p for p in plans if "WITH ready" in p)
        assert "Index Scan using tasks_claim" in claim_plan, claim_plan
        assert "Bitmap" not in claim_plan and "Seq Scan" not in claim_plan, claim_plan
        complete_plan = next(p for p in plans if "UPDATE tasks" in p and "success" in p)
        # each claim found by the primary key (O(batch)): never a walk of the running
        # tasks' index (every running task and the dead entries of finished ones,
        # O(running x batch)) nor a scan of the table
        assert "Index Scan using tasks_pkey" in complete_plan, complete_plan
        assert "tasks_lease" not in complete_plan, complete_plan
        assert "Seq Scan" not in complete_plan, complete_plan
        # a disabled plan step costs 1e10: JIT would compile for ~100 ms per call
        assert not any("JIT:" in p for p in plans), plans
