"""The raw ceiling on PostgreSQL, written directly with asyncpg.

One table; bulk enqueue with ``COPY``; claims with ``UPDATE ... WHERE id IN (SELECT ...
FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING``; results and acks in one ``UPDATE ... FROM
unnest(...)`` per batch that also ``pg_notify``s each finished id; workers wake on
``LISTEN`` (enqueue notifies) and result waiters on the finished-id notification.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from benchmarks.systems.base import PG_DSN, System
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.nats_names import safe

BATCH = 100


def table(prefix: str) -> str:
    return f"{safe(prefix).lower()}_jobs"


def noop() -> None:
    return None


SCHEMA = """
CREATE TABLE IF NOT EXISTS {t} (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    status smallint NOT NULL DEFAULT 0,
    result jsonb
);
CREATE INDEX IF NOT EXISTS {t}_todo ON {t} (id) WHERE status = 0;
"""


class RawPostgres(System):
    name = "raw asyncpg"
    server = "postgres"
    kind = "raw"
    dist = "asyncpg"
    bulk = True
    bulk_note = "`COPY` (copy_records_to_table)"
    worker_note = "`python -m benchmarks.systems.raw_postgres`: SKIP LOCKED batches of 100"
    progress_note = "`count(*) WHERE status < 2`"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.t = table(prefix)
        self._conn: Any = None

    async def conn(self) -> Any:
        if self._conn is None:
            import asyncpg

            self._conn = await asyncpg.connect(PG_DSN)
        return self._conn

    def check(self) -> None:
        self.arun(self.conn())

    def setup(self) -> None:
        async def go() -> None:
            c = await self.conn()
            await c.execute(f"DROP TABLE IF EXISTS {self.t}")
            await c.execute(SCHEMA.format(t=self.t))

        self.arun(go())

    def teardown(self) -> None:
        async def go() -> None:
            c = await self.conn()
            await c.execute(f"DROP TABLE IF EXISTS {self.t}")
            await c.close()
            self._conn = None

        self.arun(go())

    def enqueue_bulk(self, n: int) -> None:
        async def go() -> None:
            c = await self.conn()
            rows = [(json.dumps({"fn": "noop"}),) for _ in range(n)]
            await c.copy_records_to_table(self.t, records=rows, columns=["payload"])
            await c.execute(f"NOTIFY {self.t}_new")

        self.arun(go())

    def remaining(self) -> int:
        async def go() -> int:
            c = await self.conn()
            return int(await c.fetchval(f"SELECT count(*) FROM {self.t} WHERE status < 2"))

        return int(self.arun(go()))

    def worker_cmd(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.systems.raw_postgres"]

    def latency(self, n: int, warmup: int) -> list[float]:
        async def go() -> list[float]:
            import asyncpg

            listener = await asyncpg.connect(PG_DSN)
            waiting: dict[str, asyncio.Future[None]] = {}

            def done(_c: Any, _pid: int, _ch: str, payload: str) -> None:
                fut = waiting.pop(payload, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

            await listener.add_listener(f"{self.t}_done", done)
            c = await self.conn()
            insert = (
                f"WITH i AS (INSERT INTO {self.t} (payload) VALUES ($1) RETURNING id) "
                f"SELECT id, pg_notify('{self.t}_new', '') FROM i"
            )

            async def one() -> None:
                fut = asyncio.get_running_loop().create_future()
                # register before the insert commits: the id is known only after, so
                # park the future under a placeholder and move it
                row = await c.fetchrow(insert, json.dumps({"fn": "noop"}))
                key = str(row["id"])
                waiting[key] = fut
                status = await c.fetchval(f"SELECT status FROM {self.t} WHERE id = $1", row["id"])
                if status == 2:
                    waiting.pop(key, None)
                    return
                await asyncio.wait_for(fut, 30)

            try:
                return await atimed_loop(one, n, warmup)
            finally:
                await listener.close()

        return self.arun(go())


async def worker(prefix: str) -> None:
    import asyncpg

    t = table(prefix)
    conn = await asyncpg.connect(PG_DSN)
    wake = asyncio.Event()
    await conn.add_listener(f"{t}_new", lambda *_: wake.set())
    work = await asyncpg.connect(PG_DSN)
    claim = (
        f"UPDATE {t} SET status = 1 WHERE id IN (SELECT id FROM {t} WHERE status = 0 "
        f"ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id, payload"
    )
    finish = (
        f"WITH u AS (UPDATE {t} SET status = 2, result = v.r FROM "
        f"unnest($1::bigint[], $2::jsonb[]) AS v(id, r) WHERE {t}.id = v.id RETURNING {t}.id) "
        f"SELECT count(pg_notify('{t}_done', u.id::text)) FROM u"
    )
    while True:
        wake.clear()
        rows = await work.fetch(claim, BATCH)
        if not rows:
            try:
                await asyncio.wait_for(wake.wait(), 1.0)
            except TimeoutError:
                pass
            continue
        ids, results = [], []
        for row in rows:
            json.loads(row["payload"])
            ids.append(row["id"])
            results.append(json.dumps(noop()))
        await work.fetchval(finish, ids, results)


if __name__ == "__main__":
    asyncio.run(worker(os.environ["BENCH_PREFIX"]))
