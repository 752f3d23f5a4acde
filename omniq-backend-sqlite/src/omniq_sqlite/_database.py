"""One SQLite connection (aiosqlite) with pragmas, migrations, retries and group commit.

Every operation is a plain function ``fn(conn, *args)`` that runs on the connection's own
thread, so a whole transaction (``BEGIN IMMEDIATE``, a few statements, ``COMMIT``) costs a
single hop from the event loop. :func:`begin_immediate` waits ``busy_timeout`` for the
write lock in fine steps; ``SQLITE_BUSY``/``SQLITE_LOCKED`` are then retried with jittered
backoff for up to ``lock_timeout`` seconds, so "database is locked" never reaches the
caller while other processes write. Waiters are woken through :mod:`omniq_sqlite._wake`.

:meth:`Database.run_batched` is group commit: writes (a claim, a batch of completions,
single-row complete/fail/heartbeat, a result, an event) submitted while the connection
is busy are written together in one transaction, so ``synchronous=FULL`` costs one fsync
per group rather than per write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from typing import Any, Generic, TypeVar

import aiosqlite

from omniq.errors import BackendError
from omniq_sqlite._aiosqlite import daemonize, raw_connection, run_on_thread, submit_on_thread
from omniq_sqlite._errors import is_busy, translate
from omniq_sqlite._migrations import migrate
from omniq_sqlite._url import Location, SQLiteOptions, build_options, check_location, parse_url
from omniq_sqlite._wake import Hub, Signal, hub_for

T = TypeVar("T")
It = TypeVar("It")
R = TypeVar("R")

log = logging.getLogger("omniq.sqlite")

#: With the change watcher, how often an idle waiter re-checks anyway (seconds).
IDLE_RECHECK = 1.0


class _Batch(Generic[It, R]):
    __slots__ = ("fn", "futures", "items")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection, list[It]], Sequence[R | BaseException]],
        first: It,
        future: asyncio.Future[R],
    ) -> None:
        self.fn = fn
        self.items: list[It] = [first]
        self.futures: list[asyncio.Future[R]] = [future]


class _Single:
    """A one-item batch function: ``fn(conn, *args)`` for :meth:`Database.run_write`."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args

    def __call__(self, conn: sqlite3.Connection, items: list[None]) -> list[Any]:
        return [self.fn(conn, *self.args)]


def _write_batch(conn: sqlite3.Connection, batch: _Batch[Any, Any], path: str) -> Sequence[Any]:
    """Write one batch under a savepoint of the open transaction: if it raises, only its
    statements are rolled back and its items get the exception."""
    conn.execute("SAVEPOINT batch")
    try:
        results = batch.fn(conn, batch.items)
    except Exception as e:
        if not conn.in_transaction or (isinstance(e, sqlite3.Error) and is_busy(e)):
            raise  # the transaction is gone (or must be retried): every batch fails
        conn.execute("ROLLBACK TO batch")
        error: BaseException = e
        if isinstance(e, sqlite3.Error):
            error = _translated(e, path)
        results = [error] * len(batch.items)
    conn.execute("RELEASE batch")
    return results


