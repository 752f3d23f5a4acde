"""The conformance suite on the built-in memory backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

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
    component_factory,
)


class MemoryFixtures:
    @pytest.fixture
    def backend_url(self) -> Iterator[str]:
        yield f"memory://test-{uuid.uuid4().hex}"
        reset_memory_stores()

    make_task_queue = component_factory(AsyncMemoryQueue)
    make_result_storage = component_factory(AsyncMemoryResultStorage)
    make_event_storage = component_factory(AsyncMemoryEventStorage)
    make_schedule_storage = component_factory(AsyncMemoryScheduleStorage)


class TestMemoryQueue(TaskQueueConformance, MemoryFixtures):
    pass


class TestMemoryResultStorage(ResultStorageConformance, MemoryFixtures):
    stores_bytes = False


class TestMemoryEventStorage(EventStorageConformance, MemoryFixtures):
    pass


class TestMemoryScheduleStorage(ScheduleStorageConformance, MemoryFixtures):
    pass
