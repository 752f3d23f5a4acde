"""OmniQ's file backend on fsspec: a local directory, ``memory://``, object stores.

Each task is a record (``tasks/<id>``) plus an empty *token* file whose directory is the
task's status and whose name sorts in claim order; a claim is one atomic rename of the
token, which carries the attempt (the fencing token) and the lease in its name. Results
are files replaced atomically, events JSON lines, schedules claimed by exclusive create.
Names load lazily, so the plugin entry point imports no fsspec driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins.lazy import lazy_exports

if TYPE_CHECKING:
    from omniq_file._backend import FileBackend
    from omniq_file._events import AsyncFileEventStorage
    from omniq_file._queue import AsyncFileQueue
    from omniq_file._results import AsyncFileResultStorage
    from omniq_file._schedules import AsyncFileScheduleStorage
    from omniq_file._sync import (
        FileEventStorage,
        FileQueue,
        FileResultStorage,
        FileScheduleStorage,
    )

__all__ = [
    "AsyncFileEventStorage",
    "AsyncFileQueue",
    "AsyncFileResultStorage",
    "AsyncFileScheduleStorage",
    "FileBackend",
    "FileEventStorage",
    "FileQueue",
    "FileResultStorage",
    "FileScheduleStorage",
]


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "_queue": ["AsyncFileQueue"],
        "_results": ["AsyncFileResultStorage"],
        "_events": ["AsyncFileEventStorage"],
        "_schedules": ["AsyncFileScheduleStorage"],
        "_sync": ["FileQueue", "FileResultStorage", "FileEventStorage", "FileScheduleStorage"],
        "_backend": ["FileBackend"],
    },
)
