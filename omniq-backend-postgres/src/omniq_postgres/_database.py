"""One asyncpg pool per backend, schema migration, and the LISTEN connection.

The four components of a :class:`~omniq_postgres.PostgresBackend` share one
:class:`Database` (one pool); a component built alone owns its own. LISTEN needs a
dedicated long-lived connection, not a pool checkout (asyncpg#189, #283), and a
dropped listener is not detected reliably (asyncpg#519): waiters therefore also poll
slowly (``poll_interval``), and the listener is re-opened lazily after it is lost.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from omniq.errors import BackendError, BackendUnavailableError, ConfigurationError, OmniQError
from omniq_postgres._migrations import MIGRATIONS, applied_versions, channel, migrate
from omniq_postgres._url import PostgresOptions, parse, redact

log = logging.getLogger("omniq.postgres")

T = TypeVar("T")

#: Errors that mean the connection or the server went away.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    # a pooled connection left mid-protocol by a dropped server (seen with asyncpg 0.32)
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


async def _reset(conn: asyncpg.Connection) -> None:
    """Nothing more to reset when a connection goes back to the pool. asyncpg rolls
    back a transaction left open itself; its default reset also sends ``RESET ALL;
    UNLISTEN *; CLOSE ALL; ...``, a round trip per operation, for session state this
    backend never leaves on pooled connections (LISTEN has its own connection)."""


#: ``reset=`` exists from asyncpg 0.30 on; 0.29 keeps its default reset.
_POOL_RESET: dict[str, Any] = (
    {"reset": _reset} if "reset" in inspect.signature(asyncpg.create_pool).parameters else {}
)


class Signal:
    """Wakes waiters of this process when a NOTIFY arrives (or a local write happens)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """The event the next notification sets: take it *before* checking the store."""
        return self._event

    def notify(self) -> None:
        """Wake every waiter holding the current event."""
        event, self._event = self._event, asyncio.Event()
        event.set()


