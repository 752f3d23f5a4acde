"""procrastinate on PostgreSQL, in its own schema (``search_path``):
``procrastinate --app=benchmarks.systems.peer_procrastinate.app worker --concurrency 10``.

Bulk: ``Task.batch_defer_async`` (1,000 per call). procrastinate stores no return
values: a round trip ends when ``get_job_status_async`` reports ``succeeded`` (polled
every BENCH_POLL seconds).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from benchmarks.systems.base import BIN, CONCURRENCY, PG_DSN
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.nats_names import safe
from benchmarks.systems.pg_common import PgSystem
from benchmarks.systems.redis_common import POLL

PREFIX = os.environ.get("BENCH_PREFIX", "bench-procrastinate")


def schema(prefix: str) -> str:
    return safe(prefix).lower()


def make(prefix: str) -> tuple[Any, Any]:
    import procrastinate

    sep = "&" if "?" in PG_DSN else "?"
    dsn = f"{PG_DSN}{sep}options=-csearch_path%3D{schema(prefix)}"
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app, noop


app, noop = make(PREFIX)


class Procrastinate(PgSystem):
    name = "procrastinate"
    dist = "procrastinate"
    bulk = True
    bulk_note = "`batch_defer_async`, 1,000 per call"
    worker_note = f"`procrastinate worker --concurrency {CONCURRENCY}` (LISTEN/NOTIFY)"
    progress_note = "`count(*)` of jobs in status todo or doing"

    @property
    def pair(self) -> tuple[Any, Any]:
        if not hasattr(self, "_pair"):
            self._pair = make(self.prefix)
            self.arun(self._pair[0].open_async())
        return self._pair

    def setup(self) -> None:
        s = schema(self.prefix)
        self.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}")
        app, _ = self.pair
        self.arun(app.schema_manager.apply_schema_async())

    def teardown(self) -> None:
        if hasattr(self, "_pair"):
            self.arun(self._pair[0].close_async())
            del self._pair
        self.execute(f"DROP SCHEMA IF EXISTS {schema(self.prefix)} CASCADE")

    def enqueue_bulk(self, n: int) -> None:
        _, task = self.pair

        async def go() -> None:
            for i in range(0, n, 1000):
                await task.batch_defer_async(*[{} for _ in range(min(1000, n - i))])

        self.arun(go())

    def remaining(self) -> int:
        return int(
            self.fetchval(
                f"SELECT count(*) FROM {schema(self.prefix)}.procrastinate_jobs "
                "WHERE status IN ('todo', 'doing')"
            )
        )

    def worker_cmd(self) -> list[str]:
        return [
            str(BIN / "procrastinate"), "--app=benchmarks.systems.peer_procrastinate.app",
            "worker", "--concurrency", str(CONCURRENCY),
        ]  # fmt: skip

    def latency(self, n: int, warmup: int) -> list[float]:
        from procrastinate.jobs import Status

        app, task = self.pair

        async def one() -> None:
            job_id = await task.defer_async()
            while True:
                status = await app.job_manager.get_job_status_async(job_id)
                if status == Status.SUCCEEDED:
                    return
                if status not in (Status.TODO, Status.DOING):
                    raise RuntimeError(f"job ended {status}")
                await asyncio.sleep(POLL)

        return self.arun(atimed_loop(one, n, warmup))
