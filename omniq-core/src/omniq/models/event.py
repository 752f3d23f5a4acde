"""The TaskEvent model: one lifecycle event, stored as plain fields (never pickled)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from omniq.models.enums import EventType
from omniq.models.ids import new_id


class TaskEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A lifecycle event of a task or a schedule. ``metadata`` must be JSON-compatible."""

    event_type: EventType
    task_id: str | None = None
    id: str = msgspec.field(default_factory=new_id)
    timestamp: float = msgspec.field(default_factory=time.time)
    queue: str | None = None
    func: str | None = None
    worker_id: str | None = None
    schedule_id: str | None = None
    attempt: int | None = None
    message: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_json(self) -> bytes:
        """Encode as JSON (the storage format of every event backend)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> TaskEvent:
        """Decode an event written by :meth:`to_json`."""
        return msgspec.json.decode(data, type=cls)


class EventQuery(msgspec.Struct, frozen=True):
    """The filters of ``BaseEventStorage.query`` as one value: every given filter must
    match (``types`` empty: nothing matches); results oldest first, at most ``limit``."""

    task_id: str | None = None
    types: frozenset[EventType] | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None

    @classmethod
    def of(
        cls,
        task_id: str | None = None,
        types: Iterable[EventType | str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> EventQuery:
        """Build one from ``query``'s arguments (type names accepted)."""
        wanted = None if types is None else frozenset(EventType(t) for t in types)
        return cls(task_id=task_id, types=wanted, since=since, until=until, limit=limit)

    @property
    def matches_nothing(self) -> bool:
        """True when ``types`` was given empty."""
        return self.types is not None and not self.types

    def matches(self, event: TaskEvent) -> bool:
        """True when ``event`` passes every filter."""
        return (
            (self.task_id is None or event.task_id == self.task_id)
            and (self.types is None or event.event_type in self.types)
            and (self.since is None or event.timestamp >= self.since)
            and (self.until is None or event.timestamp <= self.until)
        )

    def apply(self, events: Iterable[TaskEvent]) -> list[TaskEvent]:
        """The matching events, oldest first, cut at ``limit``."""
        out = [e for e in events if self.matches(e)]
        out.sort(key=lambda e: (e.timestamp, e.id))
        return out if self.limit is None else out[: max(self.limit, 0)]
