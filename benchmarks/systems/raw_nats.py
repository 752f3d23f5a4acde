"""The raw ceiling on NATS JetStream, written directly with nats-py.

A WorkQueue stream for tasks (JetStream publish, acknowledged; bulk = 500 publishes in
flight at once), one durable pull consumer shared by the workers (``fetch(batch=100)``),
the result in a KV bucket (``kv.put``, the puts of one batch in flight together), then
``msg.ack()``. A result waiter subscribes to the key's ``$KV`` subject before enqueueing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

from benchmarks.systems.base import NATS_URL, System
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.nats_names import delete_prefixed, safe

BATCH = 100


def names(prefix: str) -> tuple[str, str, str, str]:
    p = safe(prefix)
    return f"{p}_RAW", f"{p}.raw.tasks", f"{p}_raw_results", f"{p}_raw_workers"


async def ensure(js: Any, prefix: str) -> Any:
    from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig

    stream, subject, bucket, durable = names(prefix)
    await js.add_stream(
        StreamConfig(name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE)
    )
    await js.add_consumer(stream, ConsumerConfig(durable_name=durable, ack_wait=30))
    try:
        return await js.key_value(bucket)
    except Exception:
        from nats.js.api import KeyValueConfig

        return await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=3600))


def noop() -> None:
    return None


class RawNATS(System):
    name = "raw nats-py"
    server = "nats"
    kind = "raw"
    dist = "nats-py"
    bulk = True
    bulk_note = "JetStream publish, 500 acks awaited together"
    worker_note = "`python -m benchmarks.systems.raw_nats`: fetch(100), KV put, ack"
    progress_note = "messages in the WorkQueue stream (removed when acked)"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.stream, self.subject, self.bucket, self.durable = names(prefix)
        self._nc: Any = None

    async def nc(self) -> Any:
        if self._nc is None:
            import nats

            self._nc = await nats.connect(NATS_URL)
        return self._nc

    def check(self) -> None:
        self.arun(self.nc())

    def setup(self) -> None:
        async def go() -> None:
            await delete_prefixed(f"{safe(self.prefix)}_raw")
            await delete_prefixed(f"{safe(self.prefix)}_RAW")
            await ensure((await self.nc()).jetstream(), self.prefix)

        self.arun(go())

    def teardown(self) -> None:
        async def go() -> None:
            await delete_prefixed(f"{safe(self.prefix)}_raw")
            await delete_prefixed(f"{safe(self.prefix)}_RAW")
            if self._nc is not None:
                await self._nc.close()
                self._nc = None

        self.arun(go())

    def enqueue_bulk(self, n: int) -> None:
        async def go() -> None:
            js = (await self.nc()).jetstream()
            for i in range(0, n, 500):
                await asyncio.gather(
                    *[
                        js.publish(self.subject, json.dumps({"id": uuid.uuid4().hex}).encode())
                        for _ in range(min(500, n - i))
                    ]
                )

        self.arun(go())

    def remaining(self) -> int:
        async def go() -> int:
            info = await (await self.nc()).jetstream().stream_info(self.stream)
            return int(info.state.messages)

        return int(self.arun(go()))

    def worker_cmd(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.systems.raw_nats"]

    def latency(self, n: int, warmup: int) -> list[float]:
        async def one() -> None:
            nc = await self.nc()
            tid = uuid.uuid4().hex
            sub = await nc.subscribe(f"$KV.{self.bucket}.{tid}")
            await nc.jetstream().publish(self.subject, json.dumps({"id": tid}).encode())
            await sub.next_msg(timeout=30)
            await sub.unsubscribe()

        return self.arun(atimed_loop(one, n, warmup))


async def worker(prefix: str) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    stream, subject, _, durable = names(prefix)
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    kv = await ensure(js, prefix)
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
    while True:
        try:
            msgs = await sub.fetch(BATCH, timeout=1)
        except NatsTimeout:
            continue
        jobs = [json.loads(m.data) for m in msgs]
        values = [json.dumps(noop()).encode() for _ in jobs]
        await asyncio.gather(*[kv.put(j["id"], v) for j, v in zip(jobs, values, strict=True)])
        for m in msgs:
            await m.ack()


if __name__ == "__main__":
    asyncio.run(worker(os.environ["BENCH_PREFIX"]))
