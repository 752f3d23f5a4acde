"""The conformance suite on the Redis backend (real server on 127.0.0.1:6379).

Each test gets its own key prefix; its keys are deleted at teardown. Without the server
the tests skip (fail with OMNIQ_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
)
from tests.backends import test_redis_support as support

_CLASSES = (
    ("task_queue", "AsyncRedisQueue"),
    ("result_storage", "AsyncRedisResultStorage"),
    ("event_storage", "AsyncRedisEventStorage"),
    ("schedule_storage", "AsyncRedisScheduleStorage"),
)


def _factory(class_name: str) -> Any:
    @pytest.fixture
    async def make(self: Any, redis_prefix: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        import omniq_redis

        cls = getattr(omniq_redis, class_name)
        made: list[Any] = []

        async def build() -> Any:
            # each instance has its own client (pool), as separate workers would
            component = cls.from_url(support.URL, prefix=redis_prefix)
            await component.connect()
            made.append(component)
            return component

        yield build
        for component in made:
            await component.close()

    return make


class RedisFixtures:
    """Fixture contract of omniq.testing: one fresh prefix per test."""

    @pytest.fixture
    def redis_prefix(self) -> Iterator[str]:
        support.require_redis()
        prefix = support.new_prefix()
        yield prefix
        support.drop_prefix(prefix)

    make_task_queue = _factory("AsyncRedisQueue")
    make_result_storage = _factory("AsyncRedisResultStorage")
    make_event_storage = _factory("AsyncRedisEventStorage")
    make_schedule_storage = _factory("AsyncRedisScheduleStorage")

    @pytest.fixture
    def process_spec(self, redis_prefix: str) -> dict[str, Any]:
        return {
            kind: {"class": f"omniq_redis:{cls}", "url": support.URL,
                   "options": {"prefix": redis_prefix}}
            for kind, cls in _CLASSES
        }  # fmt: skip

    @pytest.fixture
    def corrupt_task(self) -> Callable[[Any, str], Awaitable[None]]:
        async def corrupt(task_queue: Any, task_id: str) -> None:
            r = await task_queue.redis()
            await r.hset(f"{task_queue.p}t:{task_id}", "d", b"\x01\xc1 garbage, not msgpack")

        return corrupt


class TestRedisQueue(RedisFixtures, TaskQueueConformance):
    pass


class TestRedisResultStorage(RedisFixtures, ResultStorageConformance):
    pass


class TestRedisEventStorage(RedisFixtures, EventStorageConformance):
    pass


class TestRedisScheduleStorage(RedisFixtures, ScheduleStorageConformance):
    pass
