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
import ctypes
import errno
import itertools
import os
import stat
import sys
import threading
import time
import uuid
import weakref
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

    #: Most spare files a store keeps (see :meth:`_keep_spare`); more are deleted.
    MAX_SPARES = 256

    def __init__(self, root: str, *, sync: bool = False) -> None:
        self.root = os.path.abspath(root).rstrip("/")
        self.sync = sync
        self._tmp = f"{self.root}/tmp"
        # temporary names: this store's random tag and a counter (a uuid4 per write costs
        # more than the rest of the name); a clash (a forked copy) falls back to a uuid4
        self._tag = f"{self._tmp}/{uuid.uuid4().hex[:16]}-"
        self._seq = itertools.count()
        self._spares: builtins.list[str] = []  # swapped-out files of this process, reused
        _LOCAL_STORES.add(self)

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def _spare(self, data: bytes) -> str | None:
        """Write ``data`` over a spare file (see :meth:`_keep_spare`) and return its name, or
        None when there is none: no inode to allocate (on ext4 without a journal a new
        inode costs a scan past every recently freed one)."""
        while True:
            try:
                spare = self._spares.pop()
            except IndexError:
                return None
            try:
                # never through a symbolic link nor blocking on a FIFO (a foreign file may
                # have been swapped in)
                fd = os.open(spare, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:  # gone, or not a file: not a spare
                continue
            try:
                st = os.fstat(fd)
                if st.st_nlink != 1 or not stat.S_ISREG(st.st_mode):
                    os.unlink(spare)  # it has another name too: not ours to rewrite
                    continue
                os.write(fd, data) if len(data) < 65536 else _write_all(fd, data)
                if st.st_size > len(data):
                    os.ftruncate(fd, len(data))
                if self.sync:
                    os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(spare)
                raise
            finally:
                os.close(fd)
            return spare

    def _tmpfile(self, data: bytes) -> str:
        if self._spares:
            spare = self._spare(data)
            if spare is not None:
                return spare
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
        """The file's bytes. A file replaced while it is read may be a spare that this
        or another process already rewrote (see :meth:`_keep_spare`): the read counts
        only when ``path`` still names the file read, unchanged; otherwise it is read
        again."""
        p = self._p(path)
        for _ in range(100):
            try:
                fd = os.open(p, os.O_RDONLY)
            except (FileNotFoundError, NotADirectoryError):
                return None
            try:
                before = os.fstat(fd)
                data = os.read(fd, before.st_size + 1)
                while len(data) > before.st_size:  # it grew (rewritten): read the rest
                    more = os.read(fd, 65536)
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
            try:
                after = os.stat(p)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if (after.st_ino, after.st_ctime_ns, after.st_size) == (
                before.st_ino, before.st_ctime_ns, len(data)):  # fmt: skip
                return data
        return data

    def write(self, path: str, data: bytes) -> None:
        dst = self._p(path)
        tmp = self._tmpfile(data)
        self._replace(tmp, dst)
        self._sync_dir(dst)

    def _replace(self, tmp: str, dst: str) -> None:
        """Put the file ``tmp`` at ``dst`` atomically. When ``dst`` exists, the two names
        are exchanged (``renameat2(RENAME_EXCHANGE)``) and the old file, now at ``tmp``,
        becomes a spare (see :meth:`_keep_spare`): a plain rename over an existing file makes
        ext4 (``auto_da_alloc``) start writing the new file's data back at once, in the
        caller's time, and the old file would have to be freed."""
        if _exchange(tmp, dst):
            self._keep_spare(tmp)
            return
        _rename(tmp, dst)

    def _keep_spare(self, path: str) -> None:
        """Keep ``path`` (a name under tmp/ of a file swapped out of its place) as a
        spare, or delete it when there are enough: the next write of this process fills
        it and renames it into place instead of creating a file, when it has no other
        name by then (checked). A reader that opened the file before it was swapped out
        may then see other bytes: :meth:`read` checks that the name it read still names
        the same, unchanged file."""
        if len(self._spares) < self.MAX_SPARES:
            self._spares.append(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

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
                _link_replace(tmp, dst)
                self._sync_dir(dst)
            last = self._p(paths[-1])
            self._replace(tmp, last)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._sync_dir(last)

    def finish(self, links: Sequence[str], record: str, data: bytes, src: str, dst: str) -> bool:
        """A final task's last step, for its owner (who holds the token ``src``): write
        ``data`` as one file named by every path in ``links`` (each replaced) and by
        ``record`` (replaced atomically), then move the token from ``src`` to ``dst``.

        The token is a second name of the old record. Before it moves, it is made a name
        of the new file (exchanged, so only while it is still there), so the old record
        is left with its one name under tmp/ and is kept as a spare: the next write
        rewrites it instead of creating a file (on ext4 without a journal, each new inode
        costs a scan past every recently freed one). The token's move itself is one
        rename: a process killed at any step leaves the task exactly one token. False
        when ``src`` was gone (taken over by another process)."""
        tmp = self._tmpfile(data)
        rec = self._p(record)
        try:
            for path in links:
                _link_replace(tmp, self._p(path))
            if _exchange(tmp, rec):
                old: str | None = tmp  # now the old record's spare name
            else:
                _rename(tmp, rec)
                old = None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if old is not None:
            self._token_to_new(rec, src)
            self._keep_spare(old)  # checked before reuse: used only if it has no other name
        moved = self.move(src, dst)
        if moved and self.sync:
            for path in (*links, record):
                self._sync_dir(self._p(path))
        return moved

    def _token_to_new(self, rec: str, src: str) -> None:
        """Make the token ``src`` a name of the file at ``rec``, if ``src`` is still a
        file there (exchanged: a token another process took meanwhile is not made
        again); otherwise leave everything as it was."""
        again = f"{self._tag}{next(self._seq)}"
        try:
            os.link(rec, again)
        except OSError:  # the record is gone (purged meanwhile): the token moves as it is
            return
        try:
            _exchange(again, self._p(src))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(again)  # the token's old file (or, when not exchanged, ``rec``)

    #: Files under tmp/ untouched for this long are left over by a process that died
    #: (a write cut short, or its spare files): :meth:`sweep_tmp` deletes them.
    TMP_MAX_AGE = 3600.0

    def sweep_tmp(self, now: float | None = None) -> int:
        """Delete files under tmp/ not modified for :attr:`TMP_MAX_AGE` seconds (a live
        process rewrites a spare before using it, and skips one that is gone); returns
        how many."""
        cutoff = (time.time() if now is None else now) - self.TMP_MAX_AGE
        mine = set(self._spares)
        removed = 0
        for name in self.list("tmp"):
            path = f"{self._tmp}/{name}"
            try:
                if path in mine or os.lstat(path).st_mtime >= cutoff:
                    continue
                os.unlink(path)
                removed += 1
            except OSError:
                continue
        return removed

    def close(self) -> None:
        """Delete this process's spare files."""
        spares, self._spares = self._spares, []
        for spare in spares:
            with contextlib.suppress(OSError):
                os.unlink(spare)

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


#: Every LocalStore of the process: a forked child forgets their spare files (the
#: parent keeps using them).
_LOCAL_STORES: weakref.WeakSet[LocalStore] = weakref.WeakSet()


def _forget_spares() -> None:
    for store in list(_LOCAL_STORES):
        store._spares = []
        store._tag = f"{store._tmp}/{uuid.uuid4().hex[:16]}-"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spares)


def _link_replace(src: str, dst: str) -> None:
    """Link ``src`` as ``dst``, replacing an existing ``dst`` atomically."""
    try:
        _link(src, dst)
    except FileExistsError:  # replace it: a second temporary name, renamed
        again = f"{src}+"
        os.link(src, again)
        os.replace(again, dst)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_renameat2 = _load_renameat2()


def _exchange(a: str, b: str) -> bool:
    """Swap the files named ``a`` and ``b`` atomically; False when ``b`` (or ``a``) does
    not exist or the system cannot (then nothing changed)."""
    global _renameat2
    fn = _renameat2
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        _renameat2 = None  # not on this system or file system: plain renames from now on
    return False


def _into_dir(op: Callable[[str, str], None], src: str, dst: str) -> None:
    """``op(src, dst)``, creating the destination's directory when it is missing."""
    try:
        op(src, dst)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        op(src, dst)


def _link(src: str, dst: str) -> None:
    _into_dir(os.link, src, dst)


def _rename(src: str, dst: str) -> None:
    """``os.replace``, creating the destination's directory when it is missing."""
    _into_dir(os.replace, src, dst)


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
