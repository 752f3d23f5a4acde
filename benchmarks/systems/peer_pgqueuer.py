"""PgQueuer on PostgreSQL, tables prefixed with ``PGQUEUER_PREFIX``:
``await pgq.run()`` (what ``pgq run ...:main`` does).

Bulk: ``Queries.enqueue`` with lists (one statement). PgQueuer stores no return value: a
round trip ends when its ``CompletionWatcher`` (LISTEN/NOTIFY) reports ``successful``;
the watcher's debounce (50 ms by default) is set to BENCH_POLL.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from typing import Any

from benchmarks.systems.base import BIN, PG_DSN
from benchmarks.systems.common import atimed_loop
from benchmarks.systems.nats_names import safe
from benchmarks.systems.pg_common import PgSystem
from benchmarks.systems.redis_common import POLL


def table_prefix(prefix: str) -> str:
    return safe(prefix).lower() + "_"


async def main() -> Any:
    """The worker factory ``pgq run`` calls."""
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(PG_DSN)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Any) -> None:
        return None

    return pgq


class PgQueuer(PgSystem):
    name = "pgqueuer"
    dist = "pgqueuer"
    bulk = True
    bulk_note = "`Queries.enqueue([...])`, 1,000 per call"
    worker_note = "`await PgQueuer.run()` (batch size 10, LISTEN/NOTIFY); `pgq run` crashes"
    progress_note = "`count(*)` of the queue table (a job leaves it when done)"

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PGQUEUER_PREFIX"] = table_prefix(self.prefix)
        env["PGDSN"] = PG_DSN
        return env

    def _pgq(self, *args: str) -> None:
        import subprocess

        subprocess.run(
            [str(BIN / "pgq"), "--pg-dsn", PG_DSN, *args],
            env=self.env(),
            check=True,
            capture_output=True,
        )

    def queries(self) -> Any:
        if not hasattr(self, "_queries"):
            from pgqueuer.adapters.persistence.queries import Queries
            from pgqueuer.db import AsyncpgDriver
            from pgqueuer.domain.settings import db_settings

            os.environ["PGQUEUER_PREFIX"] = table_prefix(self.prefix)
            db_settings.cache_clear()
            self._queries = Queries(AsyncpgDriver(self.arun(self.pg())))
        return self._queries

    def setup(self) -> None:
        os.environ["PGQUEUER_PREFIX"] = table_prefix(self.prefix)
        self.teardown()
        self._pgq("install")

    def teardown(self) -> None:
        os.environ["PGQUEUER_PREFIX"] = table_prefix(self.prefix)
        try:
            self._pgq("uninstall")
        except Exception:
            pass

    def enqueue_bulk(self, n: int) -> None:
        q = self.queries()

        async def go() -> None:
            for i in range(0, n, 1000):
                k = min(1000, n - i)
                await q.enqueue(["noop"] * k, [None] * k, [0] * k)

        self.arun(go())

    def remaining(self) -> int:
        return int(self.fetchval(f"SELECT count(*) FROM {table_prefix(self.prefix)}pgqueuer"))

    def worker_cmd(self) -> list[str]:
        # `pgq run` fails here before starting (pgqueuer 1.6 with typer 0.29: its
        # --log-level parser returns a str where an enum is expected), so the worker is
        # PgQueuer's own documented `await pgq.run()` with the CLI's defaults.
        return [sys.executable, "-m", "benchmarks.systems.peer_pgqueuer"]

    def latency(self, n: int, warmup: int) -> list[float]:
        from pgqueuer.core.completion import CompletionWatcher
        from pgqueuer.db import AsyncpgDriver

        q = self.queries()

        async def go() -> list[float]:
            import asyncpg

            conn = await asyncpg.connect(PG_DSN)
            from pgqueuer.adapters.persistence.queries import Queries

            driver = AsyncpgDriver(conn)
            async with CompletionWatcher(
                driver, queries=Queries(driver), debounce=timedelta(seconds=POLL)
            ) as watcher:

                async def one() -> None:
                    (jid,) = await q.enqueue("noop", None)
                    status = await watcher.wait_for(jid)
                    assert status == "successful", status

                out = await atimed_loop(one, n, warmup)
            await conn.close()
            return out

        return self.arun(go())


async def _run() -> None:
    pgq = await main()
    await pgq.run()


if __name__ == "__main__":
    asyncio.run(_run())
