"""PostgreSQL fast paths: bulk enqueue by (coalesced) COPY, the insert trigger that
wakes idle workers, claims resumed after the last full claim, and result waiters woken
by the completion notification.

Against the real server (see :mod:`tests.backends.test_postgres`); each test uses a
schema of its own and drops it. No timing assertions: a slow fallback poll makes the
notification the only thing that can end a wait in time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from omniq_postgres import AsyncPostgresQueue, AsyncPostgresResultStorage
from omniq_postgres import _migrations as migrations
from omniq_postgres import _task_sql as sql

from omniq import OmniQ
from omniq.models import EventType, Task, TaskQuery, TaskResult, TaskStatus
from omniq.storage.columns import task_row
from tests.backends.test_postgres import drop_schema, require_postgres, run_sync, schema_url

pytestmark = pytest.mark.anyio

#: Longer than any wait below: only a notification can end those waits.
SLOW_POLL = 3600.0


@pytest.fixture
def schema() -> Iterator[str]:
    require_postgres()
    name = f"omniq_test_{uuid.uuid4().hex[:12]}"
    yield name
    run_sync(lambda: drop_schema(name))


def varied(i: int) -> Task:
    """A task setting a different mix of fields for each ``i``."""
    now = time.time()
    return Task(
        func=f"tests:fn{i % 7}",
        args=(i, f"s{i}", [i, {"k": i}]),
        kwargs={"n": i} if i % 2 else {},
        queue="q" if i % 3 else "default",
        priority=i % 4,
        created_at=now - i,
        run_at=now + 3600 if i % 5 == 0 else None,
        expires_at=now + 7200 if i % 11 == 0 else None,
        timeout=float(i % 9) or None,
        retries=i % 3,
        retry_delay=0.5 + i % 2,
        on_success="tests:ok" if i % 13 == 0 else None,
        result_ttl=60.0 if i % 17 == 0 else None,
        metadata={"i": i, "tag": "x" * (i % 5)},
    )


def assert_same(stored: Task | None, sent: Task) -> None:
    assert stored is not None, f"task {sent.id} was not stored"
    for field in sent.__struct_fields__:
        if field == "status":
            continue
        assert getattr(stored, field) == getattr(sent, field), (
            f"task {sent.id}: {field} stored as {getattr(stored, field)!r}, "
            f"sent as {getattr(sent, field)!r}"
        )
    assert stored.status is TaskStatus.PENDING, f"task {sent.id}: {stored.status}"


# --- bulk enqueue ------------------------------------------------------------------------------


@pytest.mark.parametrize("timed", [True, False], ids=["with-run_at-and-ttl", "plain"])
async def test_bulk_enqueue_round_trips_every_field(schema: str, timed: bool) -> None:
    """Both COPY column sets (a batch with delayed/expiring tasks, and one without)."""
    sent = [varied(i) for i in range(3000)]
    if not timed:
        for t in sent:
            t.run_at = t.expires_at = None
    async with AsyncPostgresQueue(schema_url(schema)) as q:
        assert await q.enqueue_many(sent) == [TaskStatus.PENDING] * len(sent)
        assert await q.count() == len(sent)
        for t in sent[:: 1 if len(sent) < 500 else 7]:
            assert_same(await q.get(t.id), t)
        # delayed tasks wait; the others are claimed highest priority first, then by
        # due time (created_at for tasks not delayed)
        claimed = await q.dequeue_many(["default"], 50, worker_id="w")
        ready = sorted(
            (t for t in sent if t.queue == "default" and t.run_at is None),
            key=lambda t: (-t.priority, t.created_at),
        )
        assert [t.id for t in claimed] == [t.id for t in ready[:50]]


async def test_concurrent_bulk_enqueues_keep_their_own_outcomes(schema: str) -> None:
    """Batches sent at once go out in shared COPYs; a batch repeating stored ids (which
    makes a joint COPY fail) still gets its own statuses and the others are stored."""
    async with AsyncPostgresQueue(schema_url(schema)) as q:
        stored = [Task(func="tests:noop", args=(i,)) for i in range(40)]
        assert await q.enqueue_many(stored) == [TaskStatus.PENDING] * 40
        claimed = await q.dequeue_many(["default"], 40, worker_id="w")
        assert await q.complete_many(claimed) == [True] * 40
        fresh = [[Task(func="tests:noop", args=(b, i)) for i in range(300)] for b in range(6)]
        repeat = [*stored[:20], *(Task(func="tests:noop", args=(9, i)) for i in range(30))]
        outcomes = await asyncio.gather(
            *(q.enqueue_many(batch) for batch in fresh[:3]),
            q.enqueue_many(repeat),
            *(q.enqueue_many(batch) for batch in fresh[3:]),
        )
        for batch, statuses in zip(fresh, [*outcomes[:3], *outcomes[4:]], strict=True):
            assert statuses == [TaskStatus.PENDING] * len(batch)
        assert outcomes[3] == [TaskStatus.SUCCESS] * 20 + [TaskStatus.PENDING] * 30
        assert await q.count(None, TaskStatus.PENDING) == 6 * 300 + 30
        assert await q.count(None, TaskStatus.SUCCESS) == 40


async def test_map_stores_every_task_and_records_events(schema: str) -> None:
    url = schema_url(schema)
    oq = OmniQ(task_queue=url, event_storage=url).async_

    @oq.task(queue="bulk")
    async def add(a: int, b: int) -> int:
        return a + b

    async with oq:
        handles = await add.map([(i, i) for i in range(2500)])
        assert len({h.id for h in handles}) == 2500
        assert await oq.task_queue.count("bulk", TaskStatus.PENDING) == 2500
        for h in handles[::250]:
            stored = await oq.get_task(h.id)
            assert stored is not None and stored.func.endswith("add"), stored
            assert stored.args[0] == stored.args[1], stored.args
        events = await oq.get_events(types=[EventType.ENQUEUED])
        assert sorted(str(e.task_id) for e in events) == sorted(h.id for h in handles)


# --- wake-ups ----------------------------------------------------------------------------------


async def test_copy_wakes_an_idle_worker_of_another_process(schema: str) -> None:
    """The insert trigger notifies at the COPY's commit: no second statement."""
    url = schema_url(schema)
    async with (
        AsyncPostgresQueue(url, poll_interval=SLOW_POLL) as consumer,
        AsyncPostgresQueue(url) as producer,
    ):
        waiter = asyncio.ensure_future(consumer.dequeue(["other"], worker_id="w", wait=SLOW_POLL))
        await _until_listening(consumer)
        await producer.enqueue_many([Task(func="tests:noop", queue="other") for _ in range(40)])
        got = await asyncio.wait_for(waiter, 60)
        assert got is not None and got.queue == "other"


