"""SQLite-specific behaviour: URLs, bad paths, migrations, pragmas, locks, bundle, plugin.

Every test uses its own files under ``tmp_path``. Read-only directories are tested for
real: as root (who ignores permissions) the check runs in a child process as ``nobody``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq.errors import BackendError, ConfigurationError, SerializationError
from omniq.models import EventType, Schedule, Task, TaskEvent, TaskResult, TaskStatus
from omniq.sync import public_coroutine_methods
from omniq_sqlite import (
    DEFAULT_URL,
    LATEST_VERSION,
    AsyncSQLiteEventStorage,
    AsyncSQLiteQueue,
    AsyncSQLiteResultStorage,
    AsyncSQLiteScheduleStorage,
    Database,
    SQLiteBackend,
    SQLiteEventStorage,
    SQLiteQueue,
    SQLiteResultStorage,
    SQLiteScheduleStorage,
)
from omniq_sqlite._migrations import migrate, schema_version

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def task(i: int = 0, **fields: Any) -> Task:
    return Task(func="tests:noop", args=(i,), **fields)


# --- URLs ---------------------------------------------------------------------------------


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # relative paths live in the base directory: OMNIQ_BASE_DIR, else .omniq in the cwd
    monkeypatch.delenv("OMNIQ_BASE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / ".omniq"
    assert Database.from_url("sqlite:///rel/x.db").path == str(data / "rel" / "x.db")
    assert Database.from_url(None).path == str(data / "omniq.db")
    assert Database.from_url("sqlite:////abs/dir/x.db").path == "/abs/dir/x.db"
    assert Database.from_url("sqlite://:memory:").location.memory
    assert Database.from_url("sqlite:///:memory:").location.memory
    assert Database.from_url("sqlite:///x.db", base_dir="/srv/app").path == "/srv/app/x.db"
    monkeypatch.setenv("OMNIQ_BASE_DIR", str(tmp_path / "base"))
    assert Database.from_url("sqlite:///x.db").path == str(tmp_path / "base" / "x.db")
    assert Database.from_url(None).path == str(tmp_path / "base" / "omniq.db")
    monkeypatch.setenv("OMNIQ_BASE_DIR", "rel-base")
    assert Database.from_url(None).path == str(tmp_path / "rel-base" / "omniq.db")
    assert DEFAULT_URL == "sqlite:///omniq.db"


def test_url_options_in_query_and_keywords() -> None:
    db = Database.from_url("sqlite:////tmp/x.db?synchronous=normal&busy_timeout=2.5")
    assert db.options.synchronous == "normal" and db.options.busy_timeout == 2.5
    db = Database.from_url("sqlite:////tmp/x.db?synchronous=normal", synchronous="full")
    assert db.options.synchronous == "full"  # keywords win


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite://relative.db", "three slashes"),
        ("sqlite://", "names no database file"),
        ("tasks.db", "malformed SQLite URL"),
        ("postgres://h/db", "sqlite:// URL"),
        ("sqlite:///x.db?synchronous=fast", "synchronous"),
        ("sqlite:///x.db?busy_timeout=-1", "busy_timeout"),
        ("sqlite:///x.db?colour=blue", "known options"),
        ("sqlite:///x.db?stage_min=-1", "stage_min"),
        ("sqlite:///x.db?stage_min=many", "stage_min"),
    ],
)
def test_bad_urls_and_options(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AsyncSQLiteQueue.from_url(url)


# --- bad paths ----------------------------------------------------------------------------


async def test_default_data_dir_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNIQ_BASE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    async with AsyncSQLiteQueue() as q:  # .omniq/omniq.db in the current directory
        await q.enqueue(task())
        assert q.path == str(tmp_path / ".omniq" / "omniq.db")
    assert (tmp_path / ".omniq" / "omniq.db").is_file()
    monkeypatch.setenv("OMNIQ_BASE_DIR", str(tmp_path / "state" / "omniq"))
    async with AsyncSQLiteQueue() as q:  # a configured base directory is created too
        await q.enqueue(task())
    assert (tmp_path / "state" / "omniq" / "omniq.db").is_file()
    with pytest.raises(ConfigurationError, match="does not exist"):  # but not sub-directories
        await AsyncSQLiteQueue("sqlite:///sub/x.db").connect()


async def test_missing_directory_names_path_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "deeper" / "x.db"
    q = AsyncSQLiteQueue(url_of(path))
    with pytest.raises(ConfigurationError) as e:
        await q.connect()
    msg = str(e.value)
    assert str(path) in msg and "does not exist" in msg and "mkdir -p" in msg
    assert "create_dirs=True" in msg
    assert not path.parent.exists()
    async with AsyncSQLiteQueue(url_of(path), create_dirs=True) as q2:
        assert await q2.enqueue(task()) is TaskStatus.PENDING


async def test_path_under_a_file_or_a_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="not a directory"):
        await AsyncSQLiteQueue(url_of(blocker / "x.db")).connect()
    with pytest.raises(ConfigurationError, match="is a directory"):
        await AsyncSQLiteQueue(url_of(tmp_path)).connect()


def _connect_error(path: Path) -> str:
    """Try to open ``path``; the ConfigurationError message, or "" when it worked."""
    try:
        anyio.run(AsyncSQLiteQueue(url_of(path)).connect)
    except ConfigurationError as e:
        return str(e)
    return ""


def _connect_error_as_nobody(path: Path) -> str:
    """The same check in a forked child that dropped root privileges (root ignores
    permission bits, so a read-only directory can only be tested as another user)."""
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no exec needed, the modules are already imported
        try:
            os.close(r)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            msg = _connect_error(path) or "NO ERROR"
        except BaseException as e:
            msg = f"CHILD FAILED: {type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_read_only_directory() -> None:
    base = Path(tempfile.mkdtemp(prefix="omniq-ro-"))
    ro = base / "ro"
    ro.mkdir()
    path = ro / "x.db"
    try:
        base.chmod(0o755)
        ro.chmod(0o555)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("nobody")
            except KeyError:
                pytest.skip("running as root and there is no 'nobody' user to test as")
            msg = _connect_error_as_nobody(path)
        else:
            msg = _connect_error(path)
        assert str(ro) in msg and "not writable" in msg, msg
        assert not path.exists()
    finally:
        ro.chmod(0o755)
        shutil.rmtree(base)


async def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(ConfigurationError) as e:
        await AsyncSQLiteQueue(url_of(path)).connect()
    assert str(path) in str(e.value) and "not an SQLite database" in str(e.value)
    assert path.read_bytes().startswith(b"these are my notes")  # left untouched


async def test_disk_full_is_a_clear_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    async with AsyncSQLiteQueue(url_of(path)) as q:
        await q.enqueue(task())
        # SQLite's page limit fails writes exactly as a full disk does (SQLITE_FULL)
        (pages,) = await q.database.run(lambda c: c.execute("PRAGMA page_count").fetchone())
        await q.database.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))
        big = [task(i, kwargs={"blob": "x" * 50_000}) for i in range(20)]
        with pytest.raises(BackendError) as e:
            await q.enqueue_many(big)
        assert "disk is full" in str(e.value) and str(path) in str(e.value)
        assert await q.count() == 1  # the failed batch was rolled back as a whole
        claimed = await q.dequeue(["default"], worker_id="w")
        assert claimed is not None and await q.complete(claimed)


# --- schema, pragmas ----------------------------------------------------------------------


async def test_migrations_applied_once_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    q1 = AsyncSQLiteQueue(url_of(path))
    await q1.connect()
    assert q1.database.applied_migrations == list(range(1, LATEST_VERSION + 1))
    q2 = AsyncSQLiteResultStorage(url_of(path))
    await q2.connect()
    assert q2.database.applied_migrations == []  # already up to date
    await q1.close()
    await q2.close()
    with sqlite3.connect(path) as conn:
        assert migrate(conn, str(path)) == []
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"tasks", "task_deps", "results", "events", "schedules"} <= tables
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"tasks_ready", "tasks_running", "events_task", "schedules_due"} <= indexes
        assert not {"tasks_claim", "tasks_state"} & indexes  # replaced by migration 2
    conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with AsyncSQLiteQueue(url_of(path)):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'from the future', 0)")
    conn.close()
    with pytest.raises(BackendError, match="newer than this omniq-backend-sqlite"):
        await AsyncSQLiteQueue(url_of(path)).connect()
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == 999
    conn.close()


@pytest.mark.parametrize(("option", "expected"), [(None, 2), ("normal", 1)])
async def test_pragmas(tmp_path: Path, option: str | None, expected: int) -> None:
    opts = {} if option is None else {"synchronous": option}
    async with AsyncSQLiteQueue(url_of(tmp_path / "p.db"), busy_timeout=1.5, **opts) as q:
        db = q.database
        assert await db.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        assert await db.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == expected
        # busy_timeout is applied by begin_immediate (finer steps than SQLite's handler)
        assert await db.run(lambda c: c.lock_wait) == 1.5
        assert await db.run(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == 0


# --- locks: retried, never surfaced -------------------------------------------------------


def _hold_write_lock(path: Path, seconds: float, started: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO events (id, event_type, timestamp) VALUES ('x', 'enqueued', 0)")
    started.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


async def test_lock_held_longer_than_busy_timeout_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    async with AsyncSQLiteQueue(url_of(path), busy_timeout=0.05, lock_timeout=30) as q:
        started = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 0.8, started))
        holder.start()
        started.wait()
        statuses = await q.enqueue_many([task(i) for i in range(10)])  # waits, no error
        assert statuses == [TaskStatus.PENDING] * 10
        got = await q.dequeue_many(["default"], 10, worker_id="w")
        assert len(got) == 10
        holder.join()


async def test_lock_timeout_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lock2.db"
    async with AsyncSQLiteQueue(url_of(path), busy_timeout=0.05, lock_timeout=0.3) as q:
        started = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 1.5, started))
        holder.start()
        started.wait()
        with pytest.raises(BackendError) as e:
            await q.enqueue(task())
        assert "stayed locked" in str(e.value) and str(path) in str(e.value)
        holder.join()
        assert await q.enqueue(task()) is TaskStatus.PENDING


async def test_cancelled_claim_is_handed_back(tmp_path: Path) -> None:
    path = tmp_path / "cancel.db"
    async with AsyncSQLiteQueue(url_of(path), busy_timeout=5) as q:
        t = task()
        await q.enqueue(t)
        started = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 0.6, started))
        holder.start()
        started.wait()
        with anyio.move_on_after(0.2):  # the claim waits for the lock, then is cancelled
            await q.dequeue(["default"], worker_id="w")
        holder.join()

        async def handed_back() -> bool:
            stored = await q.get(t.id)
            return stored is not None and stored.status is TaskStatus.PENDING

        deadline = time.monotonic() + 10
        while not await handed_back() and time.monotonic() < deadline:
            await anyio.sleep(0.02)
        stored = await q.get(t.id)
        assert stored is not None and stored.status is TaskStatus.PENDING and stored.attempt == 0
        again = await q.dequeue(["default"], worker_id="w2")
        assert again is not None and again.attempt == 1


# --- queue details ------------------------------------------------------------------------


async def test_group_commit_of_concurrent_fenced_writes(tmp_path: Path) -> None:
    async with AsyncSQLiteQueue(url_of(tmp_path / "g.db")) as q:
        await q.enqueue_many([task(i) for i in range(300)])
        claimed = await q.dequeue_many(["default"], 300, worker_id="w")
        assert len(claimed) == 300
        stale = claimed[0].copy(attempt=claimed[0].attempt + 5)
        results = await _gather([q.complete(t) for t in claimed[1:]] + [q.complete(stale)])
        assert results == [True] * 299 + [False]
        assert await q.count(status=TaskStatus.SUCCESS) == 299
        statuses = await _gather([q.enqueue(task(i)) for i in range(100)])
        assert statuses == [TaskStatus.PENDING] * 100


async def _gather(aws: list[Any]) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*aws))


async def test_dependency_completing_during_enqueue_never_strands(tmp_path: Path) -> None:
    url = url_of(tmp_path / "deps.db")
    async with AsyncSQLiteQueue(url) as worker, AsyncSQLiteQueue(url) as producer:
        for i in range(40):
            a = task(i)
            await producer.enqueue(a)
            claimed = await worker.dequeue(["default"], worker_id="w")
            assert claimed is not None
            b = task(i, depends_on=[a.id])

            async def finish(claimed: Task = claimed) -> None:
                assert await worker.complete(claimed)
                await worker.release_dependents(claimed.id, True)

            async with anyio.create_task_group() as tg:
                tg.start_soon(finish)
                tg.start_soon(producer.enqueue, b)
            stored = await producer.get(b.id)
            assert stored is not None and stored.status is TaskStatus.PENDING, i
            got = await worker.dequeue(["default"], worker_id="w")
            assert got is not None and got.id == b.id and await worker.complete(got)


async def test_corrupt_payload_reads_and_dependents(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    async with AsyncSQLiteQueue(url_of(path)) as q:
        a, ok = task(1), task(2)
        dependent = task(3, depends_on=[a.id])
        await q.enqueue_many([a, ok, dependent])
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE tasks SET data = x'01c1' WHERE id = ?", (a.id,))
        conn.close()
        listed = await q.list()
        assert len(listed) == 3 and listed[0].metadata.get("corrupt") is True
        claimed = await q.dequeue(["default"], worker_id="w")
        assert claimed is not None and claimed.id == ok.id
        stored = await q.get(a.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        assert "cannot be decoded" in (stored.error or "")
        dep = await q.get(dependent.id)
        assert dep is not None and dep.status is TaskStatus.CANCELLED


async def test_corrupt_schedule_is_parked(tmp_path: Path) -> None:
    path = tmp_path / "sched.db"
    async with AsyncSQLiteScheduleStorage(url_of(path)) as s:
        now = time.time()
        bad = Schedule(func="m:f", interval=60, start_at=now - 90)
        good = Schedule(func="m:f", interval=60, start_at=now - 80)
        await s.save(bad)
        await s.save(good)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE schedules SET data = x'01c1' WHERE id = ?", (bad.id,))
        conn.close()
        assert [x.id for x in await s.claim_due(now)] == [good.id]
        assert [x.id for x in await s.list()] == [good.id]
        with pytest.raises(SerializationError, match=bad.id):
            await s.get(bad.id)


async def test_events_are_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "ev.db"
    async with AsyncSQLiteEventStorage(url_of(path)) as ev:
        await ev.log(TaskEvent(event_type=EventType.ERROR, task_id="t", metadata={"k": [1]}))
        with pytest.raises(SerializationError, match="JSON"):
            await ev.log(TaskEvent(event_type=EventType.ERROR, metadata={"x": object()}))
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT event_type, task_id, metadata FROM events").fetchone()
    conn.close()
    assert row == ("error", "t", '{"k":[1]}')


# --- bundle, memory, sync twins, plugin ---------------------------------------------------


async def test_memory_backend_shares_one_connection() -> None:
    async with SQLiteBackend("sqlite://:memory:") as b:
        assert {c.database for c in b.components} == {b.database}
        t = task()
        await b.task_queue.enqueue(t)
        await b.result_storage.set(TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=3))
        await b.event_storage.log(TaskEvent(event_type=EventType.ENQUEUED, task_id=t.id))
        await b.schedule_storage.save(Schedule(func="m:f", interval=5))
        n = await b.database.run(
            lambda c: [c.execute(f"SELECT count(*) FROM {x}").fetchone()[0]
                       for x in ("tasks", "results", "events", "schedules")]
        )  # fmt: skip
        assert n == [1, 1, 1, 1]
    # separate :memory: components are separate databases
    async with AsyncSQLiteQueue("sqlite://:memory:") as q1, AsyncSQLiteQueue(
        "sqlite://:memory:"
    ) as q2:
        await q1.enqueue(task())
        assert await q2.count() == 0


async def test_file_backend_bundle(tmp_path: Path) -> None:
    url = url_of(tmp_path / "bundle.db")
    b = SQLiteBackend.from_url(url, synchronous="normal")
    async with b:
        await b.task_queue.enqueue(task())
        assert b.database.is_open
    assert not b.database.is_open
    async with AsyncSQLiteQueue(url) as q:  # the data is in the file
        assert await q.count() == 1


def test_sync_twins(tmp_path: Path) -> None:
    pairs = [
        (SQLiteQueue, AsyncSQLiteQueue),
        (SQLiteResultStorage, AsyncSQLiteResultStorage),
        (SQLiteEventStorage, AsyncSQLiteEventStorage),
        (SQLiteScheduleStorage, AsyncSQLiteScheduleStorage),
    ]
    for sync_cls, async_cls in pairs:
        for name in public_coroutine_methods(async_cls):
            assert hasattr(sync_cls, f"{name}_sync"), f"{sync_cls.__name__}.{name}_sync"
    with SQLiteQueue.from_url(url_of(tmp_path / "sync.db")) as q:
        assert q.enqueue_sync(task(5)) is TaskStatus.PENDING
        claimed = q.dequeue_sync(["default"], worker_id="w")
        assert claimed is not None and claimed.args == (5,)
        assert q.complete_sync(claimed)
        assert "sync.db" in repr(q)


def test_plugin_registers_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omniq.plugins import create_component, get_plugin_manager, reset_plugin_manager

    reset_plugin_manager()
    spec, _ = get_plugin_manager().backends()["sqlite"]
    assert spec.schemes == ("sqlite",) and spec.default_url == "sqlite:///omniq.db"
    assert spec.package == "omniq-backend-sqlite"
    assert spec.component("task_queue") is AsyncSQLiteQueue
    assert spec.component("result_storage") is AsyncSQLiteResultStorage
    assert spec.component("event_storage") is AsyncSQLiteEventStorage
    assert spec.component("schedule_storage") is AsyncSQLiteScheduleStorage
    monkeypatch.delenv("OMNIQ_BASE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    q = create_component("task_queue", type="sqlite")
    assert isinstance(q, AsyncSQLiteQueue)
    assert q.path == str(tmp_path / ".omniq" / "omniq.db")  # the documented default
    monkeypatch.setenv("OMNIQ_BASE_DIR", str(tmp_path / "elsewhere"))
    q = create_component("task_queue", type="sqlite")
    assert q.path == str(tmp_path / "elsewhere" / "omniq.db")
    by_url = create_component("result_storage", url=url_of(tmp_path / "r.db"))
    assert isinstance(by_url, AsyncSQLiteResultStorage)


def test_plugin_module_imports_no_driver() -> None:
    code = (
        "import sys, omniq_sqlite.plugin as p; p.omniq_backends(); "
        "print('aiosqlite' in sys.modules, 'omniq_sqlite._queue' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_forked_child_reconnects(tmp_path: Path) -> None:
    url = url_of(tmp_path / "fork.db")

    async def parent_side(q: AsyncSQLiteQueue) -> None:
        await q.connect()
        await q.enqueue(task(1))

    async def child_side(q: AsyncSQLiteQueue) -> str:
        claimed = await q.dequeue(["default"], worker_id="child")
        return "ok" if claimed is not None and await q.complete(claimed) else "none"

    q = AsyncSQLiteQueue(url)
    anyio.run(parent_side, q)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the inherited connection and its thread are unusable here
        try:
            msg = anyio.run(child_side, q)
        except BaseException as e:
            msg = f"{type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read().decode() == "ok"
    os.waitpid(pid, 0)

    async def check() -> None:
        assert await q.count(status=TaskStatus.SUCCESS) == 1
        await q.close()

    anyio.run(check)