def _resolve_all(resolved: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, value in resolved:
        _resolve(fut, value)


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if fut.done():
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


class Database:
    """One database file (or ``:memory:``) behind one aiosqlite connection.

    Components share a Database through :meth:`acquire`/:meth:`release` (reference
    counted); the connection closes when the last user releases it.
    """

    def __init__(self, location: Location, options: SQLiteOptions | None = None) -> None:
        self.location = location
        self.options = options or SQLiteOptions()
        self._conn: Any = None  # aiosqlite.Connection
        self._raw: sqlite3.Connection | None = None
        self._users = 0
        self._open_lock = asyncio.Lock()
        self._batch_lock = threading.Lock()
        self._batches: dict[Hashable, _Batch[Any, Any]] = {}
        self._flush_queued = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hub: Hub | None = None
        self._watching = False
        #: Migration versions applied by the last connect (empty when up to date).
        self.applied_migrations: list[int] = []
        self.journal_mode: str | None = None
        self._pid = os.getpid()

    @classmethod
    def from_url(
        cls, url: str | None = None, *, base_dir: str | None = None, **options: Any
    ) -> Database:
        """Parse ``url`` and options (see :mod:`omniq_sqlite._url`); no I/O yet."""
        location, query = parse_url(url, base=base_dir)
        return cls(location, build_options(query, options))

    @property
    def path(self) -> str:
        """Absolute path of the database file, or ``:memory:``."""
        return self.location.path

    @property
    def url(self) -> str:
        """The URL the database was opened from."""
        return self.location.url

    @property
    def is_open(self) -> bool:
        """True while the connection is open (in this process)."""
        self._forget_after_fork()
        return self._conn is not None

    def _forget_after_fork(self) -> None:
        # A connection (and its thread) does not survive fork(): a child starts afresh.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._conn = self._raw = None
            self._users = 0
            self._open_lock = asyncio.Lock()
            self._batch_lock = threading.Lock()
            self._batches = {}
            self._flush_queued = False
            self._tasks = set()
            self._hub = None  # the parent's watcher thread did not survive either
            self._watching = False

    def __repr__(self) -> str:
        return f"Database({self.path!r})"

    # --- lifecycle ---------------------------------------------------------------------

    async def acquire(self) -> None:
        """Open the connection if needed and count one more user."""
        self._forget_after_fork()
        async with self._open_lock:
            if self._conn is None:
                await self._open()
            self._users += 1

    async def release(self) -> None:
        """Count one user less; close the connection after the last one."""
        async with self._open_lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                await self._close()

    async def close(self) -> None:
        """Close the connection now, whoever still uses it."""
        async with self._open_lock:
            self._users = 0
            await self._close()

    async def _open(self) -> None:
        check_location(self.location, self.options)
        conn = aiosqlite.connect(
            self.path,
            isolation_level=None,
            timeout=self.options.busy_timeout,
            factory=Connection,
        )
        daemonize(conn)  # an unclosed component must not hang interpreter exit
        try:
            await conn
        except sqlite3.Error as e:
            raise translate(e, self.path) from e
        self._conn = conn
        self._raw = raw_connection(conn)
        try:
            self.applied_migrations = await self.run(self._setup)
        except BaseException:
            await self._close()
            raise
        if self.applied_migrations:
            log.info("migrated SQLite database %s to schema %s", self.path, self.applied_migrations)

    def _setup(self, conn: sqlite3.Connection) -> list[int]:
        conn.execute(f"PRAGMA busy_timeout = {int(self.options.busy_timeout * 1000)}")
        if not self.location.memory:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            self.journal_mode = str(mode).lower()
            if self.journal_mode != "wal":
                log.warning(
                    "SQLite database %s could not switch to WAL (journal_mode=%s); "
                    "several processes will block each other more",
                    self.path,
                    mode,
                )
        conn.execute(f"PRAGMA synchronous = {self.options.synchronous.upper()}")
        conn.execute("PRAGMA temp_store = MEMORY")
        applied = migrate(conn, self.path)
        if isinstance(conn, Connection) and self.journal_mode == "wal":
            # From now on begin_immediate waits for the write lock (finer than SQLite).
            # Not in rollback-journal mode, where COMMIT itself may wait for readers.
            conn.lock_wait = self.options.busy_timeout
            conn.execute("PRAGMA busy_timeout = 0")
        return applied

    async def _close(self) -> None:
        if self._watching and self._hub is not None:
            self._watching = False
            self._hub.release()
        conn, self._conn, self._raw = self._conn, None, None
        if conn is None:
            return
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await conn.close()
        except sqlite3.Error as e:  # pragma: no cover - close rarely fails
            log.warning("closing SQLite database %s failed: %s", self.path, e)

    # --- running work on the connection's thread --------------------------------------

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None:
            raise BackendError(
                f"SQLite database {self.path} is not connected (the component was closed); "
                "call connect() or use `async with`"
            )
        return conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` as one transaction on the connection's thread.

        ``fn`` starts a write transaction with :func:`begin_immediate` when it needs one;
        whatever transaction is open when it returns is committed, and rolled back when it
        raises. Busy errors re-run ``fn`` with backoff.
        """
        conn = self._connection()
        try:
            result: T = await run_on_thread(conn, self._transaction, fn, args)
        except sqlite3.Error as e:
            raise translate(e, self.path) from e
        return result

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        raw = self._raw
        if raw is None:
            raise BackendError(f"SQLite database {self.path} was closed")
        delay = 0.001
        deadline: float | None = None
        while True:
            try:
                result = fn(raw, *args)
                if raw.in_transaction:
                    _commit(raw)
                return result
            except sqlite3.OperationalError as e:
                _rollback(raw)
                if not is_busy(e):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.options.lock_timeout
                if now >= deadline:
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)
            except BaseException:
                _rollback(raw)
                raise

    async def run_batched(
        self,
        key: Hashable,
        fn: Callable[[sqlite3.Connection, list[It]], Sequence[R | BaseException]],
        item: It,
    ) -> R:
        """Group commit: run ``fn(conn, items)`` once for every ``item`` submitted under
        ``key`` while the connection was busy; ``fn`` returns one result (or exception)
        per item, in order.

        Every batch waiting when the connection frees up (whatever its key) is written
        in the same transaction, each under its own savepoint: an error in one batch
        undoes only that batch's statements.
        """
        conn = self._connection()
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        with self._batch_lock:
            batch = self._batches.get(key)
            if batch is None:
                self._batches[key] = _Batch(fn, item, fut)
            else:
                batch.items.append(item)
                batch.futures.append(fut)
            drive = not self._flush_queued
            self._flush_queued = True
        if drive:  # nothing queued on the connection's thread yet: queue one flush
            try:  # _flush resolves the futures itself: nothing to hand back
                submit_on_thread(conn, self._flush)
            except ValueError as e:  # aiosqlite: the connection was closed meanwhile
                with self._batch_lock:
                    orphans = list(self._batches.values())
                    self._batches.clear()
                    self._flush_queued = False
                err = BackendError(f"SQLite database {self.path} was closed during a write")
                for b in orphans:
                    for f in b.futures:
                        _resolve(f, err)
                raise err from e
        return await fut

    async def run_write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` like :meth:`run`, in the same transaction as the other
        writes waiting for the connection (see :meth:`run_batched`): a worker's claim and
        its previous batch's completion then cost one commit (one fsync)."""
        return await self.run_batched(object(), _Single(fn, args), None)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_batches(self) -> list[_Batch[Any, Any]]:
        with self._batch_lock:
            batches = list(self._batches.values())
            self._batches.clear()
            self._flush_queued = False
        return batches

    def _flush(self) -> None:
        """Runs on the connection's thread: write every batch waiting, in one
        transaction, and resolve their futures (nobody awaits this call itself: it
        must not raise)."""
        batches = self._take_batches()
        if not batches:
            return
        outcome: list[Sequence[Any]]
        try:
            outcome = self._transaction(self._write_batches, (batches,))
        except sqlite3.Error as e:
            outcome = [[_translated(e, self.path)] * len(b.items) for b in batches]
        except Exception as e:
            outcome = [[e] * len(b.items) for b in batches]
        try:
            pairs = [
                (fut, value)
                for batch, results in zip(batches, outcome, strict=True)
                for fut, value in zip(batch.futures, results, strict=True)
            ]
        except ValueError as e:  # a batch function broke its contract: nobody waits forever
            log.error("SQLite database %s: a write returned a wrong number of results", self.path)
            err = BackendError(f"internal error writing to SQLite database {self.path}: {e}")
            pairs = [(fut, err) for batch in batches for fut in batch.futures]
        # one wake-up per event loop, not one per item: a claim of 100 tasks and a
        # batch of 100 completions would otherwise cost 200 self-pipe writes
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for fut, value in pairs:
            by_loop.setdefault(fut.get_loop(), []).append((fut, value))
        for loop, resolved in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, resolved)
            except RuntimeError:  # pragma: no cover - the caller's loop is gone
                pass

    def _write_batches(
        self, conn: sqlite3.Connection, batches: list[_Batch[Any, Any]]
    ) -> list[Sequence[Any]]:
        """Write ``batches`` in one transaction (each under its own savepoint when there
        are several), then the batches submitted while it waited for the write lock.

        A lone batch runs without a savepoint and takes the write lock itself, so a
        claim's read-only probe finds an empty queue without locking. Writes submitted
        while another process held the lock join the transaction (``batches`` grows,
        for the caller to resolve): with several worker processes a claim and the
        previous batch's completions would otherwise each wait for the lock and each
        pay a commit (one fsync with ``synchronous=FULL``).
        """
        outcome: list[Sequence[Any]]
        if len(batches) == 1:
            outcome = [batches[0].fn(conn, batches[0].items)]
        else:
            begin_immediate(conn)
            outcome = [_write_batch(conn, b, self.path) for b in batches]
        if conn.in_transaction:
            late = self._take_batches()
            batches.extend(late)
            outcome.extend(_write_batch(conn, b, self.path) for b in late)
        return outcome

    def submit_nowait(self, fn: Callable[..., Any], *args: Any) -> None:
        """Fire and forget ``fn(conn, *args)`` as a transaction (errors are logged)."""

        async def runner() -> None:
            try:
                await self.run(fn, *args)
            except Exception as e:
                log.warning("background write to SQLite database %s failed: %s", self.path, e)

        if self._conn is not None:
            self._spawn(runner())

    # --- wake-ups ------------------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        """Wake-up signals of this file in this process (see :mod:`omniq_sqlite._wake`)."""
        self._forget_after_fork()
        if self._hub is None:
            self._hub = Hub(None) if self.location.memory else hub_for(self.path)
        return self._hub

    def signal(self, kind: str) -> Signal:
        """The wake-up signal for ``kind`` ("tasks", "results") of this file."""
        return self.hub.signal(kind)

    def watch(self) -> bool:
        """Make commits by other processes wake this process's waiters (starts the
        file's watcher thread once). True when every change will be signalled: always
        for ``:memory:`` (private to this process), else while the watcher runs."""
        hub = self.hub
        if self.location.memory:
            return True
        if self._watching and not hub.watching:  # its thread failed: start another
            self._watching = False
            hub.release()
        if not self._watching and self._conn is not None:
            self._watching = hub.retain()
        return self._watching and hub.watching


