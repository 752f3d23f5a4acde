"""The memory backend's own behaviour (the shared guarantees are in tests/backends)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from omniq.errors import ConfigurationError
from omniq.models import (
    EventType,
    Schedule,
    ScheduleState,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
)
from omniq.plugins import create_component
from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseTaskQueue,
)
from omniq.storage.memory import (
    AsyncMemoryEventStorage,
    AsyncMemoryQueue,
    AsyncMemoryResultStorage,
    AsyncMemoryScheduleStorage,
    MemoryBackend,
    MemoryEventStorage,
    MemoryQueue,
    MemoryResultStorage,
    MemoryScheduleStorage,
    reset_memory_stores,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_stores() -> Iterator[None]:
    reset_memory_stores()
    yield
    reset_memory_stores()


# --- URLs and stores --------------------------------------------------------------------------


async def test_named_stores_are_shared_private_ones_are_not() -> None:
    a, b = AsyncMemoryQueue("memory://shared"), AsyncMemoryQueue("memory://shared")
    await a.enqueue(Task(func="m:f"))
    assert await b.count() == 1
    assert await AsyncMemoryQueue("memory://other").count() == 0
    assert await AsyncMemoryQueue("memory://").count() == 0
    assert await AsyncMemoryQueue().count() == 0
    # memory://a/b and memory://a/b/ name the same store
    await AsyncMemoryQueue("memory://x/y").enqueue(Task(func="m:f"))
    assert await AsyncMemoryQueue("memory://x/y/").count() == 1


async def test_components_of_one_store_are_separate_kinds() -> None:
    q = AsyncMemoryQueue("memory://s")
    r = AsyncMemoryResultStorage("memory://s")
    await q.enqueue(Task(func="m:f"))
    assert await r.list() == []


async def test_reset_memory_stores_forgets_named_stores() -> None:
    await AsyncMemoryQueue("memory://gone").enqueue(Task(func="m:f"))
    reset_memory_stores()
    assert await AsyncMemoryQueue("memory://gone").count() == 0


@pytest.mark.parametrize(
    "cls",
    [
        AsyncMemoryQueue,
        AsyncMemoryResultStorage,
        AsyncMemoryEventStorage,
        AsyncMemoryScheduleStorage,
    ],
)
def test_wrong_scheme_is_refused(cls: type) -> None:
    with pytest.raises(ConfigurationError, match=r"must start with memory://"):
        cls("redis://localhost:6379/0")


def test_from_url_and_plugin_resolution() -> None:
    q = AsyncMemoryQueue.from_url("memory://via-url", default_lease=12.0)
    assert q.url == "memory://via-url" and q.default_lease == 12.0
    assert repr(q) == "AsyncMemoryQueue('memory://via-url')"
    resolved = create_component("task_queue", "memory")
    assert isinstance(resolved, AsyncMemoryQueue) and resolved.url == "memory://"
    for kind, base in (
        ("task_queue", BaseTaskQueue),
        ("result_storage", BaseResultStorage),
        ("event_storage", BaseEventStorage),
        ("schedule_storage", BaseScheduleStorage),
    ):
        assert isinstance(create_component(kind, url="memory://k"), base)


def test_capability_flags() -> None:
    assert AsyncMemoryQueue.blocking_dequeue and not AsyncMemoryQueue.cross_process
    assert AsyncMemoryResultStorage.blocking_wait
    assert AsyncMemoryQueue.supports_priority and AsyncMemoryQueue.supports_dependencies


async def test_bundle_shares_one_store() -> None:
    b = MemoryBackend()
    assert b.url.startswith("memory://anon-")
    await b.task_queue.enqueue(Task(func="m:f"))
    assert await AsyncMemoryQueue(b.url).count() == 1
    assert MemoryBackend().url != b.url
    named = MemoryBackend("memory://bundle")
    assert named.schedule_storage.url == "memory://bundle"


# --- isolation: stored objects are copies --------------------------------------------------------


async def test_stored_task_is_not_the_callers_object() -> None:
    q = AsyncMemoryQueue()
    t = Task(func="m:f", kwargs={"k": 1}, metadata={"m": 1}, depends_on=[])
    await q.enqueue(t)
    t.kwargs["k"] = 2
    t.metadata["m"] = 2
    t.queue = "elsewhere"
    stored = await q.get(t.id)
    assert stored is not None
    assert stored.kwargs == {"k": 1} and stored.metadata == {"m": 1}
    assert stored.queue == "default"


async def test_returned_tasks_are_copies() -> None:
    q = AsyncMemoryQueue()
    t = Task(func="m:f", kwargs={"k": 1})
    await q.enqueue(t)
    got = await q.get(t.id)
    assert got is not None
    got.kwargs["k"] = 99
    got.status = TaskStatus.SUCCESS
    claimed = await q.dequeue(["default"], worker_id="w")
    assert claimed is not None and claimed.kwargs == {"k": 1}
    claimed.metadata["x"] = 1
    listed = await q.list()
    assert listed[0].metadata == {} and listed[0].status is TaskStatus.RUNNING


async def test_enqueue_keeps_no_caller_claim_state() -> None:
    q = AsyncMemoryQueue()
    t = Task(func="m:f", attempt=5, worker_id="ghost", lease_until=time.time() + 100)
    assert await q.enqueue(t) is TaskStatus.PENDING
    c = await q.dequeue(["default"], worker_id="w")
    assert c is not None and c.attempt == 1 and c.worker_id == "w"


# --- behaviour specific to memory ----------------------------------------------------------------


async def test_cleanup_expired_with_explicit_now() -> None:
    q = AsyncMemoryQueue()
    now = time.time()
    soon = Task(func="m:f", expires_at=now + 50)
    later = Task(func="m:f", expires_at=now + 500)
    await q.enqueue_many([soon, later])
    assert await q.cleanup_expired(now) == []
    assert await q.cleanup_expired(now + 100) == [soon.id]
    stored = await q.get(soon.id)
    assert stored is not None and stored.status is TaskStatus.EXPIRED
    assert "TTL" in (stored.error or "")


async def test_result_ttl_and_cleanup() -> None:
    r = AsyncMemoryResultStorage()
    now = time.time()
    await r.set(TaskResult(task_id="old", status=TaskStatus.SUCCESS, expires_at=now - 1))
    await r.set(TaskResult(task_id="new", status=TaskStatus.FAILED, expires_at=now + 100))
    assert await r.get("old") is None
    assert [x.task_id for x in await r.list()] == ["new"]
    assert [x.task_id for x in await r.list(TaskStatus.SUCCESS)] == []
    assert await r.cleanup_expired(now) == 1
    assert await r.cleanup_expired(now + 1000) == 1
    assert await r.list() == []


async def test_result_wait_woken_from_another_thread_and_loop() -> None:
    r = AsyncMemoryResultStorage("memory://results-x")
    started = threading.Event()

    def producer() -> None:
        started.wait()

        async def put() -> None:
            other = AsyncMemoryResultStorage("memory://results-x")
            await other.set(TaskResult(task_id="t", status=TaskStatus.SUCCESS, result=7))

        asyncio.run(put())

    thread = threading.Thread(target=producer)
    thread.start()
    started.set()
    got = await r.wait("t", timeout=30)
    thread.join()
    assert got is not None and got.result == 7
    assert await r.wait("never", timeout=0.05) is None


async def test_events_filters() -> None:
    e = AsyncMemoryEventStorage()
    base = 1_000_000.0
    await e.log_many(
        [
            TaskEvent(event_type=EventType.ENQUEUED, task_id="a", timestamp=base),
            TaskEvent(event_type=EventType.EXECUTING, task_id="a", timestamp=base + 1),
            TaskEvent(event_type=EventType.ENQUEUED, task_id="b", timestamp=base + 2),
        ]
    )
    await e.log(TaskEvent(event_type=EventType.COMPLETE, task_id="a", timestamp=base + 3))
    assert [x.event_type for x in await e.query(task_id="a")] == [
        EventType.ENQUEUED,
        EventType.EXECUTING,
        EventType.COMPLETE,
    ]
    assert [x.task_id for x in await e.query(types=[EventType.ENQUEUED])] == ["a", "b"]
    assert len(await e.query(since=base + 1, until=base + 2)) == 2
    assert len(await e.query(limit=1)) == 1
    assert await e.cleanup(base + 2) == 2
    assert len(await e.query()) == 2


async def test_schedule_list_and_claim_order() -> None:
    s = AsyncMemoryScheduleStorage()
    now = time.time()
    late = Schedule(func="m:f", at=now - 1)
    early = Schedule(func="m:f", at=now - 100)
    paused = Schedule(func="m:f", at=now - 50).paused()
    for x in (late, early, paused):
        await s.save(x)
    assert {x.id for x in await s.list(ScheduleState.ACTIVE)} == {late.id, early.id}
    assert [x.id for x in await s.claim_due(now, limit=1)] == [early.id]
    assert [x.id for x in await s.claim_due(now)] == [late.id]
    assert await s.claim_due(now) == []


async def test_purge_one_queue_leaves_others_claimable() -> None:
    q = AsyncMemoryQueue()
    await q.enqueue_many([Task(func="m:f", queue="a"), Task(func="m:f", queue="b")])
    assert await q.purge("a") == 1
    assert await q.dequeue(["a"], worker_id="w") is None
    assert await q.dequeue(["b"], worker_id="w") is not None


async def test_waiting_task_on_unknown_dependency_stays_waiting() -> None:
    q = AsyncMemoryQueue()
    t = Task(func="m:f", depends_on=["not-enqueued-yet"])
    assert await q.enqueue(t) is TaskStatus.WAITING
    assert await q.dequeue(["default"], worker_id="w") is None


# --- blocking twins -------------------------------------------------------------------------------


def test_sync_twins_of_all_four() -> None:
    with (
        MemoryQueue("memory://twins") as q,
        MemoryResultStorage("memory://twins") as r,
        MemoryEventStorage("memory://twins") as e,
        MemoryScheduleStorage("memory://twins") as s,
    ):
        t = Task(func="m:f")
        assert q.enqueue_sync(t) is TaskStatus.PENDING
        c = q.dequeue_sync(["default"], worker_id="w")
        assert c is not None and q.heartbeat_sync(c, 10) and q.complete_sync(c)
        r.set_sync(TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=[1]))
        res = r.wait_sync(t.id, timeout=5)
        assert res is not None and res.result == [1]
        e.log_sync(TaskEvent(event_type=EventType.COMPLETE, task_id=t.id))
        assert len(e.query_sync(task_id=t.id)) == 1
        sched = Schedule(func="m:f", interval=60)
        s.save_sync(sched)
        got = s.get_sync(sched.id)
        assert got is not None and got.id == sched.id
        assert q.supports_priority and q.url == "memory://twins"  # read through


def test_sync_from_url_wraps_async_class() -> None:
    q = MemoryQueue.from_url("memory://wrapped")
    assert isinstance(q, MemoryQueue) and isinstance(q.async_, AsyncMemoryQueue)
    assert q.async_.url == "memory://wrapped"
