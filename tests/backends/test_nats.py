"""The conformance suite on the NATS JetStream backend (real server on 127.0.0.1:4222).

Each test gets its own name prefix, so its streams, buckets and subjects are its own;
they are deleted at teardown. Without the server the tests skip (fail with
OMNIQ_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
)
from tests.backends import test_nats_support as support


def _factory(class_name: str) -> Any:
    @pytest.fixture
    async def make(self: Any, nats_prefix: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        import omniq_nats

        cls = getattr(omniq_nats, class_name)
        made: list[Any] = []

        async def build() -> Any:
            # each instance has its own connection, as separate workers would
            component = cls(support.URL, name_prefix=nats_prefix, shared=False)
            await component.connect()
            made.append(component)
            return component

        yield build
        for component in made:
            await component.close()

    return make


class NATSFixtures:
    @pytest.fixture
    async def nats_prefix(self) -> AsyncIterator[str]:
        support.require_nats()
        prefix = support.new_prefix()
        yield prefix
        await support.drop_namespace(prefix)

    make_task_queue = _factory("AsyncNATSQueue")
    make_result_storage = _factory("AsyncNATSResultStorage")
    make_event_storage = _factory("AsyncNATSEventStorage")
    make_schedule_storage = _factory("AsyncNATSScheduleStorage")

    @pytest.fixture
    def process_spec(self, nats_prefix: str) -> dict[str, Any]:
        return {
            kind: {
                "class": f"omniq_nats:{cls}",
                "url": support.URL,
                "options": {"name_prefix": nats_prefix},
            }
            for kind, cls in (
                ("task_queue", "AsyncNATSQueue"),
                ("result_storage", "AsyncNATSResultStorage"),
                ("event_storage", "AsyncNATSEventStorage"),
                ("schedule_storage", "AsyncNATSScheduleStorage"),
            )
        }

    @pytest.fixture
    def corrupt_task(self) -> Callable[[Any, str], Awaitable[None]]:
        async def corrupt(task_queue: Any, task_id: str) -> None:
            from omniq_nats._claim import task_key

            state = await task_queue._state()
            await state.bucket.put(task_key(task_id), b"\x00not a task record\xff")

        return corrupt


class TestNATSQueue(TaskQueueConformance, NATSFixtures):
    pass


class TestNATSResultStorage(ResultStorageConformance, NATSFixtures):
    pass


class TestNATSEventStorage(EventStorageConformance, NATSFixtures):
    pass


class TestNATSScheduleStorage(ScheduleStorageConformance, NATSFixtures):
    pass
