"""Dramatiq on Redis: ``dramatiq benchmarks.systems.peer_dramatiq --processes 1 --threads 10``.

Results middleware with the Redis result backend (``store_results=True``), so a result is
stored as in every other system. No bulk enqueue: one ``send()`` per task.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.systems.base import BIN, CONCURRENCY, REDIS_URL
from benchmarks.systems.common import timed_loop
from benchmarks.systems.redis_common import RedisSystem

PREFIX = os.environ.get("BENCH_PREFIX", "bench-dramatiq")
QUEUE = "bench"


def make(prefix: str) -> tuple[Any, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends.redis import RedisBackend

    broker = RedisBroker(url=REDIS_URL, namespace=prefix)
    backend = RedisBackend(url=REDIS_URL, namespace=f"{prefix}-r")
    broker.add_middleware(Results(backend=backend))

    def noop() -> None:
        return None

    actor = dramatiq.actor(
        noop, actor_name="noop", queue_name=QUEUE, broker=broker, store_results=True
    )
    actor.results_backend = backend
    return broker, actor


if os.environ.get("BENCH_DRAMATIQ_WORKER"):
    import dramatiq as _dramatiq

    broker, noop = make(PREFIX)
    _dramatiq.set_broker(broker)


class Dramatiq(RedisSystem):
    name = "dramatiq"
    dist = "dramatiq"
    bulk_note = "no bulk API: `send()` per task"
    worker_note = f"`dramatiq --processes 1 --threads {CONCURRENCY}` (+ Results middleware)"
    progress_note = "`HLEN {ns}:bench.msgs` (a message leaves it when acked)"

    def env(self) -> dict[str, str]:
        env = super().env()
        env["BENCH_DRAMATIQ_WORKER"] = "1"
        return env

    @property
    def actor(self) -> Any:
        if not hasattr(self, "_actor"):
            self._broker, self._actor = make(self.prefix)
        return self._actor

    def enqueue_bulk(self, n: int) -> None:
        send = self.actor.send
        for _ in range(n):
            send()

    def remaining(self) -> int:
        return int(self.arun(self.redis.hlen(f"{self.prefix}:{QUEUE}.msgs")))

    def worker_cmd(self) -> list[str]:
        return [
            str(BIN / "dramatiq"), "benchmarks.systems.peer_dramatiq",
            "--processes", "1", "--threads", str(CONCURRENCY),
        ]  # fmt: skip

    def latency(self, n: int, warmup: int) -> list[float]:
        def one() -> None:
            self.actor.send().get_result(
                backend=self.actor.results_backend, block=True, timeout=30_000
            )

        return timed_loop(one, n, warmup)
