"""What every SQLite component shares: URL and options, its Database, lazy connect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from omniq.serialization.manager import SerializationManager
from omniq.storage.shared import SharedHandleComponent
from omniq_sqlite._database import Database

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

T = TypeVar("T")


#: Rows deleted per write transaction by a cleanup (results, events): a large backlog
#: is deleted in many short writes, never one long hold of the write lock.
CLEANUP_BATCH = 1000


class SQLiteComponent(SharedHandleComponent[Database]):
    """Mixin for the four components (put it before the storage ABC in the bases).

    ``url`` is a ``sqlite://`` URL (default ``sqlite:///omniq.db``: ``omniq.db`` in the base
    directory, ``.omniq`` or ``$OMNIQ_BASE_DIR``); ``options`` are
    :class:`~omniq_sqlite._url.SQLiteOptions` fields, plus ``base_dir`` and ``serializer``.
    ``database=`` shares an existing :class:`Database` (what :class:`SQLiteBackend` does).
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)

    def __init__(
        self,
        url: str | None = None,
        *,
        serializer: SerializationManager | None = None,
        base_dir: str | None = None,
        database: Database | None = None,
        **options: Any,
    ) -> None:
        if database is None:
            database = Database.from_url(url, base_dir=base_dir, **options)
        self._share(database, serializer)

    @property
    def path(self) -> str:
        """Absolute path of the database file, or ``:memory:``."""
        return self._db.path

    @property
    def store_key(self) -> Hashable:
        """The database file; an in-memory database is its own store (shared only by
        the components given the same Database)."""
        if self._db.location.memory:
            return ("sqlite", id(self._db))
        return ("sqlite", self._db.path)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await (await self._ensure()).run(fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Like ``_run`` for a write that may share its transaction with others waiting
        (see :meth:`Database.run_write`)."""
        db = await self._ensure()
        return await db.run_write(fn, *args)
