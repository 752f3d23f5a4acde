"""AsyncPostgresResultStorage: task results as encoded bytes with an expiry column."""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.errors import SerializationError
from omniq.models import TaskResult, TaskStatus
from omniq.serialization import SerializationManager
from omniq.storage.base import BaseResultStorage
from omniq_postgres._component import CLEANUP_BATCH, PostgresComponent

log = logging.getLogger("omniq.postgres")

#: task_id, status, finished_at, expires_at, data
Encoded = tuple[str, str, float | None, float | None, bytes]

UPSERT_MANY_SQL = """
WITH stored AS (
    INSERT INTO results (task_id, status, finished_at, expires_at, data)
    SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::bytea[])
    ON CONFLICT (task_id) DO UPDATE SET status = excluded.status,
        finished_at = excluded.finished_at, expires_at = excluded.expires_at,
        data = excluded.data
    RETURNING task_id
)
SELECT pg_notify($6, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
"""
_LIVE = "(expires_at IS NULL OR expires_at > $1)"


class AsyncPostgresResultStorage(PostgresComponent, BaseResultStorage):
    """Result storage with TTL; ``wait`` is woken by LISTEN/NOTIFY when any process
    stores a result (and re-checks every ``poll_interval`` as a fallback)."""

    blocking_wait: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True

    def encode(self, result: TaskResult, serializer: SerializationManager | None = None) -> Encoded:
        """The stored row of a result (raises SerializationError)."""
        data = (serializer or self.serializer).encode_result(result)
        return (result.task_id, result.status.value, result.finished_at, result.expires_at, data)

    def _decode(self, task_id: str | None, data: bytes) -> TaskResult:
        try:
            return self.serializer.decode_result(bytes(data))
        except SerializationError as e:
            which = f"of task {task_id} " if task_id else ""
            raise SerializationError(
                f"stored result {which}in PostgreSQL schema {self.schema}: {e}"
            ) from e

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id``."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results in one statement. Every result is encoded first, so a
        SerializationError leaves nothing written."""
        serializer = self.serializer
        rows: dict[str, Encoded] = {}
        for r in results:  # a task given twice: the last result wins, as set() twice
            rows[r.task_id] = self.encode(r, serializer)
        if not rows:
            return
        cols = [builtins.list(c) for c in zip(*rows.values(), strict=True)]
        channel = self._db.channels["results"]
        await self._run(lambda c: c.execute(UPSERT_MANY_SQL, *cols, channel))

    async def _get_raw(self, task_id: str) -> bytes | None:
        data = await self._run(
            lambda c: c.fetchval(
                f"SELECT data FROM results WHERE task_id = $2 AND {_LIVE}", time.time(), task_id
            )
        )
        return None if data is None else bytes(data)

    async def get(self, task_id: str) -> TaskResult | None:
        """The result, or None when absent or expired."""
        data = await self._get_raw(task_id)
        return None if data is None else self._decode(task_id, data)

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait up to ``timeout`` seconds (None: forever) for the result."""
        db = self._db
        signal = db.signals["results"]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = signal.current()
            result = await self.get(task_id)
            if result is not None:
                return result
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            await db.wait("results", event, min(remaining, db.options.poll_interval))

    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""
        result = await self._run(
            lambda c: c.execute("DELETE FROM results WHERE task_id = $1", task_id)
        )
        return bool(result == "DELETE 1")

    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Unexpired results in insertion order, optionally of one status."""
        params: builtins.list[Any] = [time.time(), max(0, limit)]
        cond = _LIVE
        if status is not None:
            cond = f"status = $3 AND {cond}"
            params.append(status.value)
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT task_id, data FROM results WHERE {cond} ORDER BY seq LIMIT $2", *params
            )
        )
        out: builtins.list[TaskResult] = []
        for task_id, blob in rows:
            try:
                out.append(self._decode(task_id, blob))
            except SerializationError as e:
                log.warning("skipping an undecodable result: %s", e)
        return out

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete results past their TTL in bounded batches; returns how many."""
        at = now or time.time()
        total = 0
        while True:
            n = await self._run(
                lambda c: c.fetchval(
                    "WITH d AS (DELETE FROM results WHERE task_id IN (SELECT task_id FROM "
                    "results WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2 "
                    "FOR UPDATE SKIP LOCKED) RETURNING 1) SELECT count(*) FROM d",
                    at,
                    CLEANUP_BATCH,
                )
            )
            total += int(n)
            if n < CLEANUP_BATCH:
                return total
