"""OmniQ on memory (in-process), SQLite, NATS, Redis and PostgreSQL, through its public API.

Enqueue: ``noop.map(...)`` (bulk: one round trip per batch of 500). Worker:
``omniq worker --app benchmarks.apps.omniq_app:oq --queues bench --concurrency 10``
(async executor and adaptive prefetch, the defaults; ``noop`` is an ``async def``, as
for the other async-first libraries). Latency: ``await (await noop.enqueue()).result()``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
from typing import Any, ClassVar

from benchmarks.systems.base import (
    CONCURRENCY,
    NATS_URL,
    PG_DSN,
    REDIS_URL,
    SCRATCH,
    System,
    Unavailable,
    discard_dir,
)
from benchmarks.systems.raw_file import NOFSYNC
from benchmarks.systems.raw_sqlite import FULL_DURABILITY, NORMAL_DURABILITY

QUEUE = "bench"


def _import_app(url: str, options: dict[str, Any]) -> Any:
    os.environ["BENCH_OMNIQ_URL"] = url
    os.environ["BENCH_OMNIQ_OPTIONS"] = json.dumps(options)
    import importlib.util

    # a fresh module object per system (not a reload of the one module): with
    # ``--interleave`` several OmniQ systems keep their apps side by side
    spec = importlib.util.find_spec("benchmarks.apps.omniq_app")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


class OmniQSystem(System):
    kind = "omniq"
    dist = "omniq-core"
    bulk = True
    bulk_note = "`noop.map()` (batches of 500)"
    worker_note = (
        f"`python -m benchmarks.apps.omniq_worker`: `start_worker(concurrency={CONCURRENCY})`, "
        "async executor, default (adaptive) prefetch: what `omniq worker` runs; the task is "
        "an `async def` no-op"
    )
    progress_note = "`task_queue.count(bench, PENDING) + count(bench, RUNNING)`"
    backend_dist: ClassVar[str] = ""
    #: ``module:Class`` of the backend's queue; ``check`` imports it.
    queue_class: ClassVar[str] = ""

    def check(self) -> None:
        if not self.queue_class:
            return
        module, _, name = self.queue_class.partition(":")
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise Unavailable(f"{self.backend_dist} is not usable: {e!r}") from e

    def url(self) -> str:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {}

    def versions(self) -> dict[str, str]:
        from benchmarks.systems.base import version

        out = {"omniq-core": version("omniq-core")}
        if self.backend_dist:
            out[self.backend_dist] = version(self.backend_dist)
        return out

    def env(self) -> dict[str, str]:
        env = super().env()
        env["BENCH_OMNIQ_URL"] = self.url()
        env["BENCH_OMNIQ_OPTIONS"] = json.dumps(self.options())
        return env

    @property
    def app(self) -> Any:
        if not hasattr(self, "_app"):
            self._app = _import_app(self.url(), self.options())
        return self._app

    @property
    def aoq(self) -> Any:
        return self.app.oq.async_

    def setup(self) -> None:
        async def go() -> None:
            await self.aoq.connect()
            await self.aoq.task_queue.purge(None)

        self.arun(go())

    def teardown(self) -> None:
        async def go() -> None:
            await self.aoq.task_queue.purge(None)
            await self.aoq.close()

        self.arun(go())

    def enqueue_bulk(self, n: int) -> None:
        self.arun(self.app.noop.map([()] * n))

    def remaining(self) -> int:
        from omniq import TaskStatus

        async def go() -> int:
            q = self.aoq.task_queue
            return int(
                await q.count(QUEUE, TaskStatus.PENDING) + await q.count(QUEUE, TaskStatus.RUNNING)
            )

        return self.arun(go())

    def worker_cmd(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.apps.omniq_worker"]

    def latency(self, n: int, warmup: int) -> list[float]:
        async def go() -> list[float]:
            noop = self.app.noop
            h = await noop.enqueue()
            await h.result(timeout=60)  # the worker is up
            for _ in range(warmup):
                await (await noop.enqueue()).result(timeout=30)
            out = []
            for _ in range(n):
                t = time.perf_counter()
                h = await noop.enqueue()
                await h.result(timeout=30)
                out.append(time.perf_counter() - t)
            return out

        return self.arun(go())


class OmniQSQLite(OmniQSystem):
    name = "OmniQ"
    server = "sqlite"
    backend_dist = "omniq-backend-sqlite"
    queue_class = "omniq_sqlite:AsyncSQLiteQueue"
    bulk_note = (
        "`noop.map()` (batches of 500, each staged as one row; a claim takes the next "
        "tasks of a batch as one claimed-batch row, and each task gets its own row when "
        "it finishes, inside the measured drain)"
    )

    durability = FULL_DURABILITY + " (OmniQ's default)"

    def path(self) -> str:
        return str(SCRATCH / f"{self.prefix}.db")

    def url(self) -> str:
        return f"sqlite:///{self.path()}"

    def setup(self) -> None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        super().setup()

    def teardown(self) -> None:
        super().teardown()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path() + suffix):
                os.remove(self.path() + suffix)


class OmniQSQLiteNormal(OmniQSQLite):
    """OmniQ on SQLite with ``synchronous=normal``, beside the raw loop at that setting."""

    variant = "synchronous=normal"
    durability = NORMAL_DURABILITY

    def options(self) -> dict[str, Any]:
        return {"synchronous": "normal"}


class OmniQNATS(OmniQSystem):
    name = "OmniQ"
    server = "nats"
    backend_dist = "omniq-backend-nats"
    queue_class = "omniq_nats:AsyncNATSQueue"

    def url(self) -> str:
        return NATS_URL

    def options(self) -> dict[str, Any]:
        from benchmarks.systems import nats_names

        return nats_names.omniq_options(self.prefix)

    progress_note = (
        "messages in the tasks stream (WorkQueue retention: a task's message is acked when "
        "it completes); `count()` scans the KV bucket, too heavy to poll"
    )

    def remaining(self) -> int:
        from benchmarks.systems import nats_names

        async def go() -> int:
            if not hasattr(self, "_nc"):
                import nats

                self._nc = await nats.connect(NATS_URL)
            info = await self._nc.jetstream().stream_info(
                f"{nats_names.safe(self.prefix)}_OMNIQ_TASKS"
            )
            return int(info.state.messages)

        return int(self.arun(go()))

    def teardown(self) -> None:
        super().teardown()
        from benchmarks.systems import nats_names

        if hasattr(self, "_nc"):
            self.arun(self._nc.close())
            del self._nc
        self.arun(nats_names.delete_prefixed(self.prefix))


class OmniQRedis(OmniQSystem):
    name = "OmniQ"
    server = "redis"
    backend_dist = "omniq-backend-redis"
    queue_class = "omniq_redis:AsyncRedisQueue"

    def url(self) -> str:
        return REDIS_URL

    def options(self) -> dict[str, Any]:
        return {"prefix": self.prefix}


class OmniQPostgres(OmniQSystem):
    name = "OmniQ"
    server = "postgres"
    backend_dist = "omniq-backend-postgres"
    queue_class = "omniq_postgres:AsyncPostgresQueue"

    def url(self) -> str:
        return PG_DSN

    def options(self) -> dict[str, Any]:
        return {"schema": self.prefix.replace("-", "_")}

    def _drop_schema(self) -> None:
        # a fresh schema each run, as the raw loop's fresh table: a purge leaves every
        # deleted row and its index entries dead until a VACUUM (the benchmark server
        # runs without autovacuum), so runs would start on the previous runs' bloat
        async def go() -> None:
            import asyncpg

            conn = await asyncpg.connect(PG_DSN)
            try:
                schema = self.options()["schema"]
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        self.arun(go())

    def setup(self) -> None:
        self.arun(self.aoq.close())  # reopened (and migrated) by the setup below
        self._drop_schema()
        super().setup()

    def teardown(self) -> None:
        super().teardown()
        self._drop_schema()


class OmniQFile(OmniQSystem):
    """OmniQ's file backend on a local directory (the default ``sync=false``)."""

    name = "OmniQ"
    server = "file"
    backend_dist = "omniq-backend-file"
    queue_class = "omniq_file:AsyncFileQueue"
    durability = f"{NOFSYNC} (`sync=false`, OmniQ's default)"
    bulk_note = (
        "`noop.map()` (batches of 500): per task a record and a token (hard link) in "
        "`ready/`, one thread hop per batch"
    )
    worker_note = (
        OmniQSystem.worker_note + "; `file:///` on the scratch disk, no fsync (the "
        "default `sync=false`): a write survives a crash of the process, not of the machine"
    )
    progress_note = "names in the queue's `ready/`, `delayed/`, `running/`, `finishing/` dirs"

    def root(self) -> str:
        return str(SCRATCH / f"{self.prefix}-files")

    def url(self) -> str:
        return f"file://{self.root()}"

    def setup(self) -> None:
        # an empty directory each time, as the raw loop's (purge keeps results/ and tmp/)
        discard_dir(self.root())
        SCRATCH.mkdir(parents=True, exist_ok=True)
        super().setup()

    def remaining(self) -> int:
        # count() would parse every token name, done/ included, twice per poll: list the
        # unfinished states' directories instead (what count(PENDING)+count(RUNNING) sees)
        base = os.path.join(self.root(), "q", QUEUE)
        n = 0
        for state in ("ready", "delayed", "running", "finishing"):
            try:
                n += len(os.listdir(os.path.join(base, state)))
            except FileNotFoundError:
                pass
        return n

    def teardown(self) -> None:
        super().teardown()
        discard_dir(self.root())


