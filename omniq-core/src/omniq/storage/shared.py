"""Components that share one reference-counted handle (a database file, a pool).

A backend's four components, built by its bundle, share one handle: the first
``connect`` opens it, the last ``close`` closes it. :class:`SharedHandleComponent` is that
bookkeeping, so a backend writes only its handle (``acquire``/``release``/``is_open``/
``url``) and its storage logic.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from omniq.serialization.manager import SerializationManager, default_manager


class SharedHandle(Protocol):
    """What a shared handle offers its components."""

    @property
    def url(self) -> str:
        """The URL it was opened from (credentials redacted)."""
        ...

    @property
    def is_open(self) -> bool:
        """True while it is open (it may close under a component after a fork)."""
        ...

    async def acquire(self) -> None:
        """Open it if it is not open; count one more user."""

    async def release(self) -> None:
        """Count one user less; close it when none is left."""


H = TypeVar("H", bound=SharedHandle)


class SharedHandleComponent(Generic[H]):
    """Mixin for components on a shared handle (put it before the storage ABC in the
    bases). Subclasses call :meth:`_share` in ``__init__``."""

    _db: H
    _serializer: SerializationManager | None
    _holds_db: bool

    def _share(self, handle: H, serializer: SerializationManager | None) -> None:
        self._db = handle
        self._serializer = serializer
        self._holds_db = False

    @property
    def url(self) -> str:
        """The URL of the shared handle (credentials redacted)."""
        return self._db.url

    @property
    def database(self) -> H:
        """The shared handle."""
        return self._db

    @property
    def serializer(self) -> SerializationManager:
        """The serialization manager (the process default unless one was given)."""
        return self._serializer or default_manager()

    async def connect(self) -> None:
        """Take the shared handle (opening it) if this component has not yet."""
        if not self._holds_db:
            await self._db.acquire()
            self._holds_db = True

    async def close(self) -> None:
        """Release the shared handle; it closes when no component uses it."""
        if self._holds_db:
            self._holds_db = False
            await self._db.release()

    async def _ensure(self) -> H:
        """The handle, (re)opened when this component does not hold an open one."""
        if not self._holds_db or not self._db.is_open:
            self._holds_db = False
            await self.connect()
        return self._db

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._db.url!r})"


__all__ = ["SharedHandle", "SharedHandleComponent"]
