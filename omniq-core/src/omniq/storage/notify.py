"""A thread-safe "something changed" signal that coroutines on any event loop can await."""

from __future__ import annotations

import asyncio
import threading


class Notifier:
    """Wakes every coroutine waiting in :meth:`wait`, whichever loop or thread it runs on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def notify_all(self) -> None:
        """Wake all current waiters (safe from any thread)."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)

    async def wait(self, timeout: float) -> bool:
        """Wait until notified or ``timeout`` seconds pass; True when notified."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
