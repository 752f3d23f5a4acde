"""arq on Redis: ``arq benchmarks.systems.peer_arq.WorkerSettings``.

arq is 0.25 here: arq 0.28 pins redis<6 while taskiq-redis 1.2 (the one that works with
taskiq 0.13) needs redis>=8, and one environment holds every peer. arq has no bulk
enqueue: one ``enqueue_job`` per task. Polling knobs (worker ``poll_delay``,
``Job.result(poll_delay=)``, both 0.5 s by default) are set to BENCH_POLL.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from benchmarks.systems.base import BIN, CONCURRENCY, REDIS_URL
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.redis_common import POLL, RedisSystem

PREFIX = os.environ.get("BENCH_PREFIX", "bench-arq")


async def noop(ctx: dict[str, Any]) -> None:
    return None


def _settings() -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(REDIS_URL)


class WorkerSettings:
    functions = [noop]
    queue_name = f"{PREFIX}:queue"
    max_jobs = CONCURRENCY
    poll_delay = POLL
    keep_result = 3600
    handle_signals = True
    redis_settings = _settings()


class Arq(RedisSystem):
    name = "arq"
    dist = "arq"
    bulk_note = "no bulk API: `enqueue_job` per task"
    worker_note = f"`arq ...WorkerSettings`, max_jobs={CONCURRENCY}, poll_delay={POLL}s"
    progress_note = "`ZCARD queue` (arq removes a job from it when it finishes)"
    patterns = ["{p}:*", "arq:job:*", "arq:result:*", "arq:in-progress:*", "arq:retry:*"]

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.queue = f"{prefix}:queue"
        self._pool: Any = None

    async def pool(self) -> Any:
        if self._pool is None:
            from arq import create_pool

            self._pool = await create_pool(_settings(), default_queue_name=self.queue)
        return self._pool

    def enqueue_bulk(self, n: int) -> None:
        async def go() -> None:
            pool = await self.pool()
            for _ in range(n):
                await pool.enqueue_job("noop", _queue_name=self.queue)

        self.arun(go())

    def remaining(self) -> int:
        return int(self.arun(self.redis.zcard(self.queue)))

    def worker_cmd(self) -> list[str]:
        return [str(BIN / "arq"), "benchmarks.systems.peer_arq.WorkerSettings"]

    def latency(self, n: int, warmup: int) -> list[float]:
        from arq.jobs import ResultNotFound

        async def one() -> None:
            pool = await self.pool()
            job = await pool.enqueue_job("noop", _queue_name=self.queue)
            try:
                await job.result(timeout=30, poll_delay=POLL)
            except ResultNotFound:
                # arq 0.25 reads the result and the queue in two commands: a job finishing
                # in between is reported as not found. Read its stored result instead.
                while await job.result_info() is None:
                    await asyncio.sleep(POLL)

        return self.arun(atimed_loop(one, n, warmup))
