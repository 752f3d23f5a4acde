"""The conformance suite on the built-in memory backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from omniq.storage.memory import (
    AsyncMemoryEventStorage,
    AsyncMemoryQueue,
    AsyncMemoryResultStorage,
    AsyncMemoryScheduleStorage,
    reset_memory_stores,
)
from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
)


def _factory(cls: type[Any]) -> Any:
    @pytest.fixture
    async def make(self: Any) -> AsyncIterator[Any]:
        url = f"memory://test-{uuid.uuid4().hex}"
        made: list[Any] = []

        async def build() -> Any:
            component = cls(url)
            await component.connect()
            made.append(component)
            return component

        yield build
        for component in made:
            await component.close()
        reset_memory_stores()

    return make


class MemoryFixtures:
    make_task_queue = _factory(AsyncMemoryQueue)
    make_result_storage = _factory(AsyncMemoryResultStorage)
    make_event_storage = _factory(AsyncMemoryEventStorage)
    make_schedule_storage = _factory(AsyncMemoryScheduleStorage)


class TestMemoryQueue(TaskQueueConformance, MemoryFixtures):
    pass


class TestMemoryResultStorage(ResultStorageConformance, MemoryFixtures):
    stores_bytes = False


class TestMemoryEventStorage(EventStorageConformance, MemoryFixtures):
    pass


class TestMemoryScheduleStorage(ScheduleStorageConformance, MemoryFixtures):
    pass
