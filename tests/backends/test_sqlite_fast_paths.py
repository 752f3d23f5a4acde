"""SQLite fast paths: cross-process wake-ups, the bulk insert, batch writes, indexes.

No timing assertions. "Woken by the change watcher" is checked with ``poll_interval`` far
above the test's deadline, so only a wake-up can end the wait before the deadline; "the
watcher does nothing while nobody waits" by a signal that must not move meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq.errors import SerializationError
from omniq.models import Task, TaskResult, TaskStatus
from omniq.serialization.manager import SerializationManager, default_manager
from omniq.storage.columns import task_row
from omniq_sqlite import AsyncSQLiteQueue, AsyncSQLiteResultStorage, SQLiteBackend
from omniq_sqlite import _task_sql as sql
from omniq_sqlite._database import Database
from omniq_sqlite._migrations import MIGRATIONS, migrate
from omniq_sqlite._results import _UPSERT
from omniq_sqlite._wake import Signal

pytestmark = pytest.mark.anyio

#: Far above every deadline below: a waiter that is not woken sleeps this long.
NEVER = 600.0
DEADLINE = 30.0
MODES = ["inotify", "poll"] if sys.platform.startswith("linux") else ["poll"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=MODES)
def watch_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    mode: str = request.param
    if mode == "poll":
        monkeypatch.setenv("OMNIQ_SQLITE_NO_INOTIFY", "1")
    return mode


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def task(i: int = 0, **fields: Any) -> Task:
    return Task(func="tests:noop", args=(i,), **fields)


async def _when_waiting(signal: Signal) -> None:
    while not signal.waiting:
        await anyio.sleep(0.01)


def _foreign_write(path: Path, statement: str, params: tuple[Any, ...]) -> None:
    """Commit from a plain connection: to the watcher, the same as another process."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.execute(statement, params)
    finally:
        conn.close()


def _watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("omniq-sqlite-watch")]


# --- wake-ups -------------------------------------------------------------------------------


def record_transactions(monkeypatch: pytest.MonkeyPatch, db: Database) -> list[str]:
    """The names of the functions ``db`` runs from now on (``run`` and ``run_write``)."""
    calls: list[str] = []
    for name in ("run", "run_write"):
        original = getattr(db, name)

        async def counted(fn: Any, *args: Any, _original: Any = original) -> Any:
            calls.append(fn.__name__)
            return await _original(fn, *args)

        monkeypatch.setattr(db, name, counted)
    return calls


async def test_dequeue_is_woken_by_another_connection(tmp_path: Path, watch_mode: str) -> None:
    path = tmp_path / "wake.db"
    async with AsyncSQLiteQueue(url_of(path), poll_interval=NEVER) as q:
        t = task(1)
        row = task_row(q.serializer, t)

        async def write_when_waiting() -> None:
            await _when_waiting(q.database.signal("tasks"))
            await anyio.to_thread.run_sync(_foreign_write, path, sql.INSERT_NEW_SQL, row)

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write_when_waiting)
                got = await q.dequeue_many(["default"], 5, worker_id="w", wait=NEVER)
        assert [x.id for x in got] == [t.id]
        assert q.database.hub.mode == watch_mode


async def test_watcher_signals_foreign_commits(tmp_path: Path, watch_mode: str) -> None:
    """A commit made while nobody waits is reported to the next waiter (its wait pokes
    the watcher, which checks at once); nobody waiting, the watcher does nothing."""
    path = tmp_path / "sig.db"
    async with AsyncSQLiteQueue(url_of(path)) as q:
        db = q.database
        assert db.watch() and db.hub.mode == watch_mode
        signals = [db.signal("tasks"), db.signal("results")]
        seen = [s.version for s in signals]
        await anyio.to_thread.run_sync(
            _foreign_write, path, "INSERT INTO events (id, event_type, timestamp) "
            "VALUES ('e1', 'enqueued', 0)", (),
        )  # fmt: skip
        await anyio.sleep(0.2)
        assert [s.version for s in signals] == seen  # no waiter: not even a check
        with anyio.fail_after(DEADLINE):
            for signal, version in zip(signals, seen, strict=True):
                assert await signal.wait(version, NEVER)


