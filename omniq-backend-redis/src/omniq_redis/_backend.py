"""RedisBackend: the four components over one redis.asyncio client (one pool)."""

from __future__ import annotations

from typing import Any

from omniq.storage.base import BackendBundle
from omniq_redis._component import DEFAULT_URL, client_options, redact, split_url
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

__all__ = ["RedisBackend"]


class RedisBackend(BackendBundle):
    """Task queue, results, events and schedules on one Redis server and prefix.

    The components share one ``redis.asyncio.Redis`` client, made on ``connect`` (its
    connection pool belongs to the event loop that uses it). ``async with backend:``
    for async code; ``with backend:`` and the ``sync_*`` twins for blocking code.
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        options.pop("shared", None)
        options.pop("client", None)
        self._url = url or DEFAULT_URL
        self._options = options
        default_lease = options.pop("default_lease", None)
        events_maxlen = options.pop("events_maxlen", None)
        self._client: Any = None
        self.task_queue = AsyncRedisQueue(self._url, default_lease=default_lease, **options)
        ev_opts = {} if events_maxlen is None else {"events_maxlen": events_maxlen}
        self.result_storage = AsyncRedisResultStorage(self._url, **options)
        self.event_storage = AsyncRedisEventStorage(self._url, **ev_opts, **options)
        self.schedule_storage = AsyncRedisScheduleStorage(self._url, **options)
        self.sync_task_queue: RedisQueue = RedisQueue.wrap(self.task_queue)
        self.sync_result_storage: RedisResultStorage = RedisResultStorage.wrap(self.result_storage)
        self.sync_event_storage: RedisEventStorage = RedisEventStorage.wrap(self.event_storage)
        self.sync_schedule_storage: RedisScheduleStorage = RedisScheduleStorage.wrap(
            self.schedule_storage
        )

    async def connect(self) -> None:
        """Make the shared client and hand it to every component."""
        if self._client is None:
            import redis.asyncio as aioredis

            conn_opts = {
                k: v for k, v in self._options.items() if k not in ("prefix", "serializer")
            }
            url, _ = split_url(self._url)
            self._client = aioredis.Redis.from_url(url, **client_options(conn_opts))
            for c in self.components:
                c._client = self._client
                c._owns_client = False
                c._scripts.clear()

    async def close(self) -> None:
        """Close the shared client."""
        client, self._client = self._client, None
        for c in self.components:
            c._client = None
            c._scripts.clear()
        if client is not None:
            await client.aclose()

    def __repr__(self) -> str:
        return f"RedisBackend({redact(self._url)!r}, prefix={self.task_queue.prefix!r})"
