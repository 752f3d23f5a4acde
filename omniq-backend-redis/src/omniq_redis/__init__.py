"""OmniQ's Redis backend (redis.asyncio, Redis 6.2+).

Tasks in hashes with sorted sets for ready (priority, then oldest), delayed, leased and
finished tasks; every state change in one Lua script; results as keys with ``PX``; events
in a capped stream; schedules claimed with a compare-and-set script. All keys of an app
share the hash tag ``{prefix}``. Names load lazily, so the plugin entry point imports no
driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.plugins.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "_queue": ["AsyncRedisQueue"],
        "_results": ["AsyncRedisResultStorage"],
        "_events": ["AsyncRedisEventStorage"],
        "_schedules": ["AsyncRedisScheduleStorage"],
        "_sync": ["RedisQueue", "RedisResultStorage", "RedisEventStorage", "RedisScheduleStorage"],
        "_backend": ["RedisBackend"],
    },
)
