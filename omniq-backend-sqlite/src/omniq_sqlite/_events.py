"""AsyncSQLiteEventStorage: lifecycle events as plain columns plus JSON metadata."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.models import EventQuery, TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq.storage.columns import EVENT_COLUMNS, event_from_row, event_row
from omniq_sqlite._component import CLEANUP_BATCH, SQLiteComponent
from omniq_sqlite._database import begin_immediate

_FIELDS = EVENT_COLUMNS
_INSERT = f"INSERT INTO events ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})"

Row = tuple[Any, ...]






def _insert(conn: sqlite3.Connection, rows: list[Row]) -> list[None]:
    begin_immediate(conn)
    conn.executemany(_INSERT, rows)
    return [None] * len(rows)


def _insert_many(conn: sqlite3.Connection, rows: list[Row]) -> None:
    _insert(conn, rows)


def _query(conn: sqlite3.Connection, where: str, params: list[Any]) -> builtins.list[TaskEvent]:
    rows = conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM events {where} ORDER BY timestamp, id, seq", params
    ).fetchall()
    return [event_from_row(r) for r in rows]


def _cleanup(conn: sqlite3.Connection, older_than: float) -> int:
    return int(
        conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE timestamp < ? LIMIT ?)",
            (older_than, CLEANUP_BATCH),
        ).rowcount
    )


class AsyncSQLiteEventStorage(SQLiteComponent, BaseEventStorage):
    """Event log with indexes by task, type and time; never pickled."""

    cross_process: ClassVar[bool] = True

    async def log(self, event: TaskEvent) -> None:
        """Append one event (group-committed with concurrent writes)."""
        row = event_row(event)
        db = await self._ensure()
        await db.run_batched("events", _insert, row)

    async def log_many(self, events: Sequence[TaskEvent]) -> None:
        """Append several events in one transaction."""
        rows = [event_row(e) for e in events]
        if rows:
            await self._write(_insert_many, rows)

    async def select(self, query: EventQuery) -> builtins.list[TaskEvent]:
        """Events matching ``query``, oldest first, filtered and limited in SQL."""
        conds: builtins.list[str] = []
        params: builtins.list[Any] = []
        if query.task_id is not None:
            conds.append("task_id = ?")
            params.append(query.task_id)
        if query.types is not None:
            wanted = sorted(t.value for t in query.types)
            conds.append(f"event_type IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        if query.since is not None:
            conds.append("timestamp >= ?")
            params.append(query.since)
        if query.until is not None:
            conds.append("timestamp <= ?")
            params.append(query.until)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        if query.limit is not None:
            where += " ORDER BY timestamp, id, seq LIMIT ?"
            params.append(max(query.limit, 0))
            return await self._run(_query_limited, where, params)
        return await self._run(_query, where, params)

    async def cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than``; returns how many."""
        total = 0
        while True:  # bounded batches: each is one short write transaction
            n = await self._run(_cleanup, older_than)
            total += n
            if n < CLEANUP_BATCH:
                return total


def _query_limited(
    conn: sqlite3.Connection, where: str, params: list[Any]
) -> builtins.list[TaskEvent]:
    rows = conn.execute(f"SELECT {', '.join(_FIELDS)} FROM events {where}", params).fetchall()
    return [event_from_row(r) for r in rows]
