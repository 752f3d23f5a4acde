"""The raw ceiling on Redis: the claim/ack/result cycle written directly with redis-py.

Reliable-queue pattern: ``LMOVE queue -> processing`` claims (pipelined, up to 100 per
round trip; ``BLMOVE`` when idle), the result goes to a per-task list (``RPUSH`` +
``EXPIRE``, so a waiter can ``BLPOP`` it) and ``LREM processing`` acks — one pipeline
per batch. Enqueue: ``RPUSH`` pipelined in batches of 1,000.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid

from benchmarks.systems.base import REDIS_URL, System

BATCH = 100


def keys(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}:queue", f"{prefix}:processing", f"{prefix}:result:"


def noop() -> None:
    return None


class RawRedis(System):
    name = "raw redis-py"
    server = "redis"
    kind = "raw"
    dist = "redis"
    bulk = True
    bulk_note = "pipelined `RPUSH`, 1,000 per round trip"
    worker_note = "`python -m benchmarks.systems.raw_redis` (one asyncio loop)"
    progress_note = "`LLEN queue + LLEN processing`"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.q, self.proc, self.res = keys(prefix)
        self._r = None

    @property
    def r(self):  # type: ignore[no-untyped-def]
        if self._r is None:
            import redis.asyncio as redis

            self._r = redis.Redis.from_url(REDIS_URL)
        return self._r

    def check(self) -> None:
        self.arun(self.r.ping())

    def setup(self) -> None:
        self.teardown_keys()

    def teardown_keys(self) -> None:
        async def go() -> None:
            batch = [k async for k in self.r.scan_iter(f"{self.prefix}:*", count=1000)]
            for i in range(0, len(batch), 1000):
                await self.r.delete(*batch[i : i + 1000])

        self.arun(go())

    def teardown(self) -> None:
        self.teardown_keys()

    def enqueue_bulk(self, n: int) -> None:
        async def go() -> None:
            for i in range(0, n, 1000):
                pipe = self.r.pipeline(transaction=False)
                for _ in range(min(1000, n - i)):
                    pipe.rpush(self.q, json.dumps({"id": uuid.uuid4().hex, "fn": "noop"}))
                await pipe.execute()

        self.arun(go())

    def remaining(self) -> int:
        async def go() -> int:
            pipe = self.r.pipeline(transaction=False)
            pipe.llen(self.q)
            pipe.llen(self.proc)
            a, b = await pipe.execute()
            return int(a) + int(b)

        return self.arun(go())

    def worker_cmd(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.systems.raw_redis"]

    def latency(self, n: int, warmup: int) -> list[float]:
        async def one() -> None:
            tid = uuid.uuid4().hex
            await self.r.rpush(self.q, json.dumps({"id": tid, "fn": "noop"}))
            got = await self.r.blpop([self.res + tid], timeout=30)
            assert got is not None, "no result within 30 s"

        async def go() -> list[float]:
            for _ in range(warmup):
                await one()
            out = []
            for _ in range(n):
                t = time.perf_counter()
                await one()
                out.append(time.perf_counter() - t)
            return out

        return self.arun(go())


async def worker(prefix: str) -> None:
    import redis.asyncio as redis

    q, proc, res = keys(prefix)
    r = redis.Redis.from_url(REDIS_URL)
    while True:
        pipe = r.pipeline(transaction=False)
        for _ in range(BATCH):
            pipe.lmove(q, proc, "LEFT", "RIGHT")
        claimed = [x for x in await pipe.execute() if x is not None]
        if not claimed:
            one = await r.blmove(q, proc, 1, "LEFT", "RIGHT")
            if one is None:
                continue
            claimed = [one]
        pipe = r.pipeline(transaction=False)
        for raw in claimed:
            job = json.loads(raw)
            value = noop()
            key = res + job["id"]
            pipe.rpush(key, json.dumps(value))
            pipe.expire(key, 3600)
            pipe.lrem(proc, 1, raw)
        await pipe.execute()


if __name__ == "__main__":
    asyncio.run(worker(os.environ["BENCH_PREFIX"]))
