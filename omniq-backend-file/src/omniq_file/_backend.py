"""FileBackend: the four components over one store."""

from __future__ import annotations

from typing import Any

from omniq.storage.base import BackendBundle
from omniq_file._component import DEFAULT_URL, redact
from omniq_file._events import AsyncFileEventStorage
from omniq_file._queue import AsyncFileQueue
from omniq_file._results import AsyncFileResultStorage
from omniq_file._schedules import AsyncFileScheduleStorage
from omniq_file._store import Store, open_store
from omniq_file._sync import (
    FileEventStorage,
    FileQueue,
    FileResultStorage,
    FileScheduleStorage,
)

__all__ = ["FileBackend"]


class FileBackend(BackendBundle):
    """Task queue, results, events and schedules under one base URL.

    The components share one store (opening it does no I/O). ``async with backend:`` for
    async code; ``with backend:`` and the ``sync_*`` twins for blocking code.
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        options.pop("shared", None)
        options.pop("store", None)
        self._url = url or DEFAULT_URL
        self.url = redact(self._url)
        queue_opts = {
            k: options.pop(k)
            for k in ("default_lease", "poll_interval", "finish_grace")
            if k in options
        }
        self.task_queue = AsyncFileQueue(self._url, **queue_opts, **options)
        q = self.task_queue
        self._store: Store = open_store(self._url, q._storage_options, sync=q._sync)
        options["store"] = self._store
        q._store, q._owns_store = self._store, False
        self.result_storage = AsyncFileResultStorage(self._url, **options)
        self.event_storage = AsyncFileEventStorage(self._url, **options)
        self.schedule_storage = AsyncFileScheduleStorage(self._url, **options)
        self.sync_task_queue: FileQueue = FileQueue.wrap(self.task_queue)
        self.sync_result_storage: FileResultStorage = FileResultStorage.wrap(self.result_storage)
        self.sync_event_storage: FileEventStorage = FileEventStorage.wrap(self.event_storage)
        self.sync_schedule_storage: FileScheduleStorage = FileScheduleStorage.wrap(
            self.schedule_storage
        )

    async def close_shared(self) -> None:
        """Close the shared store."""
        self._store.close()

    def __repr__(self) -> str:
        return f"FileBackend({redact(self._url)!r})"
