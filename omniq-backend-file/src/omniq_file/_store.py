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
import contextlib
import itertools
import os
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from omniq.errors import ConfigurationError

__all__ = ["LocalStore", "MemoryStore", "Store", "open_store"]

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
        self.root = os.path.abspath(root).rstrip("/")
        self.sync = sync
        self._tmp = f"{self.root}/tmp"
        # temporary names: this store's random tag and a counter (a uuid4 per write costs
        # more than the rest of the name); a clash (a forked copy) falls back to a uuid4
        self._tag = f"{self._tmp}/{uuid.uuid4().hex[:16]}-"
        self._seq = itertools.count()

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def _tmpfile(self, data: bytes) -> str:
        tmp = f"{self._tag}{next(self._seq)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(self._tmp, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        except FileExistsError:
            tmp = f"{self._tmp}/{uuid.uuid4().hex}"
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
        renamed = False
        try:
            try:
                _link(tmp, dst)  # atomic, fails if dst exists (also on NFS)
            except FileExistsError:
                return False
            if token is not None:
                _rename(tmp, self._p(token))  # the file's second name: no unlink to pay
                renamed = True
        finally:
            if not renamed:
                os.unlink(tmp)
        self._sync_dir(dst)
        if token is not None:
            self._sync_dir(self._p(token))
        return True

    def write_linked(self, paths: Sequence[str], data: bytes) -> None:
        """Write ``data`` as one file that appears at every path in ``paths``, in order,
        each atomically replaced (hard links: one file to create instead of one per path;
        see :mod:`omniq_file._final`)."""
        tmp = self._tmpfile(data)
        try:
            for path in paths[:-1]:
                dst = self._p(path)
                try:
                    _link(tmp, dst)
                except FileExistsError:  # replace it: a second temporary name, renamed
                    again = f"{tmp}+"
                    os.link(tmp, again)
                    os.replace(again, dst)
                self._sync_dir(dst)
            last = self._p(paths[-1])
            _rename(tmp, last)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._sync_dir(last)

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


def _rename(src: str, dst: str) -> None:
    """``os.replace``, creating the destination's directory when it is missing."""
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)


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


#: Object-store schemes and their store class in ``omniq_file._objects``.
_OBJECT_STORES = {
    "s3": "S3Store",
    "s3a": "S3Store",
    "gs": "GCSStore",
    "gcs": "GCSStore",
    "az": "AzureStore",
    "abfs": "AzureStore",
    "abfss": "AzureStore",
}


def open_store(url: str, storage_options: dict[str, Any] | None = None, **kw: Any) -> Store:
    """The store for a base URL: ``file:///dir`` (or a plain path), ``memory://name``,
    ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``az://container/prefix``."""
    import fsspec

    protocol, path = fsspec.core.split_protocol(url)
    protocol = protocol or "file"
    if protocol == "file":
        _fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return LocalStore(root, sync=bool(kw.get("sync", False)))
    if protocol == "memory":
        return MemoryStore(path or "omniq")
    if protocol in _OBJECT_STORES:
        from omniq_file import _objects

        cls: Callable[[str, dict[str, Any]], Store] = getattr(_objects, _OBJECT_STORES[protocol])
        return cls(path, dict(storage_options or {}))
    raise ConfigurationError(
        "file backend URL must be file://, memory://, s3://, gs:// or az:// (abfs://), "
        f"got {protocol}://"
    )
