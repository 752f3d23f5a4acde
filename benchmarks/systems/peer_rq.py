"""RQ on Redis: ``rq worker --worker-class rq.SimpleWorker`` (no fork per job).

Bulk: ``Queue.enqueue_many`` (one pipeline). Latency: ``job.latest_result(timeout=)``,
which blocks on the job's results stream.
"""

from __future__ import annotations

from typing import Any

from benchmarks.systems.base import BIN, REDIS_URL
from benchmarks.systems.common import timed_loop
from benchmarks.systems.redis_common import RedisSystem


def noop() -> None:
    return None


class RQ(RedisSystem):
    name = "rq"
    dist = "rq"
    bulk = True
    bulk_note = "`Queue.enqueue_many` (one pipeline per 1,000)"
    worker_note = "`rq worker --worker-class rq.SimpleWorker` (1 job at a time, no fork)"
    progress_note = "`len(queue)` + started-job registry"
    patterns = ["rq:queue:{p}*", "rq:job:*", "rq:results:*", "rq:wip:{p}*", "rq:*:{p}*"]

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._q: Any = None

    @property
    def q(self) -> Any:
        if self._q is None:
            from redis import Redis
            from rq import Queue

            self._q = Queue(self.prefix, connection=Redis.from_url(REDIS_URL))
        return self._q

    def teardown(self) -> None:
        super().teardown()
        # rq lists every queue it has seen in the global set rq:queues: drop ours
        self.arun(self.redis.srem("rq:queues", f"rq:queue:{self.prefix}"))

    def enqueue_bulk(self, n: int) -> None:
        from rq import Queue

        for i in range(0, n, 1000):
            self.q.enqueue_many(
                [Queue.prepare_data(noop, result_ttl=3600) for _ in range(min(1000, n - i))]
            )

    def remaining(self) -> int:
        return int(self.q.count + self.q.started_job_registry.count)

    def worker_cmd(self) -> list[str]:
        return [
            str(BIN / "rq"), "worker", "--url", REDIS_URL, "--worker-class", "rq.SimpleWorker",
            "--disable-job-desc-logging", "--logging_level", "WARNING", self.prefix,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = super().env()
        env.setdefault("RQ_LOGGING_LEVEL", "WARNING")
        return env

    def latency(self, n: int, warmup: int) -> list[float]:
        def one() -> None:
            job = self.q.enqueue(noop, result_ttl=3600)
            res = job.latest_result(timeout=30)
            assert res is not None, "no result within 30 s"

        return timed_loop(one, n, warmup)


__all__ = ["RQ", "noop"]
