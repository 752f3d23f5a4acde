"""Taskiq on Redis (taskiq-redis ``RedisStreamBroker`` + ``RedisAsyncResultBackend``) and on
NATS (taskiq-nats ``PullBasedJetStreamBroker`` + ``NATSObjectStoreResultBackend``).

Worker: ``taskiq worker benchmarks.systems.peer_taskiq:broker --workers 1
--max-async-tasks 10``. No bulk enqueue: one ``kiq()`` per task. Latency:
``wait_result(check_interval=BENCH_POLL)`` (it polls; 0.2 s by default).
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

from benchmarks.systems.base import BIN, CONCURRENCY, NATS_URL, REDIS_URL, System
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.redis_common import POLL, RedisSystem

PREFIX = os.environ.get("BENCH_PREFIX", "bench-taskiq")
KIND = os.environ.get("BENCH_TASKIQ", "redis")


def nats_name(prefix: str) -> str:
    return re.sub("[^A-Za-z0-9_]", "_", prefix)


def make(kind: str, prefix: str) -> tuple[Any, Any]:
    if kind == "nats":
        from nats.js.api import StreamConfig
        from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

        name = nats_name(prefix)
        broker: Any = PullBasedJetStreamBroker(
            NATS_URL,
            subject=f"{name}.tasks",
            stream_name=name,
            durable=f"{name}_durable",
            stream_config=StreamConfig(name=name, subjects=[f"{name}.tasks"]),
        ).with_result_backend(NATSObjectStoreResultBackend(NATS_URL, bucket_name=f"{name}_results"))
    else:
        from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

        broker = RedisStreamBroker(
            REDIS_URL, queue_name=f"{prefix}:stream", consumer_group_name=f"{prefix}-group"
        ).with_result_backend(
            RedisAsyncResultBackend(REDIS_URL, prefix_str=prefix, result_ex_time=3600)
        )

    async def noop() -> None:
        return None

    return broker, broker.task(task_name="noop")(noop)


broker, noop = make(KIND, PREFIX)


class _Taskiq:
    dist = "taskiq"
    bulk_note = "no bulk API: `kiq()` per task"
    worker_note = f"`taskiq worker --workers 1 --max-async-tasks {CONCURRENCY}`"
    taskiq_kind: ClassVar[str] = "redis"
    prefix: str

    def env(self) -> dict[str, str]:
        env = super().env()  # type: ignore[misc]
        env["BENCH_TASKIQ"] = self.taskiq_kind
        return env  # type: ignore[no-any-return]

    def pair(self) -> tuple[Any, Any]:
        if not hasattr(self, "_pair"):
            self._pair = make(self.taskiq_kind, self.prefix)
            self.arun(self._pair[0].startup())  # type: ignore[attr-defined]
        return self._pair  # type: ignore[no-any-return]

    def enqueue_bulk(self, n: int) -> None:
        _, task = self.pair()

        async def go() -> None:
            for _ in range(n):
                await task.kiq()

        self.arun(go())

    def worker_cmd(self) -> list[str]:
        return [
            str(BIN / "taskiq"), "worker", "benchmarks.systems.peer_taskiq:broker",
            "--workers", "1", "--max-async-tasks", str(CONCURRENCY), "--no-configure-logging",
        ]  # fmt: skip

    def latency(self, n: int, warmup: int) -> list[float]:
        _, task = self.pair()

        async def one() -> None:
            h = await task.kiq()
            res = await h.wait_result(check_interval=POLL, timeout=30)
            assert not res.is_err, res.error

        return self.arun(atimed_loop(one, n, warmup))  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        if hasattr(self, "_pair"):
            self.arun(self._pair[0].shutdown())
            del self._pair


class TaskiqRedis(_Taskiq, RedisSystem):
    name = "taskiq"
    dist = "taskiq"
    progress_note = "stream consumer group: lag + pending"

    def versions(self) -> dict[str, str]:
        from benchmarks.systems.base import version

        return {"taskiq": version("taskiq"), "taskiq-redis": version("taskiq-redis")}

    def remaining(self) -> int:
        return int(self.arun(self.stream_left(f"{self.prefix}:stream", f"{self.prefix}-group")))

    def setup(self) -> None:
        self.shutdown()
        super().setup()
        self.pair()  # startup() creates the consumer group before anything is enqueued

    def teardown(self) -> None:
        self.shutdown()
        super().teardown()


class TaskiqNATS(_Taskiq, System):
    name = "taskiq"
    server = "nats"
    taskiq_kind = "nats"
    progress_note = "durable consumer: num_pending + num_ack_pending"

    def versions(self) -> dict[str, str]:
        from benchmarks.systems.base import version

        return {"taskiq": version("taskiq"), "taskiq-nats": version("taskiq-nats")}

    def remaining(self) -> int:
        b, _ = self.pair()
        name = nats_name(self.prefix)

        async def go() -> int:
            info = await b.js.consumer_info(name, f"{name}_durable")
            return int(info.num_pending) + int(info.num_ack_pending)

        return int(self.arun(go()))

    def setup(self) -> None:
        self.teardown()
        self.pair()

    def teardown(self) -> None:
        self.shutdown()
        from benchmarks.systems import nats_names

        self.arun(nats_names.delete_prefixed(nats_name(self.prefix)))
