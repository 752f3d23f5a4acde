"""OmniQ's NATS JetStream backend (nats-server 2.9+, nats-py).

Tasks in a JetStream work-queue stream with task state in a KV bucket; results and
schedules in KV buckets; events in a stream. All components of a process share one
connection per server set (the pool). Names load lazily, so the plugin entry point
imports no driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq_nats._backend import NATSBackend, create_nats_backend
    from omniq_nats._config import NATSSettings
    from omniq_nats._events import AsyncNATSEventStorage
    from omniq_nats._queue import AsyncNATSQueue
    from omniq_nats._results import AsyncNATSResultStorage
    from omniq_nats._schedules import AsyncNATSScheduleStorage
    from omniq_nats._sync import (
        NATSEventStorage,
        NATSQueue,
        NATSResultStorage,
        NATSScheduleStorage,
    )

__all__ = [
    "AsyncNATSEventStorage",
    "AsyncNATSQueue",
    "AsyncNATSResultStorage",
    "AsyncNATSScheduleStorage",
    "NATSBackend",
    "NATSEventStorage",
    "NATSQueue",
    "NATSResultStorage",
    "NATSScheduleStorage",
    "NATSSettings",
    "create_nats_backend",
]

_WHERE = {
    "AsyncNATSQueue": "_queue",
    "AsyncNATSResultStorage": "_results",
    "AsyncNATSEventStorage": "_events",
    "AsyncNATSScheduleStorage": "_schedules",
    "NATSQueue": "_sync",
    "NATSResultStorage": "_sync",
    "NATSEventStorage": "_sync",
    "NATSScheduleStorage": "_sync",
    "NATSBackend": "_backend",
    "create_nats_backend": "_backend",
    "NATSSettings": "_config",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'omniq_nats' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"omniq_nats.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
