"""Conformance tests for event storage (plain fields, filters, cleanup)."""

from __future__ import annotations

import time

import pytest

from omniq.models import EventType, TaskEvent
from omniq.storage.base import BaseEventStorage
from omniq.testing.base import ConformanceBase, Factory


class EventStorageConformance(ConformanceBase):
    """Every event storage must pass these. Needs the ``make_event_storage`` fixture."""

    @pytest.fixture
    async def event_storage(self, make_event_storage: Factory) -> BaseEventStorage:
        return await make_event_storage()  # type: ignore[no-any-return]

    async def test_log_and_query_by_task(self, event_storage: BaseEventStorage) -> None:
        t0 = time.time()
        e1 = TaskEvent(event_type=EventType.ENQUEUED, task_id="a", queue="q", timestamp=t0)
        e2 = TaskEvent(
            event_type=EventType.EXECUTING, task_id="a", worker_id="w", attempt=1, timestamp=t0 + 1
        )
        e3 = TaskEvent(event_type=EventType.ENQUEUED, task_id="b", timestamp=t0 + 2)
        await event_storage.log(e1)
        await event_storage.log_many([e2, e3])
        got = await event_storage.query(task_id="a")
        assert [e.event_type for e in got] == [EventType.ENQUEUED, EventType.EXECUTING]
        assert got[1].worker_id == "w" and got[1].attempt == 1 and got[0].queue == "q"
        assert len(await event_storage.query()) == 3

    async def test_metadata_round_trip_as_plain_json(self, event_storage: BaseEventStorage) -> None:
        meta = {"trace_id": "abc", "n": 3, "nested": {"ok": True, "list": [1, 2]}}
        await event_storage.log(
            TaskEvent(event_type=EventType.ERROR, task_id="m", message="boom", metadata=meta)
        )
        (got,) = await event_storage.query(task_id="m")
        assert got.metadata == meta and got.message == "boom"

    async def test_filters_types_since_until_limit(self, event_storage: BaseEventStorage) -> None:
        base = time.time() - 100
        types = [EventType.ENQUEUED, EventType.EXECUTING, EventType.COMPLETE, EventType.ERROR]
        await event_storage.log_many(
            [TaskEvent(event_type=types[i % 4], task_id="f", timestamp=base + i) for i in range(20)]
        )
        only = await event_storage.query(types=[EventType.ERROR, EventType.COMPLETE])
        assert len(only) == 10
        assert {e.event_type for e in only} == {EventType.ERROR, EventType.COMPLETE}
        window = await event_storage.query(since=base + 5, until=base + 9)
        assert [round(e.timestamp - base) for e in window] == [5, 6, 7, 8, 9]
        assert len(await event_storage.query(limit=4)) == 4
        ordered = await event_storage.query(task_id="f")
        assert [e.timestamp for e in ordered] == sorted(e.timestamp for e in ordered)

    async def test_schedule_events_without_task(self, event_storage: BaseEventStorage) -> None:
        await event_storage.log(TaskEvent(event_type=EventType.SCHEDULE_PAUSED, schedule_id="s1"))
        got = await event_storage.query(types=[EventType.SCHEDULE_PAUSED])
        assert len(got) == 1 and got[0].schedule_id == "s1" and got[0].task_id is None

    async def test_cleanup_older_than(self, event_storage: BaseEventStorage) -> None:
        now = time.time()
        await event_storage.log_many(
            [
                TaskEvent(event_type=EventType.ENQUEUED, task_id="c", timestamp=now - 1000),
                TaskEvent(event_type=EventType.ENQUEUED, task_id="c", timestamp=now - 500),
                TaskEvent(event_type=EventType.ENQUEUED, task_id="c", timestamp=now),
            ]
        )
        assert await event_storage.cleanup(now - 100) == 2
        assert len(await event_storage.query(task_id="c")) == 1

    async def test_events_visible_to_another_instance(
        self, event_storage: BaseEventStorage, make_event_storage: Factory
    ) -> None:
        reader: BaseEventStorage = await make_event_storage()
        await event_storage.log(TaskEvent(event_type=EventType.ENQUEUED, task_id="x"))
        assert len(await reader.query(task_id="x")) == 1
