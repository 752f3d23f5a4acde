"""SQLite: tasks claimed straight out of a staged batch, and results in task rows.

A claim of the next tasks of a ``map()`` batch writes one claimed-batch row (attempt 1,
worker, lease) instead of a row per task; each task gets its row when it finishes, with
its result, in one insert. These tests check the guarantees hold on that path: fencing
by attempt, lapsed leases, cancel, reads, counts, crash (another connection), retention,
and the migration of a database made by schema version 4.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq.models import Task, TaskResult, TaskStatus, new_ids
from omniq.serialization.manager import default_manager
from omniq_sqlite import AsyncSQLiteQueue, AsyncSQLiteResultStorage, SQLiteBackend
from omniq_sqlite._migrations import MIGRATIONS
from omniq_sqlite._staging import _columns, _pack

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tasks(n: int, **fields: Any) -> list[Task]:
    return [
        Task(func="tests:noop", args=(i,), id=tid, **fields) for i, tid in enumerate(new_ids(n))
    ]


def ok(t: Task, value: Any = None) -> tuple[Task, TaskResult]:
    return t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=value, attempt=t.attempt)


def claimed_batches(path: str) -> list[tuple[int, str, float]]:
    """(size, worker, lease) of every claimed batch, as another connection sees them."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT size, worker_id, lease_until FROM task_batches WHERE claim IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()