def connect_error(opts: PostgresOptions, e: BaseException) -> OmniQError:
    """A clear error for a failed connection, naming host and database (no password)."""
    where = f"PostgreSQL at {opts.host}, database {opts.database!r}"
    url = redact(opts.dsn)
    if isinstance(
        e, asyncpg.exceptions.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return ConfigurationError(
            f"cannot log in to {where}: {e}. Check the user and password in the URL ({url})."
        )
    if isinstance(e, asyncpg.exceptions.InvalidCatalogNameError):
        return ConfigurationError(
            f"{where} does not exist: {e}. Create it (createdb) or fix the URL ({url})."
        )
    if isinstance(e, asyncio.TimeoutError | TimeoutError):
        return BackendUnavailableError(
            f"cannot reach {where}: no answer within {opts.connect_timeout:g}s ({url}). "
            "Is the server running and the host reachable?"
        )
    if isinstance(e, OSError | ConnectionError | asyncpg.exceptions.CannotConnectNowError):
        return BackendUnavailableError(
            f"cannot reach {where}: {e} ({url}). Is the server running and listening there?"
        )
    return BackendError(f"cannot connect to {where}: {type(e).__name__}: {e} ({url})")


class Database:
    """A shared pool over one schema, opened by the first component and closed by the
    last (reference counted)."""

    def __init__(self, opts: PostgresOptions) -> None:
        self.options = opts
        self.schema = opts.schema
        self._pool: asyncpg.Pool | None = None
        self._users = 0
        self._lock: asyncio.Lock | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None
        self.signals = {"tasks": Signal(), "results": Signal()}
        self.channels = {kind: channel(opts.schema, kind) for kind in self.signals}

    @classmethod
    def from_url(cls, url: str | None, **options: Any) -> Database:
        """A database handle (no I/O yet)."""
        return cls(parse(url, **options))

    @property
    def url(self) -> str:
        """The URL, password redacted."""
        return self.options.url

    @property
    def is_open(self) -> bool:
        """True while the pool is open."""
        return self._pool is not None

    # --- lifecycle ---------------------------------------------------------------------

    async def acquire(self) -> None:
        """Open the pool (and migrate the schema) for one more user."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._pool is None:
                self._pool = await self._open()
            self._users += 1

    async def release(self) -> None:
        """Drop one user; the last one closes the pool and the listener."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self.close()

    async def close(self) -> None:
        """Close the pool and the listener now."""
        pool, self._pool = self._pool, None
        self._users = 0
        await self._close_listener()
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except (TimeoutError, Exception):
                pool.terminate()

    async def _open(self) -> asyncpg.Pool:
        """Open the pool. A server that refuses connections (down, or restarting) is
        retried until ``connect_timeout`` has passed; then, or at once for a wrong
        user, password or database, a clear error names host and database."""
        opts = self.options
        settings = {"search_path": self.schema, **opts.server_settings}
        if "application_name" not in opts.dsn and "application_name" not in settings:
            # operators see which process holds a connection (pg_stat_activity)
            settings["application_name"] = f"omniq:{os.getpid()}"
        deadline = time.monotonic() + opts.connect_timeout
        delay = 0.05
        while True:
            try:
                pool = await asyncio.wait_for(
                    asyncpg.create_pool(
                        opts.dsn,
                        min_size=min(opts.min_size, opts.max_size),
                        max_size=opts.max_size,
                        timeout=opts.connect_timeout,
                        command_timeout=opts.command_timeout,
                        server_settings=settings,
                        max_inactive_connection_lifetime=300.0,
                        **_POOL_RESET,
                    ),
                    opts.connect_timeout + 1,
                )
                break
            except Exception as e:
                error = connect_error(opts, e)
                transient = isinstance(error, BackendUnavailableError) and not isinstance(
                    e, asyncio.TimeoutError | TimeoutError
                )
                if not transient or time.monotonic() + delay > deadline:
                    raise error from e
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        try:
            async with pool.acquire() as conn:
                await migrate(conn, self.schema)
        except BaseException:
            pool.terminate()
            raise
        return pool

    # --- running statements ------------------------------------------------------------

    async def pool(self) -> asyncpg.Pool:
        """The open pool (opened on first use)."""
        if self._pool is None:
            await self.acquire()
        assert self._pool is not None
        return self._pool

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection.

        While the server is unreachable or restarting, ``fn`` is retried with backoff
        for up to ``retry_window`` seconds (every operation here is safe to repeat:
        enqueue is idempotent by id, a claim whose answer was lost lapses and is
        claimed again, a repeated fenced update is refused as stale); after that a
        :class:`BackendUnavailableError` names the server.
        """
        pool = await self.pool()
        opts = self.options
        deadline = time.monotonic() + opts.retry_window
        delay = 0.05
        while True:
            try:
                async with pool.acquire(timeout=opts.connect_timeout) as conn:
                    return await fn(conn)
            except CONNECTION_ERRORS as e:
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailableError(
                        f"lost PostgreSQL at {opts.host}, database {opts.database!r}: "
                        f"{type(e).__name__}: {e}"
                    ) from e
                log.warning(
                    "PostgreSQL at %s unavailable (%s: %s); retrying in %.2fs",
                    opts.host, type(e).__name__, e, delay,
                )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- LISTEN / NOTIFY ---------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is open (notifications reach the signals)."""
        return self._listener is not None and not self._listener.is_closed()

    async def listen(self) -> None:
        """Make sure this process listens for NOTIFY on the schema's channels (best
        effort: a failure is logged and waiters fall back to polling)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        if self._listening is None or self._listening.done():
            self._listening = asyncio.ensure_future(self._open_listener())
        try:
            await asyncio.shield(self._listening)
        except Exception as e:
            log.debug("PostgreSQL LISTEN unavailable (%s); polling instead", e)

    async def _open_listener(self) -> None:
        opts = self.options
        conn = await asyncpg.connect(opts.dsn, timeout=opts.connect_timeout)
        try:
            for kind, name in self.channels.items():
                await conn.add_listener(name, self._on_notify(kind))
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        # a notification may have been missed while no one listened: wake everyone
        for signal in self.signals.values():
            signal.notify()

    def _on_notify(self, kind: str) -> Callable[[Any, int, str, str], None]:
        signal = self.signals[kind]

        def callback(_conn: Any, _pid: int, _channel: str, _payload: str) -> None:
            signal.notify()

        return callback

    def _on_listener_lost(self, _conn: Any) -> None:
        self._listener = None

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        task, self._listening = self._listening, None
        if task is not None and not task.done():
            task.cancel()
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2)
            except (TimeoutError, Exception):
                conn.terminate()

    async def wait(self, kind: str, event: asyncio.Event, timeout: float) -> None:
        """Wait up to ``timeout`` s for ``event`` (taken from :meth:`Signal.current`)."""
        await self.listen()
        if timeout <= 0:
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


async def migration_report(
    opts: PostgresOptions, *, apply: bool
) -> tuple[list[int], list[tuple[int, str, bool]]]:
    """Apply the missing migrations (when ``apply``), then list every migration with
    whether ``opts.schema`` has it: (versions applied now, [(version, name, applied)]).

    Uses one direct connection, not a pool (opening a pool migrates): ``show`` reads
    only, and a failed connection raises the usual clear error.
    """
    try:
        conn = await asyncpg.connect(opts.dsn, timeout=opts.connect_timeout)
    except Exception as e:
        raise connect_error(opts, e) from e
    try:
        done = await migrate(conn, opts.schema) if apply else []
        have = set(await applied_versions(conn, opts.schema))
    finally:
        await conn.close()
    return done, [(m.version, m.name, m.version in have) for m in MIGRATIONS]


def database_for(url: str | None, database: Database | None, options: dict[str, Any]) -> Database:
    """The given shared database, or a new one from the URL and options."""
    if database is not None:
        if options:
            raise ConfigurationError(
                f"options {sorted(options)} cannot be given with a shared database"
            )
        return database
    return Database.from_url(url, **options)
