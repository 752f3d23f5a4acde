"""What every Redis-based system shares: a client, key-pattern cleanup, polling knobs."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from benchmarks.systems.base import REDIS_URL, System

#: Result/queue polling intervals, where a library polls (documented knobs), in seconds.
POLL = float(os.environ.get("BENCH_POLL", "0.005"))


class RedisSystem(System):
    server = "redis"
    #: Key globs (formatted with ``p=prefix``) deleted before and after each workload.
    patterns: ClassVar[list[str]] = ["{p}*"]

    _redis: Any = None

    @property
    def redis(self) -> Any:
        if self._redis is None:
            import redis.asyncio as redis

            self._redis = redis.Redis.from_url(REDIS_URL)
        return self._redis

    def check(self) -> None:
        super().check()
        self.arun(self.redis.ping())

    def _clean(self) -> None:
        async def go() -> None:
            for pattern in self.patterns:
                batch = [
                    k async for k in self.redis.scan_iter(pattern.format(p=self.prefix), count=2000)
                ]
                for i in range(0, len(batch), 1000):
                    await self.redis.delete(*batch[i : i + 1000])

        self.arun(go())

    def setup(self) -> None:
        self._clean()

    def teardown(self) -> None:
        self._clean()

    async def stream_left(self, stream: str, group: str) -> int:
        """Entries of a consumer group not yet acknowledged (lag + pending)."""
        try:
            groups = await self.redis.xinfo_groups(stream)
        except Exception:
            return int(await self.redis.xlen(stream))
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == group:
                lag = g.get("lag")
                if lag is None:  # unknown after deletions: fall back to the stream length
                    return int(await self.redis.xlen(stream))
                return int(lag) + int(g["pending"])
        return int(await self.redis.xlen(stream))
