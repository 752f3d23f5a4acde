"""What every file component shares: base URL, fsspec options, the store, threads.

Blocking store calls run in worker threads (``anyio.to_thread``), one hop per
operation, so the event loop never waits on the disk or the network.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import anyio

from omniq.errors import ConfigurationError
from omniq.serialization.manager import SerializationManager, default_manager
from omniq_file._store import Store, open_store

DEFAULT_URL = "file://.omniq/files"
SCHEMES = ("file", "memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
#: URL query options read by OmniQ: ``?default_lease=60&sync=true``.
OMNIQ_QUERY = ("default_lease", "sync")

T = TypeVar("T")


def redact(url: str) -> str:
    """``url`` without a password and without its query (which may hold credentials)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc, query=""))


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its query, and the query's options."""
    base, _, query = url.partition("?")
    return base, dict(parse_qsl(query, keep_blank_values=True))


class FileComponent:
    """Mixin for the four components (put it before the storage ABC in the bases).

    ``url`` is the base URL of the store (``file:///var/omniq``, ``memory://omniq``).
    ``storage_options`` go to fsspec as they are (credentials: they are never logged or
    shown). ``store=`` shares an open store (what :class:`FileBackend` does).
    """

    schemes: ClassVar[tuple[str, ...]] = SCHEMES

    def __init__(
        self,
        url: str | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        serializer: SerializationManager | None = None,
        store: Store | None = None,
        sync: bool | None = None,
        **options: Any,
    ) -> None:
        self._url, self.url_options = split_url(url or DEFAULT_URL)
        scheme = urlsplit(self._url).scheme or "file"
        if scheme not in self.schemes:
            raise ConfigurationError(
                f"file backend URL must start with one of {', '.join(self.schemes)}, "
                f"got {redact(self._url)!r}"
            )
        extra = {k: v for k, v in self.url_options.items() if k not in OMNIQ_QUERY}
        self._storage_options = {**extra, **(storage_options or {}), **options}
        if sync is None:
            sync = self.url_options.get("sync", "").lower() in ("1", "true", "yes")
        self._sync = sync
        self._serializer = serializer
        self._store: Store | None = store
        self._owns_store = store is None

    @property
    def url(self) -> str:
        """The base URL, without credentials."""
        return redact(self._url)

    @property
    def serializer(self) -> SerializationManager:
        """The serialization manager (the process default unless one was given)."""
        return self._serializer or default_manager()

    @property
    def store(self) -> Store:
        """The open store (opened on first use)."""
        if self._store is None:
            self._store = open_store(self._url, self._storage_options, sync=self._sync)
        return self._store

    @property
    def store_key(self) -> Hashable:
        """The store's base URL (components on one URL share their files)."""
        return ("file", self._url)

    async def connect(self) -> None:
        """Open the store and reach it once (an unreachable bucket fails here)."""
        if self._store is None:

            def open_and_check() -> Store:
                store = open_store(self._url, self._storage_options, sync=self._sync)
                store.check()
                return store

            self._store = await anyio.to_thread.run_sync(open_and_check)

    async def close(self) -> None:
        """Forget the store if this component opened it."""
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function in a worker thread."""
        if self._store is None:
            await self.connect()
        return await anyio.to_thread.run_sync(fn, *args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
