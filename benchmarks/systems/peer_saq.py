"""SAQ on Redis: ``saq benchmarks.systems.peer_saq.settings`` (concurrency 10).

No bulk enqueue (``Queue.map`` enqueues and waits for every result): one ``enqueue``
per task. Latency: ``queue.apply(poll_interval=BENCH_POLL)`` (0.5 s by default).
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.systems.base import BIN, CONCURRENCY, REDIS_URL
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.redis_common import POLL, RedisSystem

PREFIX = os.environ.get("BENCH_PREFIX", "bench-saq")


async def noop(ctx: dict[str, Any]) -> None:
    return None


def make_queue(prefix: str) -> Any:
    from saq import Queue

    return Queue.from_url(REDIS_URL, name=prefix)


settings = {"queue": make_queue(PREFIX), "functions": [noop], "concurrency": CONCURRENCY}


class Saq(RedisSystem):
    name = "saq"
    dist = "saq"
    bulk_note = "no bulk enqueue: `enqueue` per task"
    worker_note = f"`saq ...settings`, concurrency={CONCURRENCY}"
    progress_note = "`queue.count('incomplete')`"
    patterns = ["saq:{p}:*", "saq:job:{p}:*"]

    @property
    def queue(self) -> Any:
        if not hasattr(self, "_queue"):
            self._queue = make_queue(self.prefix)
        return self._queue

    def enqueue_bulk(self, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await self.queue.enqueue("noop")

        self.arun(go())

    def remaining(self) -> int:
        return int(self.arun(self.queue.count("incomplete")))

    def worker_cmd(self) -> list[str]:
        return [str(BIN / "saq"), "benchmarks.systems.peer_saq.settings", "--workers", "1"]

    def latency(self, n: int, warmup: int) -> list[float]:
        async def one() -> None:
            await self.queue.apply("noop", timeout=30, poll_interval=POLL)

        return self.arun(atimed_loop(one, n, warmup))
