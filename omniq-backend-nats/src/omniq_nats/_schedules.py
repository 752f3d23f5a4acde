"""AsyncNATSScheduleStorage: schedules in the KV bucket ``omniq_schedules``.

Changes are announced (headers only) on ``{schedules_subject}.{schedule_id}``.

``claim_due`` reads every schedule with its revision and stores ``schedule.advanced(now)``
with a revision-checked update (``Nats-Expected-Last-Subject-Sequence``): of several
schedulers that read the same revision exactly one write succeeds, so each due time is
returned to exactly one of them.
"""

from __future__ import annotations

import builtins
from typing import ClassVar

from omniq.models import Schedule, ScheduleState
from omniq.storage.base import BaseScheduleStorage
from omniq_nats._config import encode_token
from omniq_nats._kv import BucketComponent, Entry

__all__ = ["AsyncNATSScheduleStorage"]


class AsyncNATSScheduleStorage(BucketComponent, BaseScheduleStorage):
    """Schedule storage on a NATS KV bucket with compare-and-set claims."""

    cross_process: ClassVar[bool] = True
    item = "schedule"

    def _bucket_spec(self) -> tuple[str, float | None, str]:
        s = self.settings
        return s.schedules_bucket_name, None, s.schedules_subject_prefix

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
        out = await self._decoded(self.serializer.decode_schedule)
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