async def test_result_waiter_is_woken_by_the_completion(schema: str) -> None:
    url = schema_url(schema)
    async with (
        AsyncPostgresQueue(url) as queue,
        AsyncPostgresResultStorage(url, poll_interval=SLOW_POLL) as waiting,
        AsyncPostgresResultStorage(url) as results,
    ):
        await queue.enqueue(Task(func="tests:noop", id="t1"))
        (claimed,) = await queue.dequeue_many(["default"], 1, worker_id="w")
        waiter = asyncio.ensure_future(waiting.wait("t1", timeout=SLOW_POLL))
        await _until_listening(waiting)
        result = TaskResult(task_id="t1", status=TaskStatus.SUCCESS, result=42)
        assert await queue.complete_with_results([(claimed, result)], results) == [True]
        got = await asyncio.wait_for(waiter, 60)
        assert got is not None and got.result == 42, got


async def _until_listening(component: AsyncPostgresQueue | AsyncPostgresResultStorage) -> None:
    db = component.database
    while not db.listening:
        await asyncio.sleep(0.01)


# --- claims resumed after the last full claim ------------------------------------------------


async def test_claims_resume_in_order_and_see_tasks_added_before_the_hint(schema: str) -> None:
    url = schema_url(schema)
    async with AsyncPostgresQueue(url) as q, AsyncPostgresQueue(url) as producer:
        base = time.time()
        tasks = [Task(func="tests:noop", args=(i,), created_at=base + i) for i in range(100)]
        await producer.enqueue_many(tasks)
        first = await q.dequeue_many(["default"], 10, worker_id="w")
        assert [t.args for t in first] == [(i,) for i in range(10)]
        assert q._hints, "a full claim leaves a hint"
        second = await q.dequeue_many(["default"], 10, worker_id="w")
        assert [t.args for t in second] == [(i,) for i in range(10, 20)]
        # added before the hint in claim order (higher priority; an older due time):
        # the notification drops the hints, so the next claim looks from the start
        event = q.database.signals["tasks"].current()
        await producer.enqueue_many(
            [
                Task(func="tests:noop", args=("urgent",), priority=5),
                Task(func="tests:noop", args=("old",), created_at=base - 60),
            ]
        )
        await asyncio.wait_for(event.wait(), 60)  # the notification reached this process
        third = await q.dequeue_many(["default"], 4, worker_id="w")
        assert [t.args for t in third] == [("urgent",), ("old",), (20,), (21,)]
        # a claim handed back is ready again before the hint: claimed again first
        event = q.database.signals["tasks"].current()
        assert await q.unclaim(third[3])
        await asyncio.wait_for(event.wait(), 60)
        again = await q.dequeue_many(["default"], 2, worker_id="w")
        assert [t.args for t in again] == [(21,), (22,)]
        # the rest, in order, with no task claimed twice
        rest = []
        while batch := await q.dequeue_many(["default"], 7, worker_id="w"):
            rest.extend(batch)
        assert [t.args for t in rest] == [(i,) for i in range(23, 100)]


