"""AsyncNATSScheduleStorage: schedules in the KV bucket ``omniq_schedules``.

Changes are announced (headers only) on ``{schedules_subject}.{schedule_id}``.

``claim_due`` reads every schedule with its revision and stores ``schedule.advanced(now)``
with a revision-checked update (``Nats-Expected-Last-Subject-Sequence``): of several
schedulers that read the same revision exactly one write succeeds, so each due time is
returned to exactly one of them.
"""

from __future__ import annotations

import builtins
import contextlib
from typing import Any, ClassVar

from omniq.errors import OmniQError, SerializationError
from omniq.models import Schedule, ScheduleState
from omniq.storage.base import BaseScheduleStorage
from omniq_nats._base import NATSComponent
from omniq_nats._config import encode_token
from omniq_nats._connection import Connection, log
from omniq_nats._kv import Bucket, Entry

__all__ = ["AsyncNATSScheduleStorage"]


class AsyncNATSScheduleStorage(NATSComponent, BaseScheduleStorage):
    """Schedule storage on a NATS KV bucket with compare-and-set claims."""

    cross_process: ClassVar[bool] = True

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._buckets: dict[int, Bucket] = {}

    async def _setup(self, conn: Connection) -> None:
        s = self.settings
        self._buckets[id(conn.loop)] = await Bucket.ensure(
            conn, s.schedules_bucket_name, announce=s.schedules_subject_prefix
        )

    async def _teardown(self, conn: Connection) -> None:
        self._buckets.pop(id(conn.loop), None)

    async def _bucket(self) -> Bucket:
        conn = await self._conn()
        return self._buckets[id(conn.loop)]

    async def save(self, schedule: Schedule) -> None:
        """Insert or replace a schedule."""
        bucket = await self._bucket()
        await bucket.put(encode_token(schedule.id), self.serializer.encode_schedule(schedule))

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        bucket = await self._bucket()
        entry = await bucket.get(encode_token(schedule_id))
        if entry is None or entry.value is None:
            return None
        return self.serializer.decode_schedule(entry.value)

    async def update(self, schedule: Schedule) -> bool:
        """Replace an existing schedule; False when it does not exist."""
        bucket = await self._bucket()
        key = encode_token(schedule.id)
        data = self.serializer.encode_schedule(schedule)
        for _ in range(50):
            entry = await bucket.get(key)
            if entry is None or entry.value is None:
                return False
            if await bucket.cas(key, data, entry.revision) is not None:
                return True
        return False  # pragma: no cover - endless contention

    async def delete(self, schedule_id: str) -> bool:
        """Delete a schedule; False when it did not exist."""
        bucket = await self._bucket()
        key = encode_token(schedule_id)
        entry = await bucket.get(key)
        if entry is None or entry.value is None:
            return False
        await bucket.purge_key(key)
        return True

    async def _all(self) -> builtins.list[tuple[Entry, Schedule]]:
        bucket = await self._bucket()
        out = []
        for e in await bucket.scan(">"):
            if not e.value:
                continue
            try:
                out.append((e, self.serializer.decode_schedule(e.value)))
            except SerializationError as err:
                log.warning("skipping undecodable schedule %s: %s", e.key, err)
        out.sort(key=lambda x: (x[1].created_at, x[1].id))
        return out

    async def list(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        """All schedules, optionally of one state."""
        return [s for _, s in await self._all() if state is None or s.state is state]

    async def claim_due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        """Claim due schedules: store each one's ``advanced(now)`` by revision; return the
        versions as they were before (their ``fires(now)`` are the runs to enqueue)."""
        bucket = await self._bucket()
        due = [(e, s) for e, s in await self._all() if s.is_due(now)]
        due.sort(key=lambda x: x[1].next_run_at or 0)
        due = due[:limit]
        revs = await bucket.cas_many(
            [(e.key, self.serializer.encode_schedule(s.advanced(now)), e.revision) for e, s in due]
        )
        return [s for (_, s), rev in zip(due, revs, strict=True) if rev is not None]

    async def drop(self) -> None:
        """Delete the schedules bucket."""
        bucket = await self._bucket()
        with contextlib.suppress(OmniQError):
            await bucket.conn.call(
                f"deleting {bucket.stream}", lambda: bucket.conn.js.delete_stream(bucket.stream)
            )
