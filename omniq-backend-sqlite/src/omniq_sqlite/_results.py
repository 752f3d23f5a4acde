"""AsyncSQLiteResultStorage: task results as encoded bytes with an expiry column.

A result lives in one of two places: the ``results`` table, or the row of its task
(``tasks.result``, ``tasks.result_expires``), where a worker's completion writes it in
the same statement that finishes the task (see ``_task_sql.complete_storing``). A
result in the task row is the task's newest: storing one in ``results`` clears it, so
readers look there first. Results in task rows are deleted with their task
(``prune_finished`` keeps the unexpired ones, moving them to ``results``) or by
``cleanup_expired`` once past their TTL.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.errors import SerializationError
from omniq.models import TaskResult, TaskStatus
from omniq.serialization import SerializationManager
from omniq.storage.base import BaseResultStorage
from omniq_sqlite._component import CLEANUP_BATCH, SQLiteComponent
from omniq_sqlite._database import Poll, begin_immediate

log = logging.getLogger("omniq.sqlite")

_UPSERT = (
    "INSERT INTO results (task_id, status, finished_at, expires_at, data) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, "
    "finished_at = excluded.finished_at, expires_at = excluded.expires_at, data = excluded.data"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
#: a result stored in results replaces the one in its task's row
_CLEAR_TASK_ROW = (
    "UPDATE tasks SET result = NULL, result_expires = NULL WHERE id = ? AND result IS NOT NULL"
)
#: a task's result, from its row first (one statement: one snapshot)
_GET = (
    "SELECT result, result_expires, 0 AS src FROM tasks WHERE id = ?1 AND result IS NOT NULL "
    "UNION ALL SELECT data, expires_at, 1 FROM results WHERE task_id = ?1 ORDER BY src LIMIT 1"
)
#: results rows not replaced by a newer result in their task's row
_NOT_REPLACED = (
    "NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = results.task_id AND tasks.result IS NOT NULL)"
)

Encoded = tuple[str, str, float, float | None, bytes]


def store_results(conn: sqlite3.Connection, rows: list[Encoded]) -> list[None]:
    """Upsert encoded results (in the current write transaction, or a new one)."""
    begin_immediate(conn)
    conn.executemany(_UPSERT, rows)
    conn.executemany(_CLEAR_TASK_ROW, [(row[0],) for row in rows])
    return [None] * len(rows)


def _get(conn: sqlite3.Connection, task_id: str) -> bytes | None:
    row = conn.execute(_GET, (task_id,)).fetchone()
    if row is None or (row[1] is not None and row[1] <= time.time()):
        return None  # none, or the newest has expired
    return bytes(row[0])


def _list(conn: sqlite3.Connection, status: str | None, limit: int) -> builtins.list[bytes]:
    """The results table's rows in insertion order, then the results in task rows (in
    the tasks' order). A result in a task row is a success (see complete_storing)."""
    now = time.time()
    params: builtins.list[Any] = [now]
    cond = _LIVE
    if status is not None:
        cond, params = f"status = ? AND {cond}", [status, *params]
    out = [
        bytes(r[0])
        for r in conn.execute(
            f"SELECT data FROM results WHERE {cond} AND {_NOT_REPLACED} ORDER BY rowid LIMIT ?",
            [*params, limit],
        )
    ]
    if len(out) < limit and status in (None, "success"):
        out += [
            bytes(r[0])
            for r in conn.execute(
                "SELECT result FROM tasks WHERE result IS NOT NULL AND "
                "(result_expires IS NULL OR result_expires > ?) ORDER BY rowid LIMIT ?",
                (now, limit - len(out)),
            )
        ]
    return out


def _delete(conn: sqlite3.Connection, task_id: str) -> bool:
    begin_immediate(conn)
    in_row = conn.execute(_CLEAR_TASK_ROW, (task_id,)).rowcount == 1
    return conn.execute("DELETE FROM results WHERE task_id = ?", (task_id,)).rowcount == 1 or in_row


def _cleanup(conn: sqlite3.Connection, now: float) -> int:
    begin_immediate(conn)
    cur = conn.execute(
        "DELETE FROM results WHERE rowid IN (SELECT rowid FROM results "
        "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
        (now, CLEANUP_BATCH),
    )
    n = int(cur.rowcount)
    if n < CLEANUP_BATCH:  # then the task rows' (no index: a scan, like prune_finished's)
        cur = conn.execute(
            "UPDATE tasks SET result = NULL, result_expires = NULL WHERE rowid IN "
            "(SELECT rowid FROM tasks WHERE result_expires <= ? AND result IS NOT NULL "
            "LIMIT ?)",
            (now, CLEANUP_BATCH - n),
        )
        n += int(cur.rowcount)
    return n


class AsyncSQLiteResultStorage(SQLiteComponent, BaseResultStorage):
    """Result storage with TTL; ``wait`` is woken by results set in this process and,
    through the file's change watcher, by commits of other processes."""

    blocking_wait: ClassVar[bool] = False
    cross_process: ClassVar[bool] = True

    def encode(self, result: TaskResult, serializer: SerializationManager | None = None) -> Encoded:
        """The stored row of a result (raises SerializationError)."""
        data = (serializer or self.serializer).encode_result(result)
        return (result.task_id, result.status.value, result.finished_at, result.expires_at, data)

    def _decode(self, task_id: str | None, data: bytes) -> TaskResult:
        try:
            return self.serializer.decode_result(data)
        except SerializationError as e:
            which = f"of task {task_id} " if task_id else ""
            raise SerializationError(f"stored result {which}in {self.path}: {e}") from e

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id``."""
        row = self.encode(result)
        db = await self._ensure()
        await db.run_batched("results", store_results, row)
        db.signal("results").notify()

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results in one transaction. Every result is encoded first, so a
        SerializationError leaves nothing written."""
        serializer = self.serializer  # looked up once: it reads the environment
        rows = [self.encode(r, serializer) for r in results]
        if not rows:
            return
        db = await self._ensure()
        await db.run_write(store_results, rows)
        db.signal("results").notify()

    async def get(self, task_id: str) -> TaskResult | None:
        """The result, or None when absent or expired."""
        data = await self._run(_get, task_id)
        return None if data is None else self._decode(task_id, data)

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait up to ``timeout`` seconds (None: forever) for the result."""
        db = await self._ensure()
        signal = db.signal("results")
        poll = Poll(db, timeout is None or timeout > 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = signal.version
            result = await self.get(task_id)
            if result is not None:
                return result
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            await poll.wait(signal, seen, remaining, soon=False)

    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""
        return await self._run(_delete, task_id)

    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Unexpired results in insertion order, optionally of one status."""
        blobs = await self._run(_list, None if status is None else status.value, limit)
        out: builtins.list[TaskResult] = []
        for blob in blobs:
            try:
                out.append(self._decode(None, blob))
            except SerializationError as e:
                log.warning("skipping an undecodable result: %s", e)
        return out

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete results past their TTL; returns how many."""
        now = now or time.time()
        total = 0
        while True:  # bounded batches: each is one short write transaction
            n = await self._run(_cleanup, now)
            total += n
            if n < CLEANUP_BATCH:
                return total
