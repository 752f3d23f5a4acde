"""Celery on Redis (broker and result backend):
``celery -A benchmarks.systems.peer_celery worker -P threads -c 10``.

No bulk enqueue (a group still sends one message per task): one ``delay()`` per task.
Keys carry the prefix through kombu's ``global_keyprefix``.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.systems.base import BIN, CONCURRENCY, REDIS_URL
from benchmarks.systems.common import timed_loop
from benchmarks.systems.redis_common import RedisSystem

PREFIX = os.environ.get("BENCH_PREFIX", "bench-celery")
QUEUE = "bench"


def make(prefix: str) -> tuple[Any, Any]:
    from celery import Celery

    app = Celery(prefix, broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(
        task_default_queue=QUEUE,
        broker_transport_options={"global_keyprefix": f"{prefix}:"},
        result_backend_transport_options={"global_keyprefix": f"{prefix}:"},
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )

    @app.task(name="noop")
    def noop() -> None:
        return None

    return app, noop


app, noop = make(PREFIX)


class Celery(RedisSystem):
    name = "celery"
    dist = "celery"
    bulk_note = "no bulk API: `delay()` per task"
    worker_note = (
        f"`celery worker -P threads -c {CONCURRENCY} --without-gossip --without-mingle "
        "--without-heartbeat`"
    )
    progress_note = "`LLEN queue + HLEN unacked`"

    @property
    def pair(self) -> tuple[Any, Any]:
        if not hasattr(self, "_pair"):
            self._pair = make(self.prefix)
        return self._pair

    def enqueue_bulk(self, n: int) -> None:
        _, task = self.pair
        for _ in range(n):
            task.delay()

    def remaining(self) -> int:
        async def go() -> int:
            pipe = self.redis.pipeline(transaction=False)
            pipe.llen(f"{self.prefix}:{QUEUE}")
            pipe.hlen(f"{self.prefix}:unacked")
            a, b = await pipe.execute()
            return int(a) + int(b)

        return self.arun(go())

    def worker_cmd(self) -> list[str]:
        return [
            str(BIN / "celery"), "-A", "benchmarks.systems.peer_celery", "worker",
            "-P", "threads", "-c", str(CONCURRENCY), "-Q", QUEUE, "-l", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip

    def latency(self, n: int, warmup: int) -> list[float]:
        _, task = self.pair

        def one() -> None:
            task.delay().get(timeout=30)

        return timed_loop(one, n, warmup)