async def test_result_wait_is_woken_by_another_connection(tmp_path: Path, watch_mode: str) -> None:
    path = tmp_path / "wake.db"
    async with AsyncSQLiteResultStorage(url_of(path), poll_interval=NEVER) as rs:
        result = TaskResult(task_id="t1", status=TaskStatus.SUCCESS, result=42)
        row = ("t1", "success", time.time(), None, rs.serializer.encode_result(result))

        async def write_when_waiting() -> None:
            await _when_waiting(rs.database.signal("results"))
            await anyio.to_thread.run_sync(_foreign_write, path, _UPSERT, row)

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write_when_waiting)
                got = await rs.wait("t1", timeout=NEVER)
        assert got is not None and got.result == 42


_ENQUEUER = """
import asyncio, sys
from omniq.models import Task
from omniq_sqlite import AsyncSQLiteQueue

async def main(url):
    async with AsyncSQLiteQueue(url) as q:
        await q.enqueue(Task(func="tests:noop", id="from-child"))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
async def test_dequeue_is_woken_by_another_process(tmp_path: Path) -> None:
    url = url_of(tmp_path / "proc.db")
    async with AsyncSQLiteQueue(url, poll_interval=NEVER) as q:

        async def enqueue_from_child() -> None:
            await _when_waiting(q.database.signal("tasks"))
            await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [sys.executable, "-c", textwrap.dedent(_ENQUEUER), url], check=True
                )
            )

        with anyio.fail_after(DEADLINE + 30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(enqueue_from_child)
                got = await q.dequeue_many(["default"], 1, worker_id="w", wait=NEVER)
        assert [x.id for x in got] == ["from-child"]


async def test_delayed_task_is_claimed_by_polling(tmp_path: Path) -> None:
    """Nothing commits when a delayed task becomes due: the waiter's own poll finds it."""
    async with AsyncSQLiteQueue(url_of(tmp_path / "d.db"), poll_interval=0.05) as q:
        await q.enqueue(task(1, run_at=time.time() + 0.3))
        with anyio.fail_after(DEADLINE):
            got = await q.dequeue_many(["default"], 1, worker_id="w", wait=NEVER)
        assert len(got) == 1


def test_claim_says_when_the_clock_alone_can_make_work(tmp_path: Path) -> None:
    """An idle waiter re-checks soon only while a task may become due by the clock."""
    ser = default_manager()
    conn = _connect(tmp_path / "timed.db")
    try:
        assert sql.claim(conn, ["default"], 1, "w", 30.0) == ([], False)
        sql.enqueue_tasks(conn, ser, [task(1, run_at=time.time() + 3600)])
        conn.execute("COMMIT")
        assert sql.claim(conn, ["default"], 1, "w", 30.0) == ([], True)  # delayed
        assert sql.claim(conn, ["other"], 1, "w", 30.0) == ([], False)
        conn.execute("UPDATE tasks SET run_at = NULL, due = 0")
        got, _ = sql.claim(conn, ["default"], 1, "w", 30.0)
        conn.execute("COMMIT")
        assert len(got) == 1
        assert sql.claim(conn, ["default"], 1, "w", 30.0) == ([], True)  # a lease
    finally:
        conn.close()


async def test_signal_change_before_wait_is_not_lost() -> None:
    signal = Signal()
    seen = signal.version
    signal.notify()  # lands between a waiter's query and its wait
    with anyio.fail_after(5):
        assert await signal.wait(seen, NEVER) is True
    assert await signal.wait(signal.version, 0.01) is False


async def test_watcher_stops_when_the_database_closes(tmp_path: Path) -> None:
    before = set(_watcher_threads())
    q = AsyncSQLiteQueue(url_of(tmp_path / "stop.db"))
    await q.connect()
    await q.dequeue_many(["default"], 1, worker_id="w", wait=0.01)
    started = set(_watcher_threads()) - before
    assert len(started) == 1 and q.database.hub.watching
    await q.close()
    for thread in started:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    assert not q.database.hub.watching


async def test_lock_held_briefly_is_waited_for(tmp_path: Path) -> None:
    """A write lock held briefly elsewhere is waited for, not reported."""
    path = tmp_path / "lock.db"
    async with AsyncSQLiteQueue(url_of(path), busy_timeout=5) as q:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        timer = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
        timer.start()
        try:
            assert await q.enqueue(task(1)) is TaskStatus.PENDING
        finally:
            timer.join()
            holder.close()


# --- the bulk insert --------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path))
    return conn


def _mixed_tasks(n: int) -> list[Task]:
    now = time.time()
    return [
        task(
            i,
            queue="a" if i % 2 else "b",
            priority=i % 3,
            run_at=now + 100 if i % 4 == 0 else None,
            expires_at=now + 1000 if i % 5 == 0 else None,
            metadata={"i": i},
            kwargs={"k": [i, "x"]},
        )
        for i in range(n)
    ]