class Poll:
    """The sleep between two checks of a waiter (``dequeue(wait=)``, ``wait()``).

    With the change watcher running, every commit wakes the waiter at once; it re-checks
    every ``poll_interval`` only while something may become ready by the clock (a delayed
    task, a lease that may lapse), else every ``max(poll_interval, 1 s)`` as a safety net.
    Without the watcher it backs off from 2 ms to ``poll_interval``.
    """

    __slots__ = ("db", "delay", "limit", "watched")

    def __init__(self, db: Database, waits: bool) -> None:
        self.db = db
        self.limit = max(db.options.poll_interval, 0.001)
        self.watched = waits and db.watch()
        self.delay = 0.002

    async def wait(self, signal: Signal, seen: int, remaining: float, *, soon: bool = True) -> None:
        """Sleep until ``signal`` moves past ``seen``, the delay or ``remaining`` ends."""
        if self.watched and (self.db.location.memory or self.db.hub.watching):
            idle = self.limit if soon else max(self.limit, IDLE_RECHECK)
            await signal.wait(seen, min(idle, remaining))
            return
        woken = await signal.wait(seen, min(self.delay, remaining))
        self.delay = 0.002 if woken else min(self.delay * 2, self.limit)


def _translated(e: sqlite3.Error, path: str) -> BaseException:
    err = translate(e, path)
    err.__cause__ = e
    return err


