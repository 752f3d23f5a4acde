"""What every PostgreSQL component shares: URL and options, its Database, lazy connect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from omniq.serialization.manager import SerializationManager, default_manager
from omniq_postgres._database import Database, database_for

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]

T = TypeVar("T")

#: Rows deleted per statement by a cleanup (results, events, finished tasks): a large
#: backlog is deleted in many short transactions, never one long hold of many locks.
CLEANUP_BATCH = 1000


class PostgresComponent:
    """Mixin for the four components (put it before the storage ABC in the bases).

    ``url`` is a ``postgresql://`` (or ``postgres://``) URL; options (or URL query
    parameters) are :class:`~omniq_postgres._url.PostgresOptions` fields, e.g.
    ``schema``. ``database=`` shares an existing :class:`Database` (one pool), which is
    what :class:`~omniq_postgres.PostgresBackend` does.
    """

    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")

    def __init__(
        self,
        url: str | None = None,
        *,
        serializer: SerializationManager | None = None,
        database: Database | None = None,
        **options: Any,
    ) -> None:
        self._db = database_for(url, database, options)
        self._serializer = serializer
        self._holds_db = False

    @property
    def url(self) -> str:
        """The URL (password redacted)."""
        return self._db.url

    @property
    def schema(self) -> str:
        """The schema holding OmniQ's tables."""
        return self._db.schema

    @property
    def database(self) -> Database:
        """The shared pool handle."""
        return self._db

    @property
    def serializer(self) -> SerializationManager:
        """The serialization manager (the process default unless one was given)."""
        return self._serializer or default_manager()

    async def connect(self) -> None:
        """Open the pool (migrating the schema) if this component has not yet."""
        if not self._holds_db:
            await self._db.acquire()
            self._holds_db = True

    async def close(self) -> None:
        """Release the pool; it closes when no component uses it."""
        if self._holds_db:
            self._holds_db = False
            await self._db.release()

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        if not self._holds_db or not self._db.is_open:
            self._holds_db = False
            await self.connect()
        return await self._db.run(fn)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._db.url!r})"