# --- migration 5: counts kept by triggers, finish with dependents, upgrade from 4 ---------------

EVERY_STATUS = list(TaskStatus)


async def listed(q: AsyncPostgresQueue, queue: str | None, status: TaskStatus | None) -> int:
    """The number of tasks a listing finds (effective statuses, read from the rows)."""
    return len(await q.select_tasks(TaskQuery(queue=queue, status=status, limit=10**6)))


async def assert_counts_match_listing(q: AsyncPostgresQueue, queues: list[str]) -> None:
    for queue in [*queues, None]:
        for status in [*EVERY_STATUS, None]:
            want = await listed(q, queue, status)
            got = await q.count(queue, status)
            assert got == want, f"count({queue!r}, {status}) is {got}, the listing finds {want}"


async def test_counts_follow_every_kind_of_change(schema: str) -> None:
    """Counts come from task_counts (kept by triggers): after enqueues (COPY and
    INSERT), claims, completions with results, retries, hand-backs, cancels, TTL
    expiry before and after the sweep, dependency releases and purges, each count
    equals what a listing of the rows finds; folding the rows changes nothing."""
    url = schema_url(schema)
    async with (
        AsyncPostgresQueue(url) as q,
        AsyncPostgresResultStorage(url) as results,
    ):
        now = time.time()
        await q.enqueue_many([Task(func="tests:noop", queue="a", args=(i,)) for i in range(40)])
        await q.enqueue_many([Task(func="tests:noop", queue="b", args=(i,)) for i in range(3)])
        await q.enqueue(Task(func="tests:noop", queue="b", expires_at=now - 1))  # past TTL
        parent = Task(func="tests:noop", queue="b")
        await q.enqueue(parent)
        await q.enqueue(Task(func="tests:noop", queue="b", depends_on=[parent.id]))
        await assert_counts_match_listing(q, ["a", "b"])
        claimed = await q.dequeue_many(["a"], 12, worker_id="w")
        finished = [
            (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=i, attempt=t.attempt))
            for i, t in enumerate(claimed[:5])
        ]
        assert await q.complete_with_results(finished, results) == [True] * 5
        assert await q.fail(claimed[5], time.time() + 3600, error="retry later")
        assert await q.fail(claimed[6], None, error="gave up")
        assert await q.unclaim(claimed[7])
        assert await q.cancel(claimed[8].id)
        pending = await q.select_tasks(TaskQuery(queue="a", status=TaskStatus.PENDING, limit=1))
        assert await q.cancel(pending[0].id)
        await assert_counts_match_listing(q, ["a", "b"])
        (p,) = [t for t in await q.dequeue_many(["b"], 10, worker_id="w") if t.id == parent.id]
        assert await q.complete(p)
        await q.release_dependents(p.id, succeeded=True)
        await assert_counts_match_listing(q, ["a", "b"])
        assert len(await q.cleanup_expired()) == 1, "the sweep marks the late task"
        await assert_counts_match_listing(q, ["a", "b"])
        conn = await asyncpg_connect(schema)
        try:
            await conn.execute(sql.FOLD_COUNTS_SQL)
            rows = await conn.fetch("SELECT queue, status, n FROM task_counts")
        finally:
            await conn.close()
        pairs = [(r[0], r[1]) for r in rows]
        assert len(pairs) == len(set(pairs)), f"a fold leaves one row per pair: {rows}"
        await assert_counts_match_listing(q, ["a", "b"])
        # rows pile up when nobody counts: the workers' TTL sweep folds them too
        conn = await asyncpg_connect(schema)
        try:
            await conn.execute(
                "INSERT INTO task_counts (queue, status, n) "
                "SELECT 'a', 'pending', (-1) ^ i FROM generate_series(1, $1) AS i",
                2 * sql.COUNT_ROWS_FOLDED,
            )
            await q.cleanup_expired()
            left = await conn.fetchval("SELECT count(*) FROM task_counts")
        finally:
            await conn.close()
        assert left <= len(pairs), f"{left} rows of task_counts after the sweep"
        await assert_counts_match_listing(q, ["a", "b"])
        assert await q.purge("a") > 0
        await assert_counts_match_listing(q, ["a", "b"])


