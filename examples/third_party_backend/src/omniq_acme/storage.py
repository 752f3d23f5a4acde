"""The acme components: the memory backend's, reached through ``acme://`` URLs.

``acme://`` is a private store, ``acme://NAME`` the process-wide store ``NAME``
(the same one ``memory://NAME`` names).
"""

from __future__ import annotations

from typing import Any, Self

from omniq.storage.memory import (
    AsyncMemoryEventStorage,
    AsyncMemoryQueue,
    AsyncMemoryResultStorage,
    AsyncMemoryScheduleStorage,
    MemoryEventStorage,
    MemoryQueue,
    MemoryResultStorage,
    MemoryScheduleStorage,
)

SCHEME = "acme"


def to_memory_url(url: str) -> str:
    """``acme://NAME`` -> ``memory://NAME``; any other URL is left for memory to reject."""
    prefix = f"{SCHEME}://"
    if url.lower().startswith(prefix):
        return "memory://" + url[len(prefix) :]
    return url


class AsyncAcmeQueue(AsyncMemoryQueue):
    """Acme task queue."""

    schemes = (SCHEME,)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return super().from_url(to_memory_url(url), **options)


class AsyncAcmeResultStorage(AsyncMemoryResultStorage):
    """Acme result storage."""

    schemes = (SCHEME,)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return super().from_url(to_memory_url(url), **options)


class AsyncAcmeEventStorage(AsyncMemoryEventStorage):
    """Acme event storage."""

    schemes = (SCHEME,)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return super().from_url(to_memory_url(url), **options)


class AsyncAcmeScheduleStorage(AsyncMemoryScheduleStorage):
    """Acme schedule storage."""

    schemes = (SCHEME,)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return super().from_url(to_memory_url(url), **options)


# Blocking twins: the generic wrappers add a ``*_sync`` method per coroutine method.


class AcmeQueue(MemoryQueue, async_class=AsyncAcmeQueue):
    """Blocking twin of :class:`AsyncAcmeQueue`."""


class AcmeResultStorage(MemoryResultStorage, async_class=AsyncAcmeResultStorage):
    """Blocking twin of :class:`AsyncAcmeResultStorage`."""


class AcmeEventStorage(MemoryEventStorage, async_class=AsyncAcmeEventStorage):
    """Blocking twin of :class:`AsyncAcmeEventStorage`."""


class AcmeScheduleStorage(MemoryScheduleStorage, async_class=AsyncAcmeScheduleStorage):
    """Blocking twin of :class:`AsyncAcmeScheduleStorage`."""
