"""AsyncFileEventStorage: events as JSON lines, one file per batch."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import ClassVar

import msgspec

from omniq.errors import SerializationError
from omniq.models import EventQuery, TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq_file import _layout as L
from omniq_file._component import FileComponent

_DECODER = msgspec.json.Decoder(TaskEvent)


def _encode(event: TaskEvent) -> bytes:
    try:
        return msgspec.json.encode(event)
    except (TypeError, ValueError) as e:
        raise SerializationError(
            f"event metadata must be JSON-compatible (events are never pickled): {e}"
        ) from e


def _span(name: str) -> tuple[int, int] | None:
    """(first µs, last µs) of an events file name."""
    try:
        first, last, _ = name.split("-", 2)
        return int(first), int(last)
    except ValueError:
        return None


class AsyncFileEventStorage(FileComponent, BaseEventStorage):
    """Event log in ``events/<first µs>-<last µs>-<uuid>.jsonl``: each ``log_many`` writes
    one file of JSON lines (never pickled); the time span in the name lets ``select``
    and ``cleanup`` skip files without reading them."""

    cross_process: ClassVar[bool] = True

    async def log(self, event: TaskEvent) -> None:
        """Append one event."""
        await self.log_many([event])

    async def log_many(self, events: Sequence[TaskEvent]) -> None:
        """Append several events as one file."""
        if not events:
            return
        body = b"\n".join(_encode(e) for e in events) + b"\n"
        stamps = [e.timestamp for e in events]
        name = f"{L.us(min(stamps))}-{L.us(max(stamps))}-{uuid.uuid4().hex}.jsonl"
        await self.run(self.store.write, f"events/{name}", body)

    def _read(self, name: str) -> builtins.list[TaskEvent]:
        data = self.store.read(f"events/{name}")
        out: builtins.list[TaskEvent] = []
        for line in (data or b"").splitlines():
            if line.strip():
                try:
                    out.append(_DECODER.decode(line))
                except msgspec.DecodeError:
                    continue  # a torn or foreign line: skip it
        return out

    async def select(self, query: EventQuery) -> builtins.list[TaskEvent]:
        """Events matching ``query`` (files outside its time window are not read)."""

        def scan() -> builtins.list[TaskEvent]:
            since = None if query.since is None else int(query.since * 1_000_000)
            until = None if query.until is None else int(query.until * 1_000_000) + 1
            found: builtins.list[TaskEvent] = []
            for name in sorted(self.store.list("events")):
                span = _span(name)
                if span is None:
                    continue
                if (since is not None and span[1] < since) or (
                    until is not None and span[0] > until
                ):
                    continue
                found.extend(self._read(name))
            return query.apply(found)

        return await self.run(scan)

    async def cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than``; returns how many."""

        def sweep() -> int:
            limit = int(older_than * 1_000_000)
            n = 0
            for name in self.store.list("events"):
                span = _span(name)
                if span is None or span[0] >= limit:
                    continue
                events = self._read(name)
                keep = [e for e in events if e.timestamp >= older_than]
                new = None
                if keep:
                    stamps = [e.timestamp for e in keep]
                    new = f"{L.us(min(stamps))}-{L.us(max(stamps))}-{uuid.uuid4().hex}.jsonl"
                    self.store.write(f"events/{new}", b"\n".join(_encode(e) for e in keep) + b"\n")
                if self.store.delete(f"events/{name}"):
                    n += len(events) - len(keep)
                elif new is not None:
                    self.store.delete(f"events/{new}")  # another sweep rewrote it first
            return n

        return await self.run(sweep)