def _commit(raw: sqlite3.Connection) -> None:
    """COMMIT (a function of its own: ``benchmarks budget`` finds it in stack samples)."""
    raw.execute("COMMIT")


def _rollback(raw: sqlite3.Connection) -> None:
    if raw.in_transaction:
        try:
            raw.execute("ROLLBACK")
        except sqlite3.Error:  # pragma: no cover - nothing more to undo
            pass


class Connection(sqlite3.Connection):
    """A sqlite3 connection that waits for the write lock itself (see :func:`begin_immediate`)."""

    #: Seconds ``begin_immediate`` waits for another connection's write lock.
    lock_wait: float | None = None
    #: The staged batch this connection decoded or wrote last (see ``_staging``).
    decoded_batch: Any = None
    #: Tasks this connection claimed as claimed batches, by id: ((seq, claim token),
    #: stored row), for their completion (see ``_staging.finish_claimed``).
    claimed: dict[str, Any] | None = None


#: Sleeps between attempts to take the write lock: from LOCK_STEP_MIN, doubling up to
#: LOCK_STEP_FINE while the wait is shorter than LOCK_FINE_FOR, then up to LOCK_STEP_MAX.
LOCK_STEP_MIN = 0.00005
LOCK_STEP_FINE = 0.0002
LOCK_FINE_FOR = 0.05
LOCK_STEP_MAX = 0.002


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Start a write transaction (takes the write lock now).

    While another connection writes, our connections wait here in steps from 50 us to
    200 us, and after 50 ms in steps up to 2 ms (their ``busy_timeout`` is 0): SQLite's
    own busy handler sleeps at least 1 ms, which is longer than most write transactions
    here take. Worker processes sharing a file hand the lock to each other all the time
    (a transaction with ``synchronous=FULL`` holds it through its fsync, a few ms):
    every step of sleep past the release is time nobody writes, so the steps stay fine
    while the wait is short; a failed attempt costs ~2 us of CPU. After ``lock_wait``
    seconds the busy error goes to :meth:`Database._transaction`, which retries up to
    ``lock_timeout``.
    """
    if conn.in_transaction:
        return
    wait = getattr(conn, "lock_wait", None)
    if wait is None:  # a plain connection: SQLite's busy_timeout applies
        conn.execute("BEGIN IMMEDIATE")
        return
    started = 0.0
    step = LOCK_STEP_MIN
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            now = time.monotonic()
            if not started:
                started = now
            elif now - started >= wait:
                raise
        time.sleep(step)
        cap = LOCK_STEP_FINE if now - started < LOCK_FINE_FOR else LOCK_STEP_MAX
        step = min(step * 2, cap)
