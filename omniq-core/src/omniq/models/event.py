"""The TaskEvent model: one lifecycle event, stored as plain fields (never pickled)."""

from __future__ import annotations

import time
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
