"""What every SQLite component shares: URL and options, its Database, lazy connect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from omniq.serialization.manager import SerializationManager, default_manager
from omniq_sqlite._database import Database

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


#: Rows deleted per write transaction by a cleanup (results, events): a large backlog
#: is deleted in many short writes, never one long hold of the write lock.
CLEANUP_BATCH = 1000

class SQLiteComponent:
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
        self._db = database
        self._serializer = serializer
        self._holds_db = False

    @property
    def url(self) -> str:
        """The ``sqlite://`` URL this component uses."""
        return self._db.url

    @property
    def path(self) -> str:
        """Absolute path of the database file, or ``:memory:``."""
        return self._db.path

    @property
    def database(self) -> Database:
        """The shared connection handle."""
        return self._db

    @property
    def serializer(self) -> SerializationManager:
        """The serialization manager (the process default unless one was given)."""
        return self._serializer or default_manager()

    async def connect(self) -> None:
        """Open the database (creating the schema) if this component has not yet."""
        if not self._holds_db:
            await self._db.acquire()
            self._holds_db = True

    async def close(self) -> None:
        """Release the database; its connection closes when no component uses it."""
        if self._holds_db:
            self._holds_db = False
            await self._db.release()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._holds_db or not self._db.is_open:
            self._holds_db = False
            await self.connect()
        return await self._db.run(fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Like ``_run`` for a write that may share its transaction with others waiting
        (see :meth:`Database.run_write`)."""
        db = await self._ensure()
        return await db.run_write(fn, *args)

    async def _ensure(self) -> Database:
        if not self._holds_db or not self._db.is_open:
            self._holds_db = False
            await self.connect()
        return self._db

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._db.url!r})"
