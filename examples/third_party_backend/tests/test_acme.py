"""OmniQ's conformance suite on the acme backend: all a third-party author has to write."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from omniq.storage.memory import reset_memory_stores
from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
    component_factory,
)
from omniq_acme import (
    AcmeQueue,
    AsyncAcmeEventStorage,
    AsyncAcmeQueue,
    AsyncAcmeResultStorage,
    AsyncAcmeScheduleStorage,
)


class AcmeFixtures:
    @pytest.fixture
    def backend_url(self) -> Iterator[str]:
        yield f"acme://test-{uuid.uuid4().hex}"
        reset_memory_stores()

    make_task_queue = component_factory(AsyncAcmeQueue)
    make_result_storage = component_factory(AsyncAcmeResultStorage)
    make_event_storage = component_factory(AsyncAcmeEventStorage)
    make_schedule_storage = component_factory(AsyncAcmeScheduleStorage)


class TestAcmeQueue(TaskQueueConformance, AcmeFixtures):
    pass


class TestAcmeResultStorage(ResultStorageConformance, AcmeFixtures):
    stores_bytes = False  # like memory, acme keeps Python objects


class TestAcmeEventStorage(EventStorageConformance, AcmeFixtures):
    pass


class TestAcmeScheduleStorage(ScheduleStorageConformance, AcmeFixtures):
    pass


def test_acme_url_names_a_shared_store() -> None:
    a = AsyncAcmeQueue.from_url("acme://shared-example")
    b = AsyncAcmeQueue.from_url("acme://shared-example")
    assert a.url == "memory://shared-example"
    assert a._s is b._s
    assert AsyncAcmeQueue.from_url("acme://")._s is not a._s
    reset_memory_stores()


def test_blocking_twin() -> None:
    with AcmeQueue.from_url("acme://") as q:
        assert q.count_sync() == 0
        assert isinstance(q.async_, AsyncAcmeQueue)
