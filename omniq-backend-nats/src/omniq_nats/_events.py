"""AsyncNATSEventStorage: events in the JetStream stream ``OMNIQ_EVENTS``.

Subjects ``omniq.events.{type}.{task_id}`` (``_`` for events without a task), limits
retention (``event_ttl`` max age, default 30 days; ``event_max_msgs``, default 10M).
Events are plain JSON (``TaskEvent.to_json``), never pickled. A query reads the matching
subjects through one ephemeral consumer (by task or by type when the filter allows) and
filters the rest client-side; ``cleanup`` deletes old events by sequence.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
from nats.js import api

from omniq.errors import OmniQError
from omniq.models import EventQuery, EventType, TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq_nats._base import NATSComponent
from omniq_nats._cluster import placement, replicas_for
from omniq_nats._config import encode_token
from omniq_nats._connection import Connection, log
from omniq_nats._kv import ensure_stream, publish_many, scan_stream

__all__ = ["AsyncNATSEventStorage"]

NO_TASK = "_"


class AsyncNATSEventStorage(NATSComponent, BaseEventStorage):
    """Event log on a JetStream stream."""

    cross_process: ClassVar[bool] = True

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)

    async def _setup(self, conn: Connection) -> None:
        s = self.settings
        await ensure_stream(
            conn,
            api.StreamConfig(
                name=s.events_stream_name,
                subjects=[f"{s.events_subject_prefix}.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_age=s.event_ttl or None,
                max_msgs=s.event_max_msgs,
                storage=api.StorageType.MEMORY if s.storage == "memory" else api.StorageType.FILE,
                num_replicas=replicas_for(s, conn, results=True),
                placement=placement(s),
                duplicate_window=s.duplicate_window,
                discard=api.DiscardPolicy.OLD,
            ),
            s,
        )

    def _subject(self, event: TaskEvent) -> str:
        task = encode_token(event.task_id) if event.task_id else NO_TASK
        return (
            f"{self.settings.events_subject_prefix}.{encode_token(event.event_type.value)}.{task}"
        )

    async def log(self, event: TaskEvent) -> None:
        """Append one event (acknowledged by the server before returning)."""
        conn = await self._conn()
        await conn.call(
            "logging an event",
            lambda: conn.js.publish(
                self._subject(event), event.to_json(), headers={"Nats-Msg-Id": event.id}
            ),
        )

    async def log_many(self, events: Sequence[TaskEvent]) -> None:
        """Append several events in one pipelined round trip."""
        conn = await self._conn()
        await publish_many(
            conn,
            [(self._subject(e), e.to_json(), {"Nats-Msg-Id": e.id}) for e in events],
            "logging events",
        )

    def _filter_subject(self, task_id: str | None, wanted: frozenset[EventType] | None) -> str:
        base = self.settings.events_subject_prefix
        one_type = encode_token(next(iter(wanted)).value) if wanted and len(wanted) == 1 else "*"
        task = encode_token(task_id) if task_id is not None else "*"
        if one_type == "*" and task == "*":
            return f"{base}.>"
        return f"{base}.{one_type}.{task}"

    async def _scan(self, subject: str) -> builtins.list[tuple[int, TaskEvent]]:
        conn = await self._conn()
        out = []
        for m in await scan_stream(conn, self.settings.events_stream_name, subject):
            try:
                out.append((m.metadata.sequence.stream, TaskEvent.from_json(m.data)))
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                log.warning("skipping undecodable event on %s: %s", m.subject, e)
        return out

    async def select(self, query: EventQuery) -> builtins.list[TaskEvent]:
        """Events matching ``query``, oldest first (the stream read is narrowed by
        subject to the task and types asked for)."""
        found = await self._scan(self._filter_subject(query.task_id, query.types))
        return query.apply(e for _, e in found)

    async def cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than``; returns how many."""
        conn = await self._conn()
        stream = self.settings.events_stream_name
        found = await self._scan(f"{self.settings.events_subject_prefix}.>")
        old = [seq for seq, e in found if e.timestamp < older_than]
        if not old:
            return 0
        if len(old) == len([s for s, _ in found if s <= old[-1]]):
            # the old ones are a prefix of the stream: one purge up to the last of them
            await conn.call(
                "cleaning up events", lambda: conn.js.purge_stream(stream, seq=old[-1] + 1)
            )
            return len(old)
        for i in range(0, len(old), 256):
            await asyncio.gather(
                *(
                    conn.call(
                        "cleaning up events", functools.partial(conn.js.delete_msg, stream, s)
                    )
                    for s in old[i : i + 256]
                )
            )
        return len(old)

    async def drop(self) -> None:
        """Delete the events stream."""
        conn = await self._conn()
        name = self.settings.events_stream_name
        with contextlib.suppress(OmniQError):
            await conn.call(f"deleting {name}", lambda: conn.js.delete_stream(name))
