"""The few storage primitives the file backend is built on, per kind of store.

Every state change of a task is one of these, and the claim rules rest on two of them:

* ``move(src, dst)``: atomic and exclusive -- of several callers moving the same
  ``src``, exactly one gets True (it now owns the file under its new name);
* ``create(path, data)``: exclusive create -- exactly one caller creates ``path``.

:class:`LocalStore` does them with ``os.rename`` and ``os.link`` (atomic on a local
POSIX file system; see docs/file.md for NFS). :class:`MemoryStore` does them on
fsspec's ``memory://`` file system under one process-wide lock (memory is one process
only). Object stores have no rename: they are refused until the conditional-write store
lands (docs/file.md says what each store offers). Paths are relative to the store's
root and always use ``/``. All methods block: components call them through
``anyio.to_thread``.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from omniq.errors import BackendError, ConfigurationError

__all__ = ["LocalStore", "MemoryStore", "S3Store", "Store", "open_store"]

T = TypeVar("T")
R = TypeVar("R")


class Store(ABC):
    """Blocking primitives over one root directory (see the module docstring)."""

    #: True when several processes may share the store (memory:// is one process).
    cross_process: bool = True

    @abstractmethod
    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    @abstractmethod
    def write(self, path: str, data: bytes) -> None:
        """Create or atomically replace ``path`` (a reader sees old or new, never half)."""

    @abstractmethod
    def create(self, path: str, data: bytes, token: str | None = None) -> bool:
        """Create ``path`` with ``data`` unless it exists; True when this call made it.
        When it did and ``token`` is given, also create ``token`` (a hard link on a
        local disk: no second file to allocate)."""

    @abstractmethod
    def touch(self, path: str) -> None:
        """Create an empty ``path`` (or leave an existing one as it is)."""

    @abstractmethod
    def move(self, src: str, dst: str) -> bool:
        """Rename ``src`` to ``dst`` (which must not exist); False when ``src`` is gone."""

    @abstractmethod
    def delete(self, path: str) -> bool:
        """Delete a file; False when it did not exist."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """True when the file exists."""

    @abstractmethod
    def list(self, directory: str) -> list[str]:
        """Names in ``directory`` (unsorted; empty when it does not exist)."""

    def check(self) -> None:
        """Reach the store once (connect): fail early with a clear error."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> builtins.list[R]:
        """``[fn(x) for x in items]``; stores with slow round trips run them at once."""
        return [fn(x) for x in items]

    def close(self) -> None:
        """Release resources (nothing by default)."""


