"""OmniQ's Redis backend (redis.asyncio, Redis 6.2+).

Tasks in hashes with sorted sets for ready (priority, then oldest), delayed, leased and
finished tasks; every state change in one Lua script; results as keys with ``PX``; events
in a capped stream; schedules claimed with a compare-and-set script. All keys of an app
share the hash tag ``{prefix}``. Names load lazily, so the plugin entry point imports no
driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq_redis._backend import RedisBackend
    from omniq_redis._events import AsyncRedisEventStorage
    from omniq_redis._queue import AsyncRedisQueue
    from omniq_redis._results import AsyncRedisResultStorage
    from omniq_redis._schedules import AsyncRedisScheduleStorage
    from omniq_redis._sync import (
        RedisEventStorage,
        RedisQueue,
        RedisResultStorage,
        RedisScheduleStorage,
    )

__all__ = [
    "AsyncRedisEventStorage",
    "AsyncRedisQueue",
    "AsyncRedisResultStorage",
    "AsyncRedisScheduleStorage",
    "RedisBackend",
    "RedisEventStorage",
    "RedisQueue",
    "RedisResultStorage",
    "RedisScheduleStorage",
]

_WHERE = {
    "AsyncRedisQueue": "_queue",
    "AsyncRedisResultStorage": "_results",
    "AsyncRedisEventStorage": "_events",
    "AsyncRedisScheduleStorage": "_schedules",
    "RedisQueue": "_sync",
    "RedisResultStorage": "_sync",
    "RedisEventStorage": "_sync",
    "RedisScheduleStorage": "_sync",
    "RedisBackend": "_backend",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'omniq_redis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"omniq_redis.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