def task_rows(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
async def backend(tmp_path: Path) -> Any:
    async with SQLiteBackend(f"sqlite:///{tmp_path / 'b.db'}", stage_min=4) as b:
        yield b


async def test_a_claim_writes_one_row_and_completion_one_row_per_task(backend: Any) -> None:
    q, rs = backend.task_queue, backend.result_storage
    batch = tasks(10)
    await q.enqueue_many(batch)
    got = await q.dequeue_many(["default"], 4, worker_id="w")
    assert [t.id for t in got] == [t.id for t in batch[:4]]
    assert all(t.attempt == 1 and t.worker_id == "w" for t in got)
    assert [size for size, _, _ in claimed_batches(q.path)] == [4]
    assert task_rows(q.path) == 0, "claimed tasks get their row when they finish"
    assert await q.count(status=TaskStatus.RUNNING) == 4
    assert await q.count(status=TaskStatus.PENDING) == 6
    accepted = await q.complete_with_results([ok(t, i) for i, t in enumerate(got[:3])], rs)
    assert accepted == [True] * 3
    assert task_rows(q.path) == 3
    assert [size for size, _, _ in claimed_batches(q.path)] == [1]
    assert await q.count(status=TaskStatus.SUCCESS) == 3
    assert await q.count(status=TaskStatus.RUNNING) == 1
    for i, t in enumerate(got[:3]):
        stored = await q.get(t.id)
        assert stored is not None and stored.status is TaskStatus.SUCCESS and stored.attempt == 1
        result = await rs.get(t.id)
        assert result is not None and result.result == i
    assert await q.complete_with_results([ok(got[3])], rs) == [True]
    assert claimed_batches(q.path) == [], "a claimed batch goes when its last task finishes"
    rest = await q.dequeue_many(["default"], 10, worker_id="w")
    assert [t.id for t in rest] == [t.id for t in batch[4:]]


async def test_a_task_given_twice_completes_once(backend: Any) -> None:
    q, rs = backend.task_queue, backend.result_storage
    await q.enqueue_many(tasks(5))
    got = await q.dequeue_many(["default"], 2, worker_id="w")
    assert await q.complete_with_results([ok(got[0]), ok(got[0]), ok(got[1])], rs) == [
        True,
        False,
        True,
    ]
    assert await q.count(status=TaskStatus.SUCCESS) == 2


async def test_a_cancelled_claimed_task_is_not_completed(backend: Any) -> None:
    q, rs = backend.task_queue, backend.result_storage
    await q.enqueue_many(tasks(6))
    got = await q.dequeue_many(["default"], 3, worker_id="w")
    assert await q.cancel(got[1].id)
    assert await q.complete_with_results([ok(t, "r") for t in got], rs) == [True, False, True]
    cancelled = await q.get(got[1].id)
    assert cancelled is not None and cancelled.status is TaskStatus.CANCELLED
    assert await rs.get(got[1].id) is None, "a stale claim's result is never written"


async def test_a_lapsed_claimed_batch_is_claimed_again_and_fences_the_old_claim(
    backend: Any,
) -> None:
    q, rs = backend.task_queue, backend.result_storage
    batch = tasks(6)
    await q.enqueue_many(batch)
    old = await q.dequeue_many(["default"], 3, worker_id="w1", lease=0.01)
    await anyio.sleep(0.05)  # the claimed batch's lease lapses
    again = await q.dequeue_many(["default"], 3, worker_id="w2")
    assert [t.id for t in again] == [t.id for t in batch[:3]]
    assert all(t.attempt == 2 and t.worker_id == "w2" for t in again)
    assert await q.complete_with_results([ok(t, "old") for t in old], rs) == [False] * 3
    assert await q.complete_with_results([ok(t, "new") for t in again], rs) == [True] * 3
    for t in again:
        result = await rs.get(t.id)
        assert result is not None and result.result == "new"


async def test_heartbeat_fail_and_complete_of_claimed_tasks(backend: Any) -> None:
    q, rs = backend.task_queue, backend.result_storage
    await q.enqueue_many(tasks(6))
    a, b, c = await q.dequeue_many(["default"], 3, worker_id="w")
    assert await q.heartbeat(a, 60)
    assert await q.fail(b, None, error="boom")
    assert await q.complete_with_results([ok(a), ok(b), ok(c)], rs) == [True, False, True]
    failed = await q.get(b.id)
    assert failed is not None and failed.status is TaskStatus.FAILED


async def test_another_connection_sees_claimed_tasks_running(backend: Any) -> None:
    """What a crash leaves: the claimed batch is in the file, RUNNING for its worker
    until its lease lapses."""
    q = backend.task_queue
    await q.enqueue_many(tasks(5))
    got = await q.dequeue_many(["default"], 3, worker_id="w", lease=60)
    async with AsyncSQLiteQueue(f"sqlite:///{q.path}") as other:
        running = await other.list(status=TaskStatus.RUNNING)
        assert sorted(t.id for t in running) == sorted(t.id for t in got)
        assert all(t.worker_id == "w" and t.attempt == 1 for t in running)
        assert await other.dequeue_many(["default"], 10, worker_id="x") != []  # the other 2
        assert await other.count(status=TaskStatus.RUNNING) == 5
    # the claim still holds (list() gave the claimed tasks their rows: the fenced update)
    assert await q.complete_many(got) == [True] * 3


async def test_results_in_task_rows_and_in_the_results_table(backend: Any) -> None:
    q, rs = backend.task_queue, backend.result_storage
    await q.enqueue_many(tasks(4))
    got = await q.dequeue_many(["default"], 4, worker_id="w")
    await q.complete_with_results([ok(t, i) for i, t in enumerate(got)], rs)
    assert len(await rs.list()) == 4
    assert len(await rs.list(TaskStatus.SUCCESS)) == 4
    assert await rs.list(TaskStatus.FAILED) == []
    # a result stored later replaces the one in the task row
    await rs.set(TaskResult(task_id=got[0].id, status=TaskStatus.FAILED, error="later"))
    newer = await rs.get(got[0].id)
    assert newer is not None and newer.status is TaskStatus.FAILED
    assert len(await rs.list()) == 4
    assert [r.task_id for r in await rs.list(TaskStatus.FAILED)] == [got[0].id]
    assert await rs.delete(got[1].id)
    assert await rs.get(got[1].id) is None
    assert not await rs.delete(got[1].id)
    # a task's result in its row expires with its TTL
    await q.enqueue_many(tasks(4))
    (t,) = await q.dequeue_many(["default"], 1, worker_id="w")
    short = TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, expires_at=time.time() - 1)
    assert await q.complete_with_results([(t, short)], rs) == [True]
    assert await rs.get(t.id) is None
    assert await rs.cleanup_expired() == 1


async def test_retention_and_purge_keep_live_results(backend: Any) -> None:
    q, rs = backend.task_queue, backend.result_storage
    await q.enqueue_many(tasks(4))
    got = await q.dequeue_many(["default"], 4, worker_id="w")
    finished = [
        (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=i, expires_at=exp))
        for i, (t, exp) in enumerate(
            zip(got, [None, time.time() + 600, time.time() - 1, None], strict=True)
        )
    ]
    await q.complete_with_results(finished[:3], rs)
    assert await q.prune_finished(time.time() + 1) == 3
    assert task_rows(q.path) == 1, "the running task (the prune gave it its row)"
    assert [r.result for r in await rs.list()] == [0, 1], "live results outlive their task"
    # the claimed task left in its batch is not brought back by the prune
    assert await q.count(status=TaskStatus.RUNNING) == 1
    assert await q.complete_with_results([finished[3]], rs) == [True]
    assert await q.purge() == 1
    got3 = await rs.get(got[3].id)
    assert got3 is not None and got3.result == 3