async def asyncpg_connect(schema: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    from tests.backends.test_postgres import SERVER_URL

    return await asyncpg.connect(SERVER_URL, server_settings={"search_path": schema})


async def test_release_after_a_finish_still_frees_dependents(schema: str) -> None:
    """complete_with_results learns whether the finished tasks have dependents: with
    one, the release that follows makes the dependent ready; without, it has nothing
    to do."""
    url = schema_url(schema)
    async with AsyncPostgresQueue(url) as q, AsyncPostgresResultStorage(url) as results:
        parent, lone = Task(func="tests:noop"), Task(func="tests:noop")
        child = Task(func="tests:noop", depends_on=[parent.id])
        await q.enqueue_many([parent, lone])
        assert await q.enqueue(child) is TaskStatus.WAITING
        claimed = await q.dequeue_many(["default"], 10, worker_id="w")
        assert {t.id for t in claimed} == {parent.id, lone.id}, claimed
        by_id = {t.id: t for t in claimed}
        for task_id in (lone.id, parent.id):
            task = by_id[task_id]
            result = TaskResult(task_id=task_id, status=TaskStatus.SUCCESS, attempt=task.attempt)
            assert await q.complete_with_results([(task, result)], results) == [True]
            released = await q.release_dependents_many([task_id], True)
            want = [child.id] if task_id == parent.id else []
            assert released.ready == want, f"release after {task_id}: {released}"
        stored = await q.get(child.id)
        assert stored is not None and stored.status is TaskStatus.PENDING, stored


async def test_upgrade_from_migration_4(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema at migration 4 holding pending, running and finished tasks upgrades to
    the latest: its counts start from the stored tasks, and claims and completions
    written by migration 4's functions go on with the new ones."""
    url = schema_url(schema)
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
        async with AsyncPostgresQueue(url) as old:
            # batches below COPY_MIN: one INSERT each (a bulk enqueue's COPY counts its
            # tasks in task_counts, which a schema at migration 4 does not have)
            for first in range(0, 30, 10):
                await old.enqueue_many(
                    [Task(func="tests:noop", args=(i,)) for i in range(first, first + 10)]
                )
            running = await old.dequeue_many(["default"], 10, worker_id="old")
            assert await old.complete_many(running[:4]) == [True] * 4
            conn = await asyncpg_connect(schema)
            try:
                versions = [r[0] for r in await conn.fetch("SELECT version FROM omniq_migrations")]
            finally:
                await conn.close()
            assert sorted(versions) == [1, 2, 3, 4], versions
    async with AsyncPostgresQueue(url) as q, AsyncPostgresResultStorage(url) as results:
        conn = await asyncpg_connect(schema)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM omniq_migrations")]
        finally:
            await conn.close()
        assert sorted(versions) == [m.version for m in migrations.MIGRATIONS], versions
        expected = {TaskStatus.PENDING: 20, TaskStatus.RUNNING: 6, TaskStatus.SUCCESS: 4}
        for status, n in expected.items():
            assert await q.count("default", status) == n, f"{status} after the upgrade"
        finished = [
            (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, attempt=t.attempt))
            for t in running[4:]
        ]
        assert await q.complete_with_results(finished, results) == [True] * 6
        more = await q.dequeue_many(["default"], 50, worker_id="new")
        assert len(more) == 20, f"the pending tasks are claimed: {len(more)}"
        assert await q.complete_many(more) == [True] * 20
        await assert_counts_match_listing(q, ["default"])
        assert await q.count("default", TaskStatus.SUCCESS) == 30


async def _copy_of_migration_5(
    conn: Any, schema: str, tasks: list[Task], data: list[bytes]
) -> bool:
    """A bulk enqueue as a client of migration 5 sends it: one COPY, no omniq.counted."""
    rows = [
        (t.id, t.queue, t.priority, t.created_at, t.created_at, d)
        for t, d in zip(tasks, data, strict=True)
    ]
    await conn.copy_records_to_table(
        "tasks", records=rows, columns=sql.COPY_COLUMNS, schema_name=schema
    )
    return True


async def test_upgrade_from_migration_5(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema at migration 5 (inserts counted by a statement trigger, ids in the
    database's collation) upgrades to the latest: counts go on from its rows, ids
    compare bytewise, a bulk enqueue is counted once (by itself), and the inserts of a
    client of migration 5 (COPY or INSERT, without omniq.counted) are still counted."""
    url = schema_url(schema)
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
        m.setattr(sql, "copy_new", _copy_of_migration_5)
        async with AsyncPostgresQueue(url) as old:
            await old.enqueue_many([Task(func="tests:noop", args=(i,)) for i in range(40)])
            running = await old.dequeue_many(["default"], 10, worker_id="old")
            assert await old.complete_many(running[:4]) == [True] * 4
            assert await old.count("default", TaskStatus.PENDING) == 30
    async with AsyncPostgresQueue(url) as q, AsyncPostgresResultStorage(url) as results:
        conn = await asyncpg_connect(schema)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM omniq_migrations")]
            collations = await conn.fetch(
                "SELECT table_name, collation_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND column_name IN ('id', 'task_id') "
                "AND table_name IN ('tasks', 'results') ORDER BY 1",
                schema,
            )
        finally:
            await conn.close()
        assert sorted(versions) == [m.version for m in migrations.MIGRATIONS], versions
        assert [(r[0], r[1]) for r in collations] == [("results", "C"), ("tasks", "C")]
        expected = {TaskStatus.PENDING: 30, TaskStatus.RUNNING: 6, TaskStatus.SUCCESS: 4}
        for status, n in expected.items():
            assert await q.count("default", status) == n, f"{status} after the upgrade"
        # a bulk enqueue now (COPY, counted by itself), in two queues
        more = [Task(func="tests:noop", queue="ab"[i % 2], args=(i,)) for i in range(50)]
        assert await q.enqueue_many(more) == [TaskStatus.PENDING] * 50
        # clients of migration 5 still write: a COPY and an INSERT without omniq.counted
        serializer = q.serializer
        late = [Task(func="tests:noop", queue="b", args=(i,)) for i in range(20)]
        conn = await asyncpg_connect(schema)
        try:
            await _copy_of_migration_5(
                conn, schema, late[:17], [serializer.encode_task(t) for t in late[:17]]
            )
            rows = [task_row(serializer, t) for t in late[17:]]
            assert len(await sql.insert_new(conn, rows)) == 3
        finally:
            await conn.close()
        assert await q.count("b", TaskStatus.PENDING) == 45
        finished = [
            (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, attempt=t.attempt))
            for t in running[4:]
        ]
        assert await q.complete_with_results(finished, results) == [True] * 6
        claimed = await q.dequeue_many(["default", "a", "b"], 200, worker_id="new")
        assert len(claimed) == 100, f"every pending task is claimed: {len(claimed)}"
        assert await q.complete_many(claimed) == [True] * 100
        await assert_counts_match_listing(q, ["default", "a", "b"])
        assert await q.count(None, TaskStatus.SUCCESS) == 110