class OmniQMemory(OmniQSystem):
    """In-process backend: producer, worker and the sampler share one process."""

    name = "OmniQ"
    server = "memory"
    inproc = True
    multi_process = False
    worker_note = f"`start_worker(concurrency={CONCURRENCY})` inside the producer's process"
    progress_note = "the worker's count of recorded completions (`worker.processed`), same process"

    def url(self) -> str:
        return "memory://bench"

    def run_inproc(self, workload: str, n: int) -> list[str]:
        return [sys.executable, "-m", "benchmarks.systems.omniq", "inproc", workload, str(n)]


# --- the in-process run (OmniQ on memory) ----------------------------------------------------


async def _inproc(workload: str, n: int) -> dict[str, Any]:
    from benchmarks.harness import drain_rates

    app = _import_app("memory://bench", {})
    aoq = app.oq.async_
    poll = 0.01 if workload == "w1" else 0.1

    async def drain() -> dict[str, Any]:
        t = time.perf_counter()
        await app.noop.map([()] * n)
        enqueue_s = time.perf_counter() - t
        samples = []
        # The counter must not compete with the worker on this loop: the worker's own
        # count of recorded completions (O(1)), not count(), which scans every task.
        async with aoq.start_worker([QUEUE], concurrency=CONCURRENCY) as handle:
            while True:
                remaining = n - handle.worker.processed
                samples.append((time.perf_counter(), remaining))
                if remaining <= 0:
                    break
                await asyncio.sleep(poll)
        rates = drain_rates(samples, n)
        return {"enqueue_s": enqueue_s, "enqueue_rate": n / enqueue_s, "finished": True, **rates}

    async with aoq:
        if workload == "w1":
            return {"n": n, "p1": await drain(), "p2": {"skipped": "in-process backend"}}
        if workload == "w3":
            return {"n": n, **await drain()}
        # w2: latency with the worker running in this process
        from benchmarks.harness import percentile

        async with aoq.start_worker([QUEUE], concurrency=CONCURRENCY):
            for _ in range(20):
                await (await app.noop.enqueue()).result(timeout=30)
            ms = []
            for _ in range(n):
                t = time.perf_counter()
                await (await app.noop.enqueue()).result(timeout=30)
                ms.append((time.perf_counter() - t) * 1000)
        ms.sort()
        return {
            "n": n,
            "p50": percentile(ms, 50),
            "p95": percentile(ms, 95),
            "p99": percentile(ms, 99),
            "mean": sum(ms) / len(ms),
        }


if __name__ == "__main__" and sys.argv[1:2] == ["inproc"]:
    from benchmarks.harness import inproc_main

    inproc_main(lambda w, n: asyncio.run(_inproc(w, n)))

__all__ = ["OmniQFile", "OmniQMemory", "OmniQNATS", "OmniQSQLite"]
