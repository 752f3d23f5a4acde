"""AsyncRedisScheduleStorage: schedules in a hash, due times in a sorted set."""

from __future__ import annotations

import builtins
from typing import Any, ClassVar, cast

from omniq.models import Schedule, ScheduleState
from omniq.storage.base import BaseScheduleStorage
from omniq_redis import _scripts as lua
from omniq_redis._component import RedisComponent


def _due_score(s: Schedule) -> str:
    if s.state is not ScheduleState.ACTIVE or s.next_run_at is None:
        return ""
    return repr(s.next_run_at)


class AsyncRedisScheduleStorage(RedisComponent, BaseScheduleStorage):
    """Schedules in ``{prefix}:sched`` with ``{prefix}:sched:due`` holding the next due
    time of each active one. ``claim_due`` advances a schedule with a compare-and-set
    script on its stored bytes, so each due time goes to exactly one scheduler."""

    cross_process: ClassVar[bool] = True

    async def _put(self, s: Schedule, mode: str, expected: bytes = b"") -> bool:
        script = await self.script("schedule_put", lua.SCHEDULE_PUT)
        data = self.serializer.encode_schedule(s)
        args: list[Any] = [self.p, s.id, data, _due_score(s), mode, expected]
        return bool(await script(keys=[f"{self.p}sched"], args=args))

    async def save(self, schedule: Schedule) -> None:
        """Insert or replace a schedule."""
        await self._put(schedule, "save")

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        data = await (await self.redis()).hget(f"{self.p}sched", schedule_id)
        return None if data is None else self.serializer.decode_schedule(cast(bytes, data))

    async def update(self, schedule: Schedule) -> bool:
        """Replace an existing schedule; False when it does not exist."""
        return await self._put(schedule, "update")

    async def delete(self, schedule_id: str) -> bool:
        """Delete a schedule; False when it did not exist."""
        r = await self.redis()
        async with r.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{self.p}sched", schedule_id)
            pipe.zrem(f"{self.p}sched:due", schedule_id)
            n, _ = await pipe.execute()
        return bool(n)

    async def list(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        """All schedules, optionally of one state."""
        rows = await (await self.redis()).hvals(f"{self.p}sched")
        out = [self.serializer.decode_schedule(cast(bytes, d)) for d in rows]
        return [s for s in out if state is None or s.state is state]

    async def claim_due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        """Claim schedules due at ``now`` (see :meth:`BaseScheduleStorage.claim_due`)."""
        r = await self.redis()
        ids = await r.zrangebyscore(f"{self.p}sched:due", "-inf", now, start=0, num=limit)
        if not ids:
            return []
        blobs: builtins.list[Any] = await r.hmget(f"{self.p}sched", cast(builtins.list[Any], ids))
        candidates: builtins.list[tuple[Schedule, bytes, Schedule]] = []
        for blob in blobs:
            if blob is None:
                continue
            s = self.serializer.decode_schedule(blob)
            if s.is_due(now):
                candidates.append((s, blob, s.advanced(now)))
        if not candidates:
            return []
        script = await self.script("schedule_put", lua.SCHEDULE_PUT)
        async with r.pipeline(transaction=False) as pipe:
            for _, blob, new in candidates:
                data = self.serializer.encode_schedule(new)
                await script(
                    keys=[f"{self.p}sched"],
                    args=[self.p, new.id, data, _due_score(new), "cas", blob],
                    client=pipe,
                )
            won = await pipe.execute()
        return [s for (s, _, _), ok in zip(candidates, won, strict=True) if ok]
