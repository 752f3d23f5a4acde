"""Storage interfaces (``omniq.storage.base``) and the built-in memory backend."""

from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseTaskQueue,
    Released,
    StorageComponent,
)

__all__ = [
    "BaseEventStorage",
    "BaseResultStorage",
    "BaseScheduleStorage",
    "BaseTaskQueue",
    "Released",
    "StorageComponent",
]
