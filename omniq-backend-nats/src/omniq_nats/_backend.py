"""NATSBackend: the four components over one pooled connection, and create_nats_backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omniq.storage.base import BackendBundle
from omniq_nats._events import AsyncNATSEventStorage
from omniq_nats._queue import AsyncNATSQueue
from omniq_nats._results import AsyncNATSResultStorage
from omniq_nats._schedules import AsyncNATSScheduleStorage
from omniq_nats._sync import NATSEventStorage, NATSQueue, NATSResultStorage, NATSScheduleStorage

__all__ = ["NATSBackend", "create_nats_backend"]


class NATSBackend(BackendBundle):
    """Task queue, results, events and schedules on one NATS server set.

    The components share one connection per event loop (the pool). ``async with
    backend:`` (or ``backend.async_context()``) for async code; ``with backend:`` and the
    ``sync_*`` twins for blocking code.
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        options.pop("shared", None)
        default_lease = options.pop("default_lease", None)
        self.task_queue = AsyncNATSQueue(url, default_lease=default_lease, **options)
        self.result_storage = AsyncNATSResultStorage(url, **options)
        self.event_storage = AsyncNATSEventStorage(url, **options)
        self.schedule_storage = AsyncNATSScheduleStorage(url, **options)
        self.sync_task_queue: NATSQueue = NATSQueue.wrap(self.task_queue)
        self.sync_result_storage: NATSResultStorage = NATSResultStorage.wrap(self.result_storage)
        self.sync_event_storage: NATSEventStorage = NATSEventStorage.wrap(self.event_storage)
        self.sync_schedule_storage: NATSScheduleStorage = NATSScheduleStorage.wrap(
            self.schedule_storage
        )

    def __repr__(self) -> str:
        return f"NATSBackend({self.task_queue.settings!r})"


def create_nats_backend(config: Mapping[str, Any] | None = None, **options: Any) -> NATSBackend:
    """A :class:`NATSBackend` from a seed-002 style config dict (``servers``, ``user``,
    ``password``, ``token``, ``tls*``, timeouts, subjects, ``queue_group``, ...); a
    ``url`` key is accepted too."""
    merged = {**(config or {}), **options}
    url = merged.pop("url", None)
    return NATSBackend(url, **merged)
