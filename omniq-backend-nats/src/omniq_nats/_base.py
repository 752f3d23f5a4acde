"""What every NATS component shares: settings, pooled connection per event loop, repr."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Self

from omniq.serialization import SerializationManager, default_manager
from omniq_nats._config import NATSSettings
from omniq_nats._connection import Connection, acquire, release

__all__ = ["NATSComponent"]


class NATSComponent:
    """Mixin: ``from_url``, lazy connect, one pooled :class:`Connection` per event loop."""

    schemes: ClassVar[tuple[str, ...]] = ("nats", "tls")

    def __init__(
        self,
        url: str | None = None,
        *,
        serializer: SerializationManager | None = None,
        **options: Any,
    ) -> None:
        self.settings = NATSSettings.from_url(url, **options)
        self._serializer = serializer
        self._conns: dict[int, Connection] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build the component from a ``nats://`` / ``tls://`` URL and options (no I/O)."""
        return cls(url, **options)

    @property
    def serializer(self) -> SerializationManager:
        """The explicit serializer, else the process default (follows OMNIQ_SECRET_KEY)."""
        return self._serializer or default_manager()

    # --- lifecycle -----------------------------------------------------------------

    async def connect(self) -> None:
        """Connect (shared pool) and create the streams/buckets this component uses."""
        await self._conn()

    async def close(self) -> None:
        """Release this component's connections (the last user closes the client)."""
        loop_id = id(asyncio.get_running_loop())
        conns, self._conns = self._conns, {}
        for lid, conn in conns.items():
            if lid == loop_id or conn.loop.is_closed():
                await self._teardown(conn)
                await release(conn)
            elif conn.loop.is_running():
                asyncio.run_coroutine_threadsafe(self._release_elsewhere(conn), conn.loop)

    async def _release_elsewhere(self, conn: Connection) -> None:
        await self._teardown(conn)
        await release(conn)

    async def _conn(self) -> Connection:
        """The connection for the running loop, connecting on first use."""
        loop = asyncio.get_running_loop()
        conn = self._conns.get(id(loop))
        if conn is not None and conn.loop is loop:
            return conn
        lock = self._locks.setdefault(id(loop), asyncio.Lock())
        async with lock:
            conn = self._conns.get(id(loop))
            if conn is not None and conn.loop is loop:
                return conn
            conn = await acquire(self.settings)
            try:
                await self._setup(conn)
            except BaseException:
                await release(conn)
                raise
            self._conns[id(loop)] = conn
            return conn

    async def _setup(self, conn: Connection) -> None:
        """Create/open what the component needs on a new connection."""

    async def _teardown(self, conn: Connection) -> None:
        """Undo per-connection state before the connection is released."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(servers={list(self.settings.servers)!r}, "
            f"name_prefix={self.settings.name_prefix!r})"
        )