class LocalStore(Store):
    """A directory on a local (POSIX) file system, through ``os`` calls.

    ``sync=True`` fsyncs every file written and its directory (durable against power
    loss, several times slower); by default a write survives a crash of the process but
    not of the machine.
    """

    def __init__(self, root: str, *, sync: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.sync = sync
        self._tmp = os.path.join(self.root, "tmp")

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path)

    def _tmpfile(self, data: bytes) -> str:
        tmp = os.path.join(self._tmp, uuid.uuid4().hex)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(self._tmp, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            os.write(fd, data) if len(data) < 65536 else _write_all(fd, data)
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _sync_dir(self, path: str) -> None:
        if self.sync:
            fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, path: str) -> bytes | None:
        try:
            with open(self._p(path), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, path: str, data: bytes) -> None:
        dst = self._p(path)
        tmp = self._tmpfile(data)
        try:
            os.replace(tmp, dst)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(tmp, dst)
        self._sync_dir(dst)

    def create(self, path: str, data: bytes, token: str | None = None) -> bool:
        dst = self._p(path)
        tmp = self._tmpfile(data)
        try:
            try:
                _link(tmp, dst)  # atomic, fails if dst exists (also on NFS)
            except FileExistsError:
                return False
            if token is not None:
                _link(tmp, self._p(token))
        finally:
            os.unlink(tmp)
        self._sync_dir(dst)
        if token is not None:
            self._sync_dir(self._p(token))
        return True

    def touch(self, path: str) -> None:
        dst = self._p(path)
        flags = os.O_WRONLY | os.O_CREAT
        try:
            fd = os.open(dst, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            fd = os.open(dst, flags, 0o644)
        os.close(fd)
        self._sync_dir(dst)

    def move(self, src: str, dst: str) -> bool:
        s, d = self._p(src), self._p(dst)
        try:
            os.rename(s, d)
        except FileNotFoundError:
            if not os.path.exists(s):
                return False  # someone else moved it first
            os.makedirs(os.path.dirname(d), exist_ok=True)
            try:
                os.rename(s, d)
            except FileNotFoundError:
                return False
        self._sync_dir(d)
        return True

    def delete(self, path: str) -> bool:
        try:
            os.unlink(self._p(path))
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def exists(self, path: str) -> bool:
        return os.path.exists(self._p(path))

    def list(self, directory: str) -> list[str]:
        try:
            return os.listdir(self._p(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.link(src, dst)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: One lock for every memory:// store of the process (fsspec's memory store is global).
_MEMORY_LOCK = threading.RLock()


class MemoryStore(Store):
    """fsspec's ``memory://`` file system: one process, every primitive under a lock."""

    cross_process = False

    def __init__(self, root: str) -> None:
        from fsspec.implementations.memory import MemoryFileSystem

        self.fs = MemoryFileSystem()
        self.root = "/" + root.strip("/")

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def read(self, path: str) -> bytes | None:
        with _MEMORY_LOCK:
            try:
                data: bytes = self.fs.cat_file(self._p(path))
                return data
            except FileNotFoundError:
                return None

    def write(self, path: str, data: bytes) -> None:
        with _MEMORY_LOCK:
            self.fs.pipe_file(self._p(path), data)

    def create(self, path: str, data: bytes, token: str | None = None) -> bool:
        with _MEMORY_LOCK:
            if self._p(path) in self.fs.store:
                return False
            self.fs.pipe_file(self._p(path), data)
            if token is not None:
                self.fs.pipe_file(self._p(token), b"")
            return True

    def touch(self, path: str) -> None:
        with _MEMORY_LOCK:
            if not self.fs.exists(self._p(path)):
                self.fs.pipe_file(self._p(path), b"")

    def move(self, src: str, dst: str) -> bool:
        with _MEMORY_LOCK:
            store: dict[str, Any] = self.fs.store
            f = store.pop(self._p(src), None)
            if f is None:
                return False
            f.path = self._p(dst)
            store[self._p(dst)] = f
            return True

    def delete(self, path: str) -> bool:
        with _MEMORY_LOCK:
            return self.fs.store.pop(self._p(path), None) is not None

    def exists(self, path: str) -> bool:
        with _MEMORY_LOCK:
            return self._p(path) in self.fs.store

    def list(self, directory: str) -> list[str]:
        prefix = self._p(directory).rstrip("/") + "/"
        n = len(prefix)
        with _MEMORY_LOCK:
            names = {k[n:].split("/", 1)[0] for k in self.fs.store if k.startswith(prefix)}
        return list(names)

    def __repr__(self) -> str:
        return f"MemoryStore('memory://{self.root.lstrip('/')}')"


class S3Store(Store):
    """An S3 bucket (s3fs), with claims by conditional writes (S3 has no rename).

    ``create`` is a ``PutObject`` with ``If-None-Match: *`` (s3fs ``mode="create"``).
    ``move`` takes a lock object named after the source and its ETag with that same
    exclusive create -- the one caller that makes it owns the move -- then deletes the
    source (``If-Match`` its ETag) and writes the destination. Every object has a unique
    body (a random nonce), so an ETag names one version. A process killed between the
    lock and the destination write loses that token (see docs/file.md).
    """

    def __init__(self, root: str, storage_options: dict[str, Any]) -> None:
        import fsspec

        opts = {"use_listings_cache": False, "skip_instance_cache": True, **storage_options}
        self.fs = fsspec.filesystem("s3", **opts)
        self.root = root.strip("/")
        self.bucket, _, self.prefix = self.root.partition("/")
        self._pool: ThreadPoolExecutor | None = None

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> builtins.list[R]:
        """Run ``fn`` on the items concurrently (each call is a round trip or more)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(16, thread_name_prefix="omniq-s3")
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        """Stop the request threads."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def check(self) -> None:
        """Open the session and check the bucket exists (a missing one is an error)."""
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except (FileNotFoundError, OSError) as e:
            raise BackendError(f"cannot reach bucket s3://{self.bucket}: {e}") from e

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    @staticmethod
    def _nonce() -> bytes:
        return uuid.uuid4().hex.encode()

    def _etag(self, path: str) -> str | None:
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self._key(path))
        except (FileNotFoundError, PermissionError):
            return None
        etag: str = head["ETag"]
        return etag

    def _delete_if(self, path: str, etag: str) -> bool:
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self._key(path), IfMatch=etag)
            return True
        except (FileNotFoundError, OSError):
            return False
        except Exception as e:  # botocore ClientError: PreconditionFailed
            if "PreconditionFailed" in str(e) or "412" in str(e):
                return False
            raise

    def read(self, path: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(self._p(path))
            return data
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(path), data or self._nonce())

    def create(self, path: str, data: bytes, token: str | None = None) -> bool:
        # a zero-byte "create" is not conditional in s3fs: always send a body
        try:
            self.fs.pipe_file(self._p(path), data or self._nonce(), mode="create")
        except FileExistsError:
            return False
        if token is not None:
            self.fs.pipe_file(self._p(token), self._nonce())
        return True

    def touch(self, path: str) -> None:
        self.fs.pipe_file(self._p(path), self._nonce())

    def move(self, src: str, dst: str) -> bool:
        etag = self._etag(src)
        if etag is None:
            return False
        lock = f"locks/{hashlib.sha1(f'{src}#{etag}'.encode()).hexdigest()}"
        if not self.create(lock, dst.encode()):
            return False  # another caller moves (or moved) this version of src
        if not self._delete_if(src, etag):
            return False
        self.fs.pipe_file(self._p(dst), self._nonce())
        return True

    def delete(self, path: str) -> bool:
        etag = self._etag(path)
        return etag is not None and self._delete_if(path, etag)

    def exists(self, path: str) -> bool:
        return self._etag(path) is not None

    def list(self, directory: str) -> list[str]:
        try:
            entries = self.fs.ls(self._p(directory), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.root}')"


_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")


def open_store(url: str, storage_options: dict[str, Any] | None = None, **kw: Any) -> Store:
    """The store for a base URL: ``file:///dir`` (or a plain path) or ``memory://name``."""
    import fsspec

    protocol, path = fsspec.core.split_protocol(url)
    protocol = protocol or "file"
    if protocol == "file":
        _fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return LocalStore(root, sync=bool(kw.get("sync", False)))
    if protocol == "memory":
        return MemoryStore(path or "omniq")
    if protocol in ("s3", "s3a"):
        return S3Store(path, dict(storage_options or {}))
    if protocol in _OBJECT_STORES:
        raise ConfigurationError(
            f"the file backend cannot claim atomically on {protocol}:// yet (object stores "
            "have no rename; conditional-write claims are not implemented): use a local "
            "directory (file://) or memory://"
        )
    raise ConfigurationError(
        f"file backend URL must be file://, memory:// or an object store URL, got {protocol}://"
    )
