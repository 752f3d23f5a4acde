"""What every PostgreSQL component shares: URL and options, its Database, lazy connect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from omniq.serialization.manager import SerializationManager
from omniq.storage.shared import SharedHandleComponent
from omniq_postgres._database import Database, database_for, migration_report

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]

T = TypeVar("T")

#: Rows deleted per statement by a cleanup (results, events, finished tasks): a large
#: backlog is deleted in many short transactions, never one long hold of many locks.
CLEANUP_BATCH = 1000


class PostgresComponent(SharedHandleComponent[Database]):
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
        self._share(database_for(url, database, options), serializer)

    @property
    def schema(self) -> str:
        """The schema holding OmniQ's tables."""
        return self._db.schema

    @property
    def store_key(self) -> Hashable:
        """The server and database (the DSN) and the schema."""
        options = self._db.options
        return ("postgres", options.dsn, options.schema)

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        return await (await self._ensure()).run(fn)

    async def migration_status(self) -> list[tuple[int, str, bool]]:
        """Every schema migration this version knows, in order, and whether the schema
        has it (``omniq migrations show``): reads only, on a connection of its own."""
        return (await migration_report(self._db.options, apply=False))[1]

    async def apply_migrations(self) -> list[int]:
        """Apply the missing schema migrations under the advisory lock (``omniq
        migrations apply``; the first connection does it anyway); the versions applied."""
        return (await migration_report(self._db.options, apply=True))[0]
