"""AsyncPostgresScheduleStorage: schedules with an exactly-once ``claim_due``."""

from __future__ import annotations

import builtins
import logging
from typing import Any, ClassVar

from omniq.errors import SerializationError
from omniq.models import Schedule, ScheduleState
from omniq.storage.base import BaseScheduleStorage
from omniq_postgres._component import PostgresComponent

log = logging.getLogger("omniq.postgres")

Encoded = tuple[str, str, float | None, bytes]

_UPSERT = (
    "INSERT INTO schedules (id, state, next_run_at, data) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
    "next_run_at = excluded.next_run_at, data = excluded.data"
)
_DUE = (
    "SELECT id, next_run_at, data FROM schedules WHERE state = 'active' "
    "AND next_run_at <= $1 ORDER BY next_run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
)


class AsyncPostgresScheduleStorage(PostgresComponent, BaseScheduleStorage):
    """Schedule storage; each due time is claimed by exactly one scheduler, across
    processes: due rows are locked ``FOR UPDATE SKIP LOCKED`` and advanced in the same
    transaction (a scheduler that reads a row after the commit sees it advanced)."""

    cross_process: ClassVar[bool] = True

    def _encode(self, schedule: Schedule) -> Encoded:
        data = self.serializer.encode_schedule(schedule)
        return (schedule.id, schedule.state.value, schedule.next_run_at, data)

    def _decode(self, schedule_id: str, data: bytes) -> Schedule:
        try:
            return self.serializer.decode_schedule(bytes(data))
        except SerializationError as e:
            raise SerializationError(
                f"stored schedule {schedule_id} in PostgreSQL schema {self.schema}: {e}"
            ) from e

    async def save(self, schedule: Schedule) -> None:
        """Insert or replace a schedule."""
        row = self._encode(schedule)
        await self._run(lambda c: c.execute(_UPSERT, *row))

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        data = await self._run(
            lambda c: c.fetchval("SELECT data FROM schedules WHERE id = $1", schedule_id)
        )
        return None if data is None else self._decode(schedule_id, data)

    async def update(self, schedule: Schedule) -> bool:
        """Replace an existing schedule; False when it does not exist."""
        sid, state, nxt, data = self._encode(schedule)
        result = await self._run(
            lambda c: c.execute(
                "UPDATE schedules SET state = $2, next_run_at = $3, data = $4 WHERE id = $1",
                sid,
                state,
                nxt,
                data,
            )
        )
        return bool(result == "UPDATE 1")

    async def delete(self, schedule_id: str) -> bool:
        """Delete a schedule; False when it did not exist."""
        result = await self._run(
            lambda c: c.execute("DELETE FROM schedules WHERE id = $1", schedule_id)
        )
        return bool(result == "DELETE 1")

    async def list(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        """All schedules in insertion order, optionally of one state (undecodable ones
        are skipped with a logged error)."""
        if state is None:
            rows = await self._run(lambda c: c.fetch("SELECT id, data FROM schedules ORDER BY seq"))
        else:
            rows = await self._run(
                lambda c: c.fetch(
                    "SELECT id, data FROM schedules WHERE state = $1 ORDER BY seq", state.value
                )
            )
        out: builtins.list[Schedule] = []
        for sid, data in rows:
            try:
                out.append(self._decode(sid, data))
            except SerializationError as e:
                log.error("PostgreSQL schedules: %s", e)
        return out

    async def claim_due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        """Claim schedules due at ``now`` (see :meth:`BaseScheduleStorage.claim_due`)."""
        if limit <= 0:
            return []
        serializer = self.serializer

        async def claim(conn: Any) -> builtins.list[Schedule]:
            claimed: builtins.list[Schedule] = []
            async with conn.transaction():
                updates: builtins.list[tuple[Any, ...]] = []
                for sid, _old, data in await conn.fetch(_DUE, now, limit):
                    try:
                        schedule = serializer.decode_schedule(bytes(data))
                    except SerializationError as e:
                        log.error(
                            "PostgreSQL schedules: schedule %s cannot be decoded (%s); it is "
                            "parked (next_run_at cleared) so the other schedules go on",
                            sid,
                            e,
                        )
                        updates.append((sid, None, "active", data))
                        continue
                    if not schedule.is_due(now):
                        continue
                    nxt = schedule.advanced(now)
                    updates.append(
                        (sid, nxt.next_run_at, nxt.state.value, serializer.encode_schedule(nxt))
                    )
                    claimed.append(schedule)
                if updates:
                    await conn.executemany(
                        "UPDATE schedules SET next_run_at = $2, state = $3, data = $4 "
                        "WHERE id = $1",
                        updates,
                    )
            return claimed

        return await self._run(claim)
