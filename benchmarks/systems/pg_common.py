"""What the PostgreSQL peers share: an asyncpg connection for counting and cleanup."""

from __future__ import annotations

from typing import Any

from benchmarks.systems.base import PG_DSN, System


class PgSystem(System):
    server = "postgres"
    _pg: Any = None

    async def pg(self) -> Any:
        if self._pg is None:
            import asyncpg

            self._pg = await asyncpg.connect(PG_DSN)
        return self._pg

    def check(self) -> None:
        self.arun(self.pg())

    def fetchval(self, sql: str) -> Any:
        async def go() -> Any:
            return await (await self.pg()).fetchval(sql)

        return self.arun(go())

    def execute(self, sql: str) -> None:
        async def go() -> None:
            await (await self.pg()).execute(sql)

        self.arun(go())
