"""AsyncPostgresEventStorage: lifecycle events as plain columns plus JSONB metadata."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.models import EventQuery, TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq.storage.columns import EVENT_COLUMNS, event_from_row, event_row
from omniq_postgres._component import CLEANUP_BATCH, PostgresComponent

_FIELDS = EVENT_COLUMNS
_TYPES = (
    "text", "text", "text", "float8", "text", "text", "text", "text", "int", "text", "text",
)  # fmt: skip
_INSERT_MANY = (
    f"INSERT INTO events ({', '.join(_FIELDS)}) SELECT "
    + ", ".join(f"c{i}::jsonb" if f == "metadata" else f"c{i}" for i, f in enumerate(_FIELDS))
    + " FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
    + ") AS u("
    + ", ".join(f"c{i}" for i in range(len(_FIELDS)))
    + ")"
)

Row = tuple[Any, ...]


class AsyncPostgresEventStorage(PostgresComponent, BaseEventStorage):
    """Event log with indexes by task, type, queue, schedule and time; never pickled."""

    cross_process: ClassVar[bool] = True

    async def log(self, event: TaskEvent) -> None:
        """Append one event."""
        await self.log_many([event])

    async def log_many(self, events: Sequence[TaskEvent]) -> None:
        """Append several events in one statement."""
        rows = [event_row(e) for e in events]
        if not rows:
            return
        cols = [builtins.list(c) for c in zip(*rows, strict=True)]
        await self._run(lambda c: c.execute(_INSERT_MANY, *cols))

    async def select(self, query: EventQuery) -> builtins.list[TaskEvent]:
        """Events matching ``query``, oldest first, filtered and limited in SQL."""
        conds: builtins.list[str] = []
        params: builtins.list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.task_id is not None:
            conds.append(f"task_id = {param(query.task_id)}")
        if query.types is not None:
            conds.append(f"event_type = ANY({param(sorted(t.value for t in query.types))}::text[])")
        if query.since is not None:
            conds.append(f"timestamp >= {param(query.since)}")
        if query.until is not None:
            conds.append(f"timestamp <= {param(query.until)}")
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        sql = (
            f"SELECT {', '.join(_FIELDS[:-1])}, metadata::text FROM events {where} "
            "ORDER BY timestamp, id, seq"
        )
        if query.limit is not None:
            sql += f" LIMIT {param(max(query.limit, 0))}"
        rows = await self._run(lambda c: c.fetch(sql, *params))
        return [event_from_row(r) for r in rows]

    async def cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than`` in bounded batches."""
        total = 0
        while True:
            n = await self._run(
                lambda c: c.fetchval(
                    "WITH d AS (DELETE FROM events WHERE seq IN (SELECT seq FROM events "
                    "WHERE timestamp < $1 LIMIT $2) RETURNING 1) SELECT count(*) FROM d",
                    older_than,
                    CLEANUP_BATCH,
                )
            )
            total += int(n)
            if n < CLEANUP_BATCH:
                return total
