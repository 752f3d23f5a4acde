"""AsyncRedisEventStorage: events as plain fields in one capped stream."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from omniq.errors import SerializationError
from omniq.models import EventQuery, TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq_redis._component import RedisComponent

#: Events kept in the stream (``XADD ... MAXLEN ~``): the oldest go first.
DEFAULT_MAXLEN = 100_000
_READ = 1000


def _encode(event: TaskEvent) -> bytes:
    try:
        return msgspec.json.encode(event)
    except (TypeError, ValueError) as e:
        raise SerializationError(
            f"event metadata must be JSON-compatible (events are never pickled): {e}"
        ) from e


class AsyncRedisEventStorage(RedisComponent, BaseEventStorage):
    """Event log in the stream ``{prefix}:events``, capped near ``events_maxlen``
    entries. Each entry has the task id, type and timestamp as fields beside the event
    as JSON (never pickled), so queries filter before decoding."""

    cross_process: ClassVar[bool] = True

    def __init__(
        self, url: str | None = None, *, events_maxlen: int | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        if events_maxlen is None:
            events_maxlen = int(self.url_options.get("events_maxlen", DEFAULT_MAXLEN))
        self.events_maxlen = events_maxlen

    @property
    def stream(self) -> str:
        """The stream's key."""
        return f"{self.p}events"

    def _fields(self, event: TaskEvent) -> dict[Any, Any]:
        return {
            "t": event.task_id or "",
            "y": event.event_type.value,
            "ts": repr(event.timestamp),
            "j": _encode(event),
        }

    async def log(self, event: TaskEvent) -> None:
        """Append one event."""
        await self.log_many([event])

    async def log_many(self, events: Sequence[TaskEvent]) -> None:
        """Append several events in one round trip."""
        rows = [self._fields(e) for e in events]
        if not rows:
            return
        r = await self.redis()
        async with r.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.xadd(self.stream, row, maxlen=self.events_maxlen, approximate=True)
            await pipe.execute()

    async def _scan(self) -> Any:
        r = await self.redis()
        start = "-"
        while True:
            batch = await r.xrange(self.stream, min=start, max="+", count=_READ)
            if not batch:
                return
            for entry in batch:
                yield entry
            if len(batch) < _READ:
                return
            last = batch[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))

    async def select(self, query: EventQuery) -> builtins.list[TaskEvent]:
        """Events matching ``query``: the stream is read in batches, entries are filtered
        on their task, type and time fields, and only matches are decoded."""
        task = None if query.task_id is None else query.task_id.encode()
        types = None if query.types is None else {t.value.encode() for t in query.types}
        found: builtins.list[TaskEvent] = []
        async for _, f in self._scan():
            if task is not None and f.get(b"t") != task:
                continue
            if types is not None and f.get(b"y") not in types:
                continue
            ts = float(f.get(b"ts", 0))
            if (query.since is not None and ts < query.since) or (
                query.until is not None and ts > query.until
            ):
                continue
            found.append(msgspec.json.decode(f[b"j"], type=TaskEvent))
        return query.apply(found)

    async def cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than`` (XDEL in bounded batches)."""
        r = await self.redis()
        doomed: builtins.list[bytes] = []
        total = 0
        async for eid, f in self._scan():
            if float(f.get(b"ts", 0)) < older_than:
                doomed.append(eid)
                if len(doomed) >= _READ:
                    total += int(await r.xdel(self.stream, *doomed))
                    doomed = []
        if doomed:
            total += int(await r.xdel(self.stream, *doomed))
        return total
