"""AsyncEventLogger: buffers lifecycle events and writes them in batches, off the hot path.

``emit`` only appends to a buffer; a background flush writes the batch to event storage
with ``log_many`` and calls the ``omniq_on_event`` observer hooks. With no event storage
and no observers, ``emit`` returns at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from omniq.models import TaskEvent
from omniq.sync import SyncWrapper

if TYPE_CHECKING:
    from omniq.plugins import PluginManager
    from omniq.storage.base import BaseEventStorage

log = logging.getLogger("omniq.events")


class AsyncEventLogger:
    """Buffered, batched event writer. Use as ``async with`` or call start/stop."""

    def __init__(
        self,
        storage: BaseEventStorage | None,
        plugins: PluginManager | None = None,
        *,
        flush_interval: float = 0.2,
        max_batch: int = 500,
    ) -> None:
        self.storage = storage
        self.plugins = plugins
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self._buffer: list[TaskEvent] = []
        self._wake = anyio.Event()
        self._running = False
        self._tg: Any = None
        #: Held by the flush writing: a flush (get_events) waits for a batch the
        #: background flush took from the buffer and is still writing.
        self._writing = anyio.Lock()

    @property
    def enabled(self) -> bool:
        """True when events go anywhere (storage or observer hooks)."""
        has_hooks = bool(self.plugins and self.plugins.implemented("omniq_on_event"))
        return self.storage is not None or has_hooks

    def emit(self, event: TaskEvent) -> None:
        """Queue an event for the next batch (never blocks, never raises)."""
        if not self.enabled:
            return
        self._buffer.append(event)
        if len(self._buffer) >= self.max_batch:
            self._wake.set()

    async def flush(self) -> None:
        """Write buffered events now (and wait for a batch being written meanwhile)."""
        async with self._writing:
            await self._flush()

    async def _flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[: self.max_batch], self._buffer[self.max_batch :]
            if self.storage is not None:
                try:
                    await self.storage.log_many(batch)
                except Exception:
                    log.exception("could not write %d events; they are dropped", len(batch))
            if self.plugins is not None and self.plugins.implemented("omniq_on_event"):
                for event in batch:
                    await self._notify(event)

    async def _notify(self, event: TaskEvent) -> None:
        assert self.plugins is not None
        await self.plugins.acall("omniq_on_event", event=event)

    async def run(self) -> None:
        """Flush periodically until cancelled (then flush what is left)."""
        self._running = True
        try:
            while True:
                with anyio.move_on_after(self.flush_interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
                await self.flush()
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await self.flush()

    async def log(self, event: TaskEvent) -> None:
        """Emit one event and write it at once (for rare events: schedule pause/resume)."""
        self.emit(event)
        if not self._running:
            await self.flush()


class EventLogger(SyncWrapper[AsyncEventLogger], async_class=AsyncEventLogger):
    """Blocking twin of :class:`AsyncEventLogger`."""
