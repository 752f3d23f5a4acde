"""The raw ceiling on SQLite, written directly with aiosqlite.

Two rows at the durability of the two OmniQ rows: WAL with ``synchronous=FULL`` (OmniQ's
default) and with ``synchronous=NORMAL``. Bulk enqueue: one
``executemany`` transaction. Claims: ``BEGIN IMMEDIATE`` + ``UPDATE ... WHERE id IN
(SELECT ... LIMIT 100) RETURNING``; results and acks: one ``executemany`` transaction per
batch. Nothing notifies across processes, so idle workers and result waiters poll with
backoff from 1 ms to 50 ms (OmniQ's SQLite backend: 2 ms to 50 ms).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.systems.base import SCRATCH, System
from benchmarks.systems.common import atimed_loop

BATCH = 100

FULL_DURABILITY = "WAL, `synchronous=FULL`: every commit fsynced (survives power loss)"
NORMAL_DURABILITY = (
    "WAL, `synchronous=NORMAL`: survives a crash of the process; on power loss the "
    "last commits before the next checkpoint may be lost"
)


def path(prefix: str) -> Path:
    return SCRATCH / f"{prefix}-raw.db"


def noop() -> None:
    return None


async def connect(prefix: str, synchronous: str = "FULL") -> Any:
    import aiosqlite

    db = await aiosqlite.connect(path(prefix), isolation_level=None, timeout=30)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={synchronous}")
    await db.execute(
        "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL, "
        "status INTEGER NOT NULL DEFAULT 0, result TEXT)"
    )
    await db.execute("CREATE INDEX IF NOT EXISTS jobs_todo ON jobs (status, id)")
    return db


class RawSQLite(System):
    name = "raw aiosqlite"
    server = "sqlite"
    kind = "raw"
    dist = "aiosqlite"
    bulk = True
    bulk_note = "`executemany` in one transaction"
    worker_note = "`python -m benchmarks.systems.raw_sqlite`: batches of 100"
    progress_note = "`count(*) WHERE status < 2`"
    durability = FULL_DURABILITY
    #: PRAGMA synchronous of the producer and the worker processes.
    synchronous = "FULL"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._db: Any = None

    async def db(self) -> Any:
        if self._db is None:
            SCRATCH.mkdir(parents=True, exist_ok=True)
            self._db = await connect(self.prefix, self.synchronous)
        return self._db

    def env(self) -> dict[str, str]:
        env = super().env()
        env["BENCH_RAW_SYNC"] = self.synchronous
        return env

    def setup(self) -> None:
        async def go() -> None:
            db = await self.db()
            await db.execute("DELETE FROM jobs")

        self.arun(go())

    def teardown(self) -> None:
        async def go() -> None:
            if self._db is not None:
                await self._db.close()
                self._db = None

        self.arun(go())
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(path(self.prefix)) + suffix)
            if p.exists():
                p.unlink()

    def enqueue_bulk(self, n: int) -> None:
        async def go() -> None:
            db = await self.db()
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(
                "INSERT INTO jobs (payload) VALUES (?)",
                [(json.dumps({"fn": "noop"}),) for _ in range(n)],
            )
            await db.execute("COMMIT")

        self.arun(go())

    def remaining(self) -> int:
        async def go() -> int:
            db = await self.db()
            async with db.execute("SELECT count(*) FROM jobs WHERE status < 2") as cur:
                row = await cur.fetchone()
            return int(row[0])

        return int(self.arun(go()))

    def worker_cmd(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.systems.raw_sqlite"]

    def latency(self, n: int, warmup: int) -> list[float]:
        async def one() -> None:
            db = await self.db()
            cur = await db.execute(
                "INSERT INTO jobs (payload) VALUES (?)", (json.dumps({"fn": "noop"}),)
            )
            tid = cur.lastrowid
            delay = 0.001
            while True:
                async with db.execute(
                    "SELECT result FROM jobs WHERE id = ? AND status = 2", (tid,)
                ) as c:
                    if await c.fetchone() is not None:
                        return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

        return self.arun(atimed_loop(one, n, warmup))


class RawSQLiteNormal(RawSQLite):
    """The same loop with ``synchronous=NORMAL``, beside OmniQ at the same setting."""

    variant = "synchronous=normal"
    durability = NORMAL_DURABILITY
    synchronous = "NORMAL"


async def worker(prefix: str, synchronous: str) -> None:
    db = await connect(prefix, synchronous)
    delay = 0.001
    while True:
        await db.execute("BEGIN IMMEDIATE")
        async with db.execute(
            "UPDATE jobs SET status = 1 WHERE id IN (SELECT id FROM jobs WHERE status = 0 "
            "ORDER BY id LIMIT ?) RETURNING id, payload",
            (BATCH,),
        ) as cur:
            rows = await cur.fetchall()
        await db.execute("COMMIT")
        if not rows:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        delay = 0.001
        done = []
        for tid, payload in rows:
            json.loads(payload)
            done.append((json.dumps(noop()), tid))
        await db.execute("BEGIN IMMEDIATE")
        await db.executemany("UPDATE jobs SET status = 2, result = ? WHERE id = ?", done)
        await db.execute("COMMIT")


if __name__ == "__main__":
    asyncio.run(worker(os.environ["BENCH_PREFIX"], os.environ.get("BENCH_RAW_SYNC", "FULL")))