def test_bulk_fast_path_stores_what_the_general_path_stores(tmp_path: Path) -> None:
    ser = default_manager()
    tasks = _mixed_tasks(60)
    fast, general = _connect(tmp_path / "fast.db"), _connect(tmp_path / "general.db")
    try:
        assert sql.enqueue_tasks(fast, ser, tasks) == [TaskStatus.PENDING] * 60
        fast.execute("COMMIT")
        items = [(t, task_row(ser, t)) for t in tasks]
        assert sql.enqueue_general(general, items) == [TaskStatus.PENDING] * 60
        general.execute("COMMIT")
        query = "SELECT * FROM tasks ORDER BY rowid"
        assert fast.execute(query).fetchall() == general.execute(query).fetchall()
    finally:
        fast.close()
        general.close()


async def test_bulk_with_an_existing_id_reports_its_status(tmp_path: Path) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "dup.db")) as q:
        old = task(0)
        await q.enqueue(old)
        await q.dequeue_many(["default"], 1, worker_id="w")  # old is RUNNING now
        a, b = task(1), task(2)
        statuses = await q.enqueue_many([a, old.copy(), b])
        assert statuses == [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.PENDING]
        stored = await q.get(old.id)
        assert stored is not None and stored.attempt == 1 and stored.worker_id == "w"
        assert await q.count() == 3


# --- batch writes -----------------------------------------------------------------------------


async def test_complete_many_is_fenced_per_task(tmp_path: Path) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "c.db")) as q:
        await q.enqueue_many([task(i) for i in range(3)])
        t0, t1, t2 = await q.dequeue_many(["default"], 3, worker_id="w", lease=0.01)
        await anyio.sleep(0.05)  # the leases lapse: all three are claimed again
        again = {t.id: t for t in await q.dequeue_many(["default"], 3, worker_id="w2")}
        fresh0, fresh2 = again[t0.id], again[t2.id]
        assert await q.complete_many([fresh0, t1, fresh2]) == [True, False, True]
        assert await q.count(status=TaskStatus.SUCCESS) == 2
        stored = await q.get(t1.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING


async def test_complete_many_twice_the_same_task(tmp_path: Path) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "twice.db")) as q:
        await q.enqueue(task(1))
        (t,) = await q.dequeue_many(["default"], 1, worker_id="w")
        assert await q.complete_many([t, t]) == [True, False]  # as complete() twice


async def test_results_and_completion_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SQLiteBackend(url_of(tmp_path / "one.db")) as b:
        q, rs = b.task_queue, b.result_storage
        await q.enqueue_many([task(i) for i in range(3)])
        t0, t1, t2 = await q.dequeue_many(["default"], 3, worker_id="w", lease=0.01)
        await anyio.sleep(0.05)  # all leases lapse; t1's claim goes stale
        again = {t.id: t for t in await q.dequeue_many(["default"], 3, worker_id="w2")}
        batch = [
            (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=i))
            for i, t in enumerate([again[t0.id], t1, again[t2.id]])
        ]
        calls = record_transactions(monkeypatch, b.database)
        assert await q.complete_with_results(batch, rs) == [True, False, True]
        assert calls == ["_complete_with_results"]  # one transaction
        monkeypatch.undo()
        for i, t in enumerate([t0, t2]):
            got = await rs.get(t.id)
            assert got is not None and got.result == 2 * i
        assert await rs.get(t1.id) is None, "the stale claim's result must not be written"
        assert await q.count(status=TaskStatus.SUCCESS) == 2

        bad = TaskResult(task_id="x", status=TaskStatus.SUCCESS, result=object())
        rs_keyless = AsyncSQLiteResultStorage(
            database=b.database, serializer=SerializationManager(None)
        )
        await q.enqueue(task(9))
        (t9,) = await q.dequeue_many(["default"], 1, worker_id="w")
        with pytest.raises(SerializationError):
            await q.complete_with_results(
                [(t9, TaskResult(task_id=t9.id, status=TaskStatus.SUCCESS)), (t9, bad)],
                rs_keyless,
            )
        stored = await q.get(t9.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING
        assert await rs.get(t9.id) is None


async def test_results_of_the_same_file_share_the_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_of(tmp_path / "same.db")
    async with AsyncSQLiteQueue(url) as q, AsyncSQLiteResultStorage(url) as rs:
        assert q.database is not rs.database
        await q.enqueue(task(1))
        (t,) = await q.dequeue_many(["default"], 1, worker_id="w")
        calls = record_transactions(monkeypatch, q.database)
        result = TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=3)
        assert await q.complete_with_results([(t, result)], rs) == [True]
        assert calls == ["_complete_with_results"]
        got = await rs.get(t.id)
        assert got is not None and got.result == 3


