"""The one place that touches aiosqlite's internals (pinned: ``aiosqlite>=0.20,<0.23``).

aiosqlite runs each connection's sqlite3 calls on a thread of its own and offers only
per-statement coroutines. The backend needs three things it does not publish: the
sqlite3 connection (to run a whole transaction as one function on that thread), the
thread (made a daemon, so an unclosed component never hangs interpreter exit) and the
queue that runs a function on it (``_execute``). A new aiosqlite release is tested
here first: widen the pin in ``pyproject.toml`` only after the suite passes with it.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")

__all__ = ["daemonize", "raw_connection", "run_on_thread", "submit_on_thread"]


def daemonize(conn: aiosqlite.Connection) -> None:
    """Make the connection's thread a daemon (call before awaiting the connection)."""
    thread = getattr(conn, "_thread", None)
    if isinstance(thread, threading.Thread):
        thread.daemon = True


def raw_connection(conn: aiosqlite.Connection) -> sqlite3.Connection:
    """The sqlite3 connection an opened aiosqlite connection drives."""
    raw: sqlite3.Connection = conn._conn
    return raw


async def run_on_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on the connection's thread, in order with its other work.
    Raises ValueError when the connection was closed meanwhile."""
    result: T = await conn._execute(fn, *args)  # type: ignore[no-untyped-call]
    return result


class _NoReply:
    """Stands in for the result future of work nobody awaits: the connection's thread
    hands a result over with ``future.get_loop().call_soon_threadsafe(...)``, a no-op
    here (no self-pipe write, no event-loop wake-up)."""

    def get_loop(self) -> _NoReply:
        return self

    def call_soon_threadsafe(self, *args: Any) -> None:
        return None


_NO_REPLY = _NoReply()


def submit_on_thread(conn: aiosqlite.Connection, fn: Callable[[], Any]) -> None:
    """Queue ``fn()`` on the connection's thread, in order with its other work, without
    a result: ``fn`` reports its outcome itself and must not raise. Raises ValueError
    when the connection is closed (as ``run_on_thread`` does)."""
    if not conn._running or not conn._connection:
        raise ValueError("Connection closed")
    queue: Any = conn._tx  # typed for Future | None; any object with get_loop() works
    queue.put_nowait((_NO_REPLY, functools.partial(fn)))
