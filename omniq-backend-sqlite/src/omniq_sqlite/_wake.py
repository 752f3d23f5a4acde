"""Wake-ups: "the database changed" signals, fed by this process and by other processes.

A :class:`Signal` is a versioned, thread-safe wake-up that coroutines on any event loop
can await. A waiter reads ``signal.version`` *before* it queries the database and then
waits for a version after it, so a change that lands between the query and the wait is
never lost.

Writes in this process notify the signals directly. Commits by other processes are seen
by a :class:`Watcher`: one daemon thread per database file and process, started by the
first waiter, with its own connection (it only reads). ``PRAGMA data_version`` on that
connection changes exactly when another connection commits, so the thread notifies only
real commits. It works only while a coroutine waits (a new waiter pokes it); meanwhile
it sleeps, so busy workers pay nothing. On Linux it sleeps in the kernel until inotify
reports a write to the WAL file, then polls ``data_version`` briefly, since a commit
becomes visible only after its frames are written and synced. Elsewhere (or when inotify
is unavailable) it polls ``data_version`` every 1 ms after a change, backing off to
:data:`POLL_MAX` while nothing changes.

The signals are hints: every waiter re-runs its query after a wake-up, and re-checks
on its own every ``poll_interval`` while a task may become due by the clock, else every
second as a safety net (see :class:`omniq_sqlite._database.Poll`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("omniq.sqlite")

KINDS = ("tasks", "results")

#: Fallback polling: first interval after a change, and the longest when idle (seconds).
POLL_MIN = 0.001
POLL_MAX = 0.010
#: inotify mode: after a write to the WAL, poll data_version from HOT_MIN (growing to
#: HOT_MAX) until HOT_LINGER seconds pass without another write.
HOT_MIN = 0.0002
HOT_MAX = 0.005
HOT_LINGER = 0.25
#: inotify mode: data_version is also checked this often while no write is reported, in
#: case a filesystem does not report writes (costs ~0.01% of a core).
IDLE_CHECK = 0.1

_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)
_WATCH_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
_EVENT = struct.Struct("iIII")


class Signal:
    """A versioned wake-up: :meth:`notify` (from any thread) wakes every :meth:`wait`."""

    def __init__(self, on_wait: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._on_wait = on_wait
        #: Incremented by every :meth:`notify`.
        self.version = 0

    @property
    def waiting(self) -> int:
        """How many coroutines wait right now."""
        return len(self._waiters)

    def notify(self) -> None:
        """Bump the version and wake all current waiters."""
        with self._lock:
            self.version += 1
            waiters, self._waiters = self._waiters, []
        if not waiters:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, fut in waiters:
            if loop is running:
                loop.call_soon(_resolve, fut, True)
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_resolve, fut, True)

    async def wait(self, seen: int, timeout: float) -> bool:
        """Wait until the version differs from ``seen`` (True) or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            if self.version != seen:
                return True
            self._waiters.append(entry)
        if self._on_wait is not None:
            self._on_wait()
        timer = loop.call_later(max(timeout, 0.0), _resolve, fut, False)
        try:
            return await fut
        finally:
            timer.cancel()
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class Hub:
    """Per database file and process: its signals and (while someone waits) its watcher."""

    def __init__(self, path: str | None) -> None:
        self.path = path  # None: an in-memory database, private to one connection
        self.signals = {kind: Signal(self._waiter_added) for kind in KINDS}
        self._lock = threading.Lock()
        self._watcher: Watcher | None = None
        self._users = 0

    def signal(self, kind: str) -> Signal:
        """The signal for ``kind`` ("tasks" or "results")."""
        return self.signals[kind]

    def notify_all(self) -> None:
        """Wake every waiter of this file in this process."""
        for s in self.signals.values():
            s.notify()

    def has_waiters(self) -> bool:
        """True while a coroutine waits on one of the signals."""
        return any(s.waiting for s in self.signals.values())

    def _waiter_added(self) -> None:
        w = self._watcher
        if w is not None:
            w.poke()

    @property
    def watching(self) -> bool:
        """True while a watcher reports other processes' commits."""
        w = self._watcher
        return w is not None and w.alive

    @property
    def mode(self) -> str | None:
        """How the watcher detects commits ("inotify" or "poll"), None when not watching."""
        w = self._watcher
        return w.mode if w is not None and w.alive else None

    def retain(self) -> bool:
        """Count one more user of the watcher, starting it if needed (blocking, ~1 ms).

        Returns False when no watcher can run (in-memory database, or it failed to start).
        """
        if self.path is None:
            return False
        with self._lock:
            if self._watcher is None or not self._watcher.alive:
                try:
                    self._watcher = Watcher(self.path, self.notify_all, self.has_waiters)
                except Exception as e:  # waiters fall back to polling with backoff
                    log.warning("cannot watch SQLite database %s for changes: %s", self.path, e)
                    self._watcher = None
                    return False
            self._users += 1
            return True

    def release(self) -> None:
        """Count one user less; the watcher stops after the last one."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._watcher is not None:
                self._watcher.stop()
                self._watcher = None


_HUBS: dict[str, Hub] = {}
_HUBS_LOCK = threading.Lock()
#: Hubs inherited across fork(): kept alive, never used, so their connections are not
#: closed in the child (closing an inherited SQLite handle is unsafe).
_ORPHANS: list[object] = []


def hub_for(path: str) -> Hub:
    """The process-wide hub of a database file."""
    with _HUBS_LOCK:
        hub = _HUBS.get(path)
        if hub is None:
            hub = _HUBS[path] = Hub(path)
        return hub


def _after_fork_in_child() -> None:
    global _HUBS_LOCK
    _ORPHANS.append(dict(_HUBS))
    _HUBS.clear()
    _HUBS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Watcher:
    """A daemon thread that calls ``on_change`` after commits by other connections.

    It works only while a coroutine waits (``has_waiters``): a waiter that starts waiting
    pokes it, and it checks at once, so a commit between the waiter's query and its wait
    is seen. Without waiters it sleeps (it does not even read inotify events), so a busy
    worker pays nothing for it.
    """

    def __init__(
        self, path: str, on_change: Callable[[], None], has_waiters: Callable[[], bool]
    ) -> None:
        self.path = path
        self._on_change = on_change
        self._has_waiters = has_waiters
        self._stop = threading.Event()
        self._wake = threading.Event()  # poked (a new waiter) or stopped
        self._fd_lock = threading.Lock()
        self._wake_r = self._wake_w = -1
        self._inotify: int | None = None
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA busy_timeout = 0")
            (journal,) = self._conn.execute("PRAGMA journal_mode").fetchone()
            self._last = self._data_version()
            # In WAL mode every commit writes the -wal file; otherwise the database itself.
            suffix = "-wal" if str(journal).lower() == "wal" else ""
            self._names = {os.path.basename(path) + suffix}
            self._inotify = _inotify_watch(os.path.dirname(path))
            if self._inotify is not None:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
                os.set_blocking(self._wake_w, False)
        except BaseException:
            self._close()
            raise
        self.mode = "poll" if self._inotify is None else "inotify"
        self._thread = threading.Thread(
            target=self._run, name=f"omniq-sqlite-watch:{os.path.basename(path)}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True until stopped (or the thread failed)."""
        return not self._stop.is_set()

    def poke(self) -> None:
        """A coroutine started waiting: check now (safe from any thread)."""
        self._signal(stop=False)

    def stop(self) -> None:
        """Ask the thread to stop; it closes its connection itself."""
        self._signal(stop=True)

    def _signal(self, *, stop: bool) -> None:
        with self._fd_lock:  # never write to a pipe the thread has closed (fd reuse)
            if self._stop.is_set():
                return
            if stop:
                self._stop.set()
            self._wake.set()
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):  # full: the thread wakes anyway
                    os.write(self._wake_w, b"x")

    def _woken(self) -> bool:
        """Consume a poke: True when there was one."""
        poked = self._wake.is_set()
        self._wake.clear()
        if self._wake_r >= 0:
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass
        return poked

    def _close(self) -> None:
        for fd in (self._wake_r, self._wake_w, self._inotify):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        self._inotify = None
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def _data_version(self) -> int | None:
        try:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None  # busy (e.g. WAL recovery): reported as a change

    def _check(self) -> bool:
        version = self._data_version()
        if version is not None and version == self._last:
            return False
        self._last = version
        self._on_change()
        return True

    def _run(self) -> None:
        try:
            if self._inotify is None:
                self._poll_loop()
            else:
                self._inotify_loop(self._inotify)
        except Exception:  # pragma: no cover - the waiters fall back to polling
            log.exception("SQLite change watcher for %s stopped", self.path)
        finally:
            with self._fd_lock:
                self._stop.set()
                self._close()

    def _poll_loop(self) -> None:
        interval = POLL_MIN
        while not self._stop.is_set():
            if not self._has_waiters():
                self._wake.wait()  # until a waiter pokes (or stop)
                self._woken()
                interval = POLL_MIN
            else:
                self._wake.wait(interval)
                self._woken()
            if self._stop.is_set():
                return
            interval = POLL_MIN if self._check() else min(interval * 1.25, POLL_MAX)

    def _inotify_loop(self, fd: int) -> None:
        pipe_only = select.poll()
        pipe_only.register(self._wake_r, select.POLLIN)
        both = select.poll()
        both.register(self._wake_r, select.POLLIN)
        both.register(fd, select.POLLIN)
        hot_until = last_check = 0.0
        step = HOT_MIN
        while True:
            idle = not self._has_waiters()
            if idle:
                pipe_only.poll()  # until a waiter pokes (or stop): no work at all meanwhile
            elif time.monotonic() >= hot_until:
                both.poll(IDLE_CHECK * 1000)
            elif step < 0.001:
                self._wake.wait(step)  # poll() counts whole milliseconds: too coarse here
            else:
                both.poll(step * 1000)  # a new write ends the wait at once
            if self._stop.is_set():
                return
            poked = self._woken()
            written, lost = self._drain(fd)
            if lost:  # the watch is gone (directory removed): poll instead
                self.mode = "poll"
                self._check()
                self._poll_loop()
                return
            now = time.monotonic()
            if written:  # a commit becomes visible once its frames are synced: poll it
                hot_until, step = now + HOT_LINGER, HOT_MIN
            elif not (idle or poked) and now >= hot_until and now - last_check < IDLE_CHECK:
                continue  # an unrelated file in the directory changed
            last_check = now
            if not self._check() and not written:
                step = min(step * 1.5, HOT_MAX)

    def _drain(self, fd: int) -> tuple[bool, bool]:
        """Read pending inotify events: (a watched file was written?, watch lost?)."""
        written = False
        while True:
            try:
                buf = os.read(fd, 65536)
            except BlockingIOError:
                return written, False
            if not buf:
                return written, False
            pos = 0
            while pos + _EVENT.size <= len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, pos)
                name = buf[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0")
                pos += _EVENT.size + length
                if mask & _IN_IGNORED:
                    return written, True
                if mask & _IN_Q_OVERFLOW or os.fsdecode(name) in self._names:
                    written = True


def _inotify_watch(directory: str) -> int | None:
    """An inotify descriptor watching writes in ``directory``; None where unavailable."""
    if not sys.platform.startswith("linux") or os.environ.get("OMNIQ_SQLITE_NO_INOTIFY"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1 = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init1.argtypes, init1.restype = [ctypes.c_int], ctypes.c_int
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add_watch.restype = ctypes.c_int
    fd = int(init1(_IN_NONBLOCK | _IN_CLOEXEC))
    if fd < 0:  # e.g. fs.inotify.max_user_instances reached
        log.debug("inotify unavailable (errno %d); polling instead", ctypes.get_errno())
        return None
    if add_watch(fd, os.fsencode(directory or "."), _WATCH_MASK) < 0:
        log.debug("cannot watch %s (errno %d); polling instead", directory, ctypes.get_errno())
        os.close(fd)
        return None
    return fd