async def test_results_elsewhere_take_the_two_calls(tmp_path: Path) -> None:
    async with (
        AsyncSQLiteQueue(url_of(tmp_path / "q.db")) as q,
        AsyncSQLiteResultStorage(url_of(tmp_path / "r.db")) as rs,
    ):
        await q.enqueue(task(1))
        (t,) = await q.dequeue_many(["default"], 1, worker_id="w")
        result = TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=5)
        assert await q.complete_with_results([(t, result)], rs) == [True]
        got = await rs.get(t.id)
        assert got is not None and got.result == 5


# --- group commit across kinds of write ------------------------------------------------------


def count_transactions(monkeypatch: pytest.MonkeyPatch, db: Database) -> list[int]:
    """A list that grows by one for each transaction ``db`` runs from now on."""
    commits: list[int] = []
    transaction = db._transaction

    def counted(fn: Any, args: tuple[Any, ...]) -> Any:
        commits.append(1)
        return transaction(fn, args)

    monkeypatch.setattr(db, "_transaction", counted)
    return commits


async def _hold_connection(db: Database) -> tuple[threading.Event, Any]:
    """Occupy ``db``'s thread until the returned event is set (writes queue meanwhile)."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(DEADLINE)

    job = asyncio.ensure_future(db.run(hold))
    while not entered.is_set():
        await anyio.sleep(0.001)
    return release, job


def _insert_note(conn: sqlite3.Connection, note: str, fail: bool = False) -> str:
    from omniq_sqlite._database import begin_immediate

    begin_immediate(conn)
    conn.execute("INSERT INTO notes (note) VALUES (?)", (note,))
    if fail:
        raise ValueError(f"{note} failed after writing")
    return note


async def test_writes_waiting_together_share_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "group.db")) as q:
        db = q.database
        await db.run(lambda conn: conn.execute("CREATE TABLE notes (note TEXT)"))
        await q.enqueue(task(1))
        commits = count_transactions(monkeypatch, db)
        release, holder = await _hold_connection(db)
        claim = asyncio.ensure_future(q.dequeue_many(["default"], 5, worker_id="w"))
        notes = [asyncio.ensure_future(db.run_write(_insert_note, f"n{i}")) for i in range(3)]
        await anyio.sleep(0.05)
        release.set()
        await holder
        (claimed,) = await claim
        assert [await n for n in notes] == ["n0", "n1", "n2"]
        assert claimed.status is TaskStatus.RUNNING
        assert len(commits) == 2  # the holder, then one transaction for the four writes
        monkeypatch.undo()
        stored = await q.get(claimed.id)
        assert stored is not None and stored.status is TaskStatus.RUNNING


async def test_writes_submitted_while_waiting_for_the_lock_join_that_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock while a write waits for it; the writes
    submitted meanwhile (a worker's claim behind its completions) are written in the same
    transaction once the lock is free: one commit (one fsync at FULL), not one each."""
    from omniq_sqlite._database import begin_immediate

    async with AsyncSQLiteQueue(url_of(tmp_path / "late.db")) as q:
        db = q.database
        await db.run(lambda conn: conn.execute("CREATE TABLE notes (note TEXT)"))
        other = sqlite3.connect(q.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing
        commits = count_transactions(monkeypatch, db)
        waiting = threading.Event()

        def first(conn: sqlite3.Connection) -> str:
            waiting.set()
            begin_immediate(conn)  # waits for `other`
            conn.execute("INSERT INTO notes (note) VALUES ('first')")
            return "first"

        head = asyncio.ensure_future(db.run_write(first))
        deadline = time.monotonic() + DEADLINE
        while not waiting.is_set():
            assert time.monotonic() < deadline, "the first write never started"
            await anyio.sleep(0.001)
        tail = [asyncio.ensure_future(db.run_write(_insert_note, f"n{i}")) for i in range(2)]
        while len(db._batches) < 2:  # both submitted while the first waits for the lock
            assert time.monotonic() < deadline, "the later writes were never queued"
            await anyio.sleep(0.001)
        other.execute("COMMIT")
        other.close()
        assert await head == "first"
        assert [await t for t in tail] == ["n0", "n1"]
        assert len(commits) == 1, f"one transaction for the three writes, got {len(commits)}"
        monkeypatch.undo()
        rows = await db.run(lambda conn: conn.execute("SELECT note FROM notes").fetchall())
        assert sorted(rows) == [("first",), ("n0",), ("n1",)]


async def test_a_failing_write_is_undone_alone_in_its_group(tmp_path: Path) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "isolated.db")) as q:
        db = q.database
        await db.run(lambda conn: conn.execute("CREATE TABLE notes (note TEXT)"))
        await q.enqueue(task(1))
        release, holder = await _hold_connection(db)
        good = asyncio.ensure_future(db.run_write(_insert_note, "kept"))
        bad = asyncio.ensure_future(db.run_write(_insert_note, "undone", True))
        existing = asyncio.ensure_future(q.enqueue_many([task(2), task(3)]))
        await anyio.sleep(0.05)
        release.set()
        await holder
        assert await good == "kept"
        with pytest.raises(ValueError, match="undone failed"):
            await bad
        assert await existing == [TaskStatus.PENDING, TaskStatus.PENDING]
        rows = await db.run(lambda conn: conn.execute("SELECT note FROM notes").fetchall())
        assert rows == [("kept",)]
        assert await q.count(status=TaskStatus.PENDING) == 3