async def test_a_v4_database_migrates_with_its_staged_batches_and_results(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
        "applied_at REAL NOT NULL)"
    )
    for m in MIGRATIONS[:4]:
        for statement in m.statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (m.version, m.description))
    ser = default_manager()
    batch = tasks(6)
    conn.execute(
        "INSERT INTO task_batches (first_id, last_id, size, queue, expires_min, prio_max, "
        "due_min, rows) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        _columns(batch, _pack(ser, batch)),
    )
    old = TaskResult(task_id="old", status=TaskStatus.SUCCESS, result="kept")
    conn.execute(
        "INSERT INTO results (task_id, status, finished_at, expires_at, data) "
        "VALUES (?, ?, ?, ?, ?)",
        ("old", "success", old.finished_at, None, ser.encode_result(old)),
    )
    conn.close()
    url = f"sqlite:///{path}"
    async with AsyncSQLiteQueue(url) as q, AsyncSQLiteResultStorage(url) as rs:
        assert q.database.applied_migrations == [5]
        kept = await rs.get("old")
        assert kept is not None and kept.result == "kept"
        assert await q.count(status=TaskStatus.PENDING) == 6
        first = await q.dequeue_many(["default"], 2, worker_id="w")
        assert [t.id for t in first] == [t.id for t in batch[:2]]
        assert await q.complete_with_results([ok(t, t.id) for t in first], rs) == [True, True]
        rest = await q.dequeue_many(["default"], 10, worker_id="w")
        assert [t.id for t in rest] == [t.id for t in batch[2:]]
        for t in first:
            result = await rs.get(t.id)
            assert result is not None and result.result == t.id


def test_completion_and_result_reads_use_indexes(tmp_path: Path) -> None:
    """The completion of claims that are task rows, and a result's read, find the task
    by its id index (a scan would make them cost the size of the table)."""
    from omniq_sqlite._migrations import migrate
    from omniq_sqlite._results import _GET, _NOT_REPLACED
    from omniq_sqlite._task_sql import _complete_storing_sql

    conn = sqlite3.connect(tmp_path / "plan.db", isolation_level=None)
    try:
        migrate(conn, str(tmp_path / "plan.db"))
        for statement, params in [
            (_complete_storing_sql(8), ["", -1, 0, 0] * 8),
            (_GET, ("x",)),
            (f"SELECT data FROM results WHERE {_NOT_REPLACED}", ()),
        ]:
            plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
            assert "SCAN tasks" not in plan, (statement, plan)
            assert any("sqlite_autoindex_tasks_1" in p for p in plan), (statement, plan)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("damage", "where"),
    [
        ("taken = -5", "claim IS NULL"),
        ("taken = 100000", "claim IS NULL"),
        ("taken = 'x'", "claim IS NULL"),
        ("lease_until = 0, taken = 'x'", "claim IS NOT NULL"),
        ("lease_until = 0, taken = 3, stop = 1", "claim IS NOT NULL"),
        ("lease_until = 0, stop = 99", "claim IS NOT NULL"),
    ],
)
async def test_a_batch_row_with_damaged_bounds_is_set_aside_and_the_rest_runs(
    backend: Any, damage: str, where: str
) -> None:
    """A task_batches row whose [taken, stop) was written by something else (negative,
    past the end, not a number, reversed) would skip or repeat tasks, or raise at every
    claim: it is marked with its error instead, and every other batch is claimed."""
    q = backend.task_queue
    first, second = tasks(10), tasks(10)
    await q.enqueue_many(first)
    await q.enqueue_many(second)
    got = await q.dequeue_many(["default"], 3, worker_id="w")
    assert [t.id for t in got] == [t.id for t in first[:3]]
    conn = sqlite3.connect(q.path)
    try:
        cur = conn.execute(f"UPDATE task_batches SET {damage} WHERE {where} AND seq = "
                           f"(SELECT min(seq) FROM task_batches WHERE {where})")  # fmt: skip
        assert cur.rowcount == 1, "one batch row damaged"
        conn.commit()
    finally:
        conn.close()
    claimed: list[str] = []
    for _ in range(10):
        more = await q.dequeue_many(["default"], 50, worker_id="w2", lease=30)
        if not more:
            break
        claimed += [t.id for t in more]
    assert len(claimed) == len(set(claimed)), f"a task was handed out twice: {claimed}"
    assert {t.id for t in second} <= set(claimed), "the undamaged batch's tasks all ran"
    conn = sqlite3.connect(q.path)
    try:
        errors = conn.execute("SELECT error FROM task_batches WHERE error IS NOT NULL").fetchall()
    finally:
        conn.close()
    assert len(errors) == 1 and "do not fit" in errors[0][0], (
        f"the damaged batch is marked with its error, got {errors}"
    )
