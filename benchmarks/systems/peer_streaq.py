"""streaQ on Redis (streams): ``streaq run benchmarks.systems.peer_streaq:worker``.

Bulk: ``Worker.enqueue_many`` (one pipeline). Latency: ``await task.result(timeout=)``.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.systems.base import BIN, CONCURRENCY, REDIS_URL
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.redis_common import RedisSystem

PREFIX = os.environ.get("BENCH_PREFIX", "bench-streaq")


def make(prefix: str) -> tuple[Any, Any]:
    from streaq import Worker

    w = Worker(redis_url=REDIS_URL, queue_name=prefix, concurrency=CONCURRENCY)

    async def noop() -> None:
        return None

    return w, w.task(name="noop")(noop)


worker, noop = make(PREFIX)


class Streaq(RedisSystem):
    name = "streaq"
    dist = "streaq"
    bulk = True
    bulk_note = "`Worker.enqueue_many` (pipelined), 1,000 per call"
    worker_note = f"`streaq run ...:worker`, concurrency={CONCURRENCY}"
    progress_note = "stream consumer group `workers`: lag + pending"
    patterns = ["streaq:{p}:*"]

    @property
    def pair(self) -> tuple[Any, Any]:
        if not hasattr(self, "_pair"):
            self._pair = make(self.prefix)
        return self._pair

    def enqueue_bulk(self, n: int) -> None:
        w, task = self.pair

        async def go() -> None:
            async with w:
                for i in range(0, n, 1000):
                    await w.enqueue_many([task.enqueue() for _ in range(min(1000, n - i))])

        self.arun(go())

    def remaining(self) -> int:
        return self.arun(self.stream_left(f"streaq:{self.prefix}:queues:normal", "workers"))

    def worker_cmd(self) -> list[str]:
        return [str(BIN / "streaq"), "run", "benchmarks.systems.peer_streaq:worker"]

    def latency(self, n: int, warmup: int) -> list[float]:
        w, task = self.pair

        async def one() -> None:
            t = await task.enqueue()
            await t.result(timeout=30)

        async def go() -> list[float]:
            async with w:
                return await atimed_loop(one, n, warmup)

        return self.arun(go())