async def test_bulk_enqueue_of_a_known_id_in_a_group_keeps_the_other_writes(
    tmp_path: Path,
) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "known.db")) as q:
        db = q.database
        await db.run(lambda conn: conn.execute("CREATE TABLE notes (note TEXT)"))
        first = task(1)
        await q.enqueue(first)
        (claimed,) = await q.dequeue_many(["default"], 1, worker_id="w")
        release, holder = await _hold_connection(db)
        note = asyncio.ensure_future(db.run_write(_insert_note, "before"))
        # the fast path inserts task(2), sees the conflict and undoes only its own rows
        again = asyncio.ensure_future(q.enqueue_many([task(2, id="t2"), first]))
        await anyio.sleep(0.05)
        release.set()
        await holder
        assert await note == "before"
        assert await again == [TaskStatus.PENDING, TaskStatus.RUNNING]
        rows = await db.run(lambda conn: conn.execute("SELECT note FROM notes").fetchall())
        assert rows == [("before",)]
        assert await q.count(status=TaskStatus.PENDING) == 1
        assert claimed.id == first.id


async def test_release_after_complete_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "r.db")) as q:
        a, b = task(1), task(2)
        c = task(3, depends_on=[b.id])
        await q.enqueue_many([a, b])
        assert await q.enqueue(c) is TaskStatus.WAITING
        claimed = await q.dequeue_many(["default"], 2, worker_id="w")
        assert await q.complete_many(claimed) == [True, True]
        released = await q.release_dependents_many([a.id, b.id], True)
        assert released.ready == [c.id]  # b's dependent is released, not skipped

        (leaf,) = await q.dequeue_many(["default"], 1, worker_id="w")  # c, no dependents
        assert await q.complete_many([leaf]) == [True]

        def no_round_trip(*args: Any) -> Any:
            raise AssertionError("release of a task without dependents hit the database")

        monkeypatch.setattr(q, "_run", no_round_trip)
        released = await q.release_dependents_many([leaf.id], True)
        assert released.ready == [] and released.cancelled == []


async def test_set_many_is_all_or_nothing(tmp_path: Path) -> None:
    url = url_of(tmp_path / "s.db")
    async with AsyncSQLiteResultStorage(url) as rs:
        good = [TaskResult(task_id=f"t{i}", status=TaskStatus.SUCCESS, result=i) for i in range(3)]
        await rs.set_many(good)
        got = await rs.get("t2")
        assert got is not None and got.result == 2
    keyless = SerializationManager(None)  # cannot sign dill payloads: a lambda fails
    async with AsyncSQLiteResultStorage(url, serializer=keyless) as rs:
        bad = TaskResult(task_id="bad", status=TaskStatus.SUCCESS, result=lambda: 1)
        ok = TaskResult(task_id="ok", status=TaskStatus.SUCCESS, result=1)
        with pytest.raises(SerializationError):
            await rs.set_many([ok, bad])
        assert await rs.get("ok") is None


# --- schema -------------------------------------------------------------------------------------


