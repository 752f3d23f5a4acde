"""OmniQ's conformance suite on the acme backend: all a third-party author has to write."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from omniq.storage.memory import reset_memory_stores
from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
)
from omniq_acme import (
    AcmeQueue,
    AsyncAcmeEventStorage,
    AsyncAcmeQueue,
    AsyncAcmeResultStorage,
    AsyncAcmeScheduleStorage,
)


def _factory(cls: type[Any]) -> Any:
    """A fixture making connected components over one fresh acme:// namespace per test."""

    @pytest.fixture
    async def make(self: Any) -> AsyncIterator[Any]:
        url = f"acme://test-{uuid.uuid4().hex}"
        made: list[Any] = []

        async def build() -> Any:
            component = cls.from_url(url)
            await component.connect()
            made.append(component)
            return component

        yield build
        for component in made:
            await component.close()
        reset_memory_stores()

    return make


class AcmeFixtures:
    make_task_queue = _factory(AsyncAcmeQueue)
    make_result_storage = _factory(AsyncAcmeResultStorage)
    make_event_storage = _factory(AsyncAcmeEventStorage)
    make_schedule_storage = _factory(AsyncAcmeScheduleStorage)


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
