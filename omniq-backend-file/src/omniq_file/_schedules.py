"""AsyncFileScheduleStorage: one file per schedule; due times claimed by exclusive create."""

from __future__ import annotations

import builtins
import time
from typing import ClassVar

from omniq.errors import SerializationError
from omniq.models import Schedule, ScheduleState
from omniq.storage.base import BaseScheduleStorage
from omniq_file._component import FileComponent

#: Claim markers older than this (seconds) are deleted when their schedule advances.
MARKER_KEEP = 3600.0


def _due(t: float) -> str:
    return f"{int(t * 1_000_000):017d}"


class AsyncFileScheduleStorage(FileComponent, BaseScheduleStorage):
    """Schedules as ``schedules/<id>``. ``claim_due`` creates ``fires/<id>/<due>``
    exclusively (``os.link`` on a local disk): the one scheduler that creates it stores
    the advanced schedule and fires that due time; every other one skips it."""

    cross_process: ClassVar[bool] = True

    def _decode(self, data: bytes) -> Schedule | None:
        try:
            return self.serializer.decode_schedule(data)
        except SerializationError:
            return None

    async def save(self, schedule: Schedule) -> None:
        """Insert or replace a schedule."""
        data = self.serializer.encode_schedule(schedule)
        await self.run(self.store.write, f"schedules/{schedule.id}", data)

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        data = await self.run(self.store.read, f"schedules/{schedule_id}")
        return None if data is None else self.serializer.decode_schedule(data)

    async def update(self, schedule: Schedule) -> bool:
        """Replace an existing schedule; False when it does not exist."""
        data = self.serializer.encode_schedule(schedule)
        path = f"schedules/{schedule.id}"

        def update() -> bool:
            if not self.store.exists(path):
                return False
            self.store.write(path, data)
            return True

        return await self.run(update)

    async def delete(self, schedule_id: str) -> bool:
        """Delete a schedule (and its claim markers); False when it did not exist."""

        def delete() -> bool:
            for name in self.store.list(f"fires/{schedule_id}"):
                self.store.delete(f"fires/{schedule_id}/{name}")
            return self.store.delete(f"schedules/{schedule_id}")

        return await self.run(delete)

    def _all(self) -> builtins.list[Schedule]:
        names = sorted(self.store.list("schedules"))
        blobs = self.store.map(self.store.read, [f"schedules/{n}" for n in names])
        out = []
        for data in blobs:
            s = None if data is None else self._decode(data)
            if s is not None:
                out.append(s)
        return out

    async def list(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        """All schedules, optionally of one state (undecodable files are skipped)."""
        return [s for s in await self.run(self._all) if state is None or s.state is state]

    async def claim_due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        """Claim schedules due at ``now`` (see :meth:`BaseScheduleStorage.claim_due`)."""

        def claim() -> builtins.list[Schedule]:
            due = [s for s in self._all() if s.is_due(now)]
            due.sort(key=lambda s: s.next_run_at or 0.0)
            return [s for s in self.store.map(fire, due[:limit]) if s is not None]

        def fire(s: Schedule) -> Schedule | None:
            assert s.next_run_at is not None
            marker = f"fires/{s.id}/{_due(s.next_run_at)}"
            if not self.store.create(marker, repr(time.time()).encode()):
                return None  # another scheduler fired this due time
            new = self.serializer.encode_schedule(s.advanced(now))
            self.store.write(f"schedules/{s.id}", new)
            if int(s.next_run_at) % 64 == 0:  # now and then: drop old markers
                self._forget_old(s.id, s.next_run_at)
            return s

        return await self.run(claim)

    def _forget_old(self, schedule_id: str, due: float) -> None:
        keep = _due(due - MARKER_KEEP)
        for name in self.store.list(f"fires/{schedule_id}"):
            if name < keep:
                self.store.delete(f"fires/{schedule_id}/{name}")
