"""AsyncSQLiteScheduleStorage: schedules with an exactly-once ``claim_due``."""

from __future__ import annotations

import builtins
import logging
import sqlite3
from typing import ClassVar

from omniq.errors import SerializationError
from omniq.models import Schedule, ScheduleState
from omniq.serialization.manager import SerializationManager
from omniq.storage.base import BaseScheduleStorage
from omniq_sqlite._component import SQLiteComponent
from omniq_sqlite._database import begin_immediate

log = logging.getLogger("omniq.sqlite")

_UPSERT = (
    "INSERT INTO schedules (id, state, next_run_at, data) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
    "next_run_at = excluded.next_run_at, data = excluded.data"
)

Encoded = tuple[str, str, float | None, bytes]


def _save(conn: sqlite3.Connection, row: Encoded) -> None:
    conn.execute(_UPSERT, row)


def _update(conn: sqlite3.Connection, row: Encoded) -> bool:
    cur = conn.execute(
        "UPDATE schedules SET state = ?, next_run_at = ?, data = ? WHERE id = ?",
        (row[1], row[2], row[3], row[0]),
    )
    return cur.rowcount == 1


def _get(conn: sqlite3.Connection, schedule_id: str) -> bytes | None:
    row = conn.execute("SELECT data FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
    return None if row is None else bytes(row[0])


def _list(conn: sqlite3.Connection, state: str | None) -> builtins.list[tuple[str, bytes]]:
    if state is None:
        rows = conn.execute("SELECT id, data FROM schedules ORDER BY rowid")
    else:
        rows = conn.execute(
            "SELECT id, data FROM schedules WHERE state = ? ORDER BY rowid", (state,)
        )
    return [(r[0], bytes(r[1])) for r in rows]


def _delete(conn: sqlite3.Connection, schedule_id: str) -> bool:
    return conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1


def _claim_due(
    conn: sqlite3.Connection, serializer: SerializationManager, now: float, limit: int
) -> builtins.list[Schedule]:
    """Advance each due schedule by compare-and-set on ``next_run_at``; return the
    schedules as they were before. Nothing is due: no write lock is taken."""
    due_sql = (
        "SELECT id, next_run_at, data FROM schedules WHERE state = 'active' "
        "AND next_run_at <= ? ORDER BY next_run_at, rowid LIMIT ?"
    )
    if conn.execute(due_sql, (now, 1)).fetchone() is None:
        return []
    begin_immediate(conn)
    claimed: builtins.list[Schedule] = []
    for sid, old_next, data in conn.execute(due_sql, (now, limit)).fetchall():
        try:
            schedule = serializer.decode_schedule(data)
        except SerializationError as e:
            log.error(
                "SQLite schedules: schedule %s cannot be decoded (%s); it is parked "
                "(next_run_at cleared) so the other schedules go on",
                sid,
                e,
            )
            conn.execute("UPDATE schedules SET next_run_at = NULL WHERE id = ?", (sid,))
            continue
        if not schedule.is_due(now):
            continue
        nxt = schedule.advanced(now)
        cur = conn.execute(
            "UPDATE schedules SET data = ?, next_run_at = ?, state = ? "
            "WHERE id = ? AND next_run_at IS ?",
            (serializer.encode_schedule(nxt), nxt.next_run_at, nxt.state.value, sid, old_next),
        )
        if cur.rowcount == 1:
            claimed.append(schedule)
    return claimed


class AsyncSQLiteScheduleStorage(SQLiteComponent, BaseScheduleStorage):
    """Schedule storage; each due time is claimed by exactly one scheduler, across
    processes (``BEGIN IMMEDIATE`` plus a compare-and-set on ``next_run_at``)."""

    cross_process: ClassVar[bool] = True

    def _encode(self, schedule: Schedule) -> Encoded:
        data = self.serializer.encode_schedule(schedule)
        return (schedule.id, schedule.state.value, schedule.next_run_at, data)

    def _decode(self, schedule_id: str, data: bytes) -> Schedule:
        try:
            return self.serializer.decode_schedule(data)
        except SerializationError as e:
            raise SerializationError(f"stored schedule {schedule_id} in {self.path}: {e}") from e

    async def save(self, schedule: Schedule) -> None:
        """Insert or replace a schedule."""
        await self._run(_save, self._encode(schedule))

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        data = await self._run(_get, schedule_id)
        return None if data is None else self._decode(schedule_id, data)

    async def update(self, schedule: Schedule) -> bool:
        """Replace an existing schedule; False when it does not exist."""
        return await self._run(_update, self._encode(schedule))

    async def delete(self, schedule_id: str) -> bool:
        """Delete a schedule; False when it did not exist."""
        return await self._run(_delete, schedule_id)

    async def list(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        """All schedules in insertion order, optionally of one state (undecodable ones
        are skipped with a logged error)."""
        out: builtins.list[Schedule] = []
        for sid, data in await self._run(_list, None if state is None else state.value):
            try:
                out.append(self._decode(sid, data))
            except SerializationError as e:
                log.error("SQLite schedules: %s", e)
        return out

    async def claim_due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        """Claim schedules due at ``now`` (see :meth:`BaseScheduleStorage.claim_due`)."""
        if limit <= 0:
            return []
        return await self._run(_claim_due, self.serializer, now, limit)