async def test_v1_database_migrates_with_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
        "applied_at REAL NOT NULL)"
    )
    for statement in MIGRATIONS[0].statements:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 'v1', 0)")
    ser = default_manager()
    ready, running = task(1), task(2)
    for t, status in ((ready, "pending"), (running, "running")):
        tid, queue, prio, due, run_at, exp, created, data = task_row(ser, t)
        conn.execute(
            sql.INSERT_SQL, (tid, queue, status, prio, due, run_at, exp, None, created, data)
        )
    conn.execute("UPDATE tasks SET lease_until = ?, attempt = 1 WHERE id = ?", (1e12, running.id))
    conn.close()
    async with AsyncSQLiteQueue(url_of(path)) as q:
        assert q.database.applied_migrations == [2, 3, 4, 5]
        assert await q.count("default", TaskStatus.RUNNING) == 1
        got = await q.dequeue_many(["default"], 5, worker_id="w")
        assert [t.id for t in got] == [ready.id]


def _plans(conn: sqlite3.Connection, statements: list[str]) -> dict[str, str]:
    out = {}
    for statement in statements:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
        out[statement] = " | ".join(r[3] for r in rows)
    return out


def test_hot_statements_use_indexes(tmp_path: Path) -> None:
    """Every statement of the claim, completion, lease, TTL and dependency paths reads
    tasks through an index: a partial index no longer matching its query would scan."""
    ser = default_manager()
    conn = _connect(tmp_path / "plan.db")
    try:
        dep = task(0)
        now = time.time()
        ready = [task(i, expires_at=now + 60) for i in range(1, 4)]
        sql.enqueue_tasks(conn, ser, [dep, *ready, task(9, depends_on=[dep.id])])
        conn.execute("COMMIT")
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        steps: list[Callable[[], object]] = [
            lambda: sql.claim(conn, ["default"], 2, "w", 30.0),
            lambda: sql.complete_many(conn, [(dep.id, 1)]),
            lambda: sql.release_many(conn, [dep.id], True),
            lambda: sql.claim(conn, ["default"], 10, "w", 30.0),
            lambda: sql.claim(conn, ["default"], 10, "w", 30.0),  # nothing ready
            lambda: sql.fenced(conn, [sql.FenceOp(sql.Fence.HEARTBEAT, dep.id, 1, lease=30.0)]),
            lambda: sql.expire(conn, now),
            lambda: sql.select_tasks(conn, ser, None, TaskStatus.WAITING, 10),
            lambda: sql.select_tasks(conn, ser, "default", TaskStatus.RUNNING, 10),
            lambda: sql.count_tasks(conn, "default", TaskStatus.PENDING),
            lambda: sql.count_tasks(conn, None, TaskStatus.RUNNING),
        ]
        for step in steps:
            step()
            if conn.in_transaction:
                conn.execute("COMMIT")
        conn.set_trace_callback(None)
        statements = [
            s for s in seen if " tasks" in s and not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))
        ]
        assert len(statements) >= 10
        for statement, plan in _plans(conn, statements).items():
            scans = [p for p in plan.split(" | ") if p in ("SCAN tasks", "SCAN t")]
            assert not scans, f"{statement!r} scans the table: {plan}"
    finally:
        conn.close()


def test_watcher_is_not_inherited_by_a_forked_child(tmp_path: Path) -> None:
    """A forked child starts its own watcher (the parent's thread does not exist there)."""
    url = url_of(tmp_path / "fork.db")

    async def parent_side(q: AsyncSQLiteQueue) -> None:
        await q.connect()
        await q.dequeue_many(["default"], 1, worker_id="p", wait=0.01)  # starts a watcher

    async def child_side(q: AsyncSQLiteQueue) -> str:
        async def enqueue_when_waiting() -> None:
            await _when_waiting(q.database.signal("tasks"))
            await anyio.to_thread.run_sync(
                _foreign_write, tmp_path / "fork.db", sql.INSERT_NEW_SQL,
                task_row(q.serializer, task(7, id="child-task")),
            )  # fmt: skip

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(enqueue_when_waiting)
                got = await q.dequeue_many(["default"], 1, worker_id="c", wait=NEVER)
        return ",".join(t.id for t in got)

    q = AsyncSQLiteQueue(url, poll_interval=NEVER)
    anyio.run(parent_side, q)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            msg = anyio.run(child_side, q)
        except BaseException as e:
            msg = f"{type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read().decode() == "child-task"
    os.waitpid(pid, 0)
    anyio.run(q.close)
