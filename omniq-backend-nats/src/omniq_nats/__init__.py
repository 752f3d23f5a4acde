"""OmniQ's NATS JetStream backend (nats-server 2.9+, nats-py).

Tasks in a JetStream work-queue stream with task state in a KV bucket; results and
schedules in KV buckets; events in a stream. All components of a process share one
connection per server set (the pool). Names load lazily, so the plugin entry point
imports no driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "_queue": ["AsyncNATSQueue"],
        "_results": ["AsyncNATSResultStorage"],
        "_events": ["AsyncNATSEventStorage"],
        "_schedules": ["AsyncNATSScheduleStorage"],
        "_sync": ["NATSQueue", "NATSResultStorage", "NATSEventStorage", "NATSScheduleStorage"],
        "_backend": ["NATSBackend", "create_nats_backend"],
        "_config": ["NATSSettings"],
    },
)
