"""The Redis backend beyond the conformance suite: plugin, bundle, key layout, URL
options and secrets, counters, blocking waits, the capped event stream, and a server
of the test's own killed and restarted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq.models import EventType, TaskEvent, TaskResult, TaskStatus
from omniq.testing import make_task
from tests.backends import test_redis_support as support

pytestmark = pytest.mark.anyio


anyio_backend = support.asyncio_only


prefix = support.prefix


backend = support.backend


def test_plugin_registers_the_backend() -> None:
    from omniq.plugins import get_plugin_manager

    spec, _plugin = get_plugin_manager().backends()["redis"]
    assert spec.schemes == ("redis", "rediss", "unix")
    assert spec.default_url == "redis://127.0.0.1:6379/0"
    assert spec.package == "omniq-backend-redis"
    from omniq_redis import AsyncRedisQueue, RedisBackend

    assert spec.component("task_queue") is AsyncRedisQueue
    assert spec.bundle == "omniq_redis:RedisBackend" and RedisBackend


async def test_bundle_shares_one_client_and_completes_atomically(backend: Any) -> None:
    clients = {id(c._client) for c in backend.components}
    assert len(clients) == 1 and None not in {c._client for c in backend.components}
    q, results = backend.task_queue, backend.result_storage
    t = make_task(1)
    await q.enqueue(t)
    claimed = await q.dequeue(["default"], worker_id="w")
    assert claimed is not None
    res = TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=42, attempt=1)
    assert await q.complete_with_results([(claimed, res)], results) == [True]
    got = await results.get(t.id)
    assert got is not None and got.result == 42
    assert (await q.get(t.id)).status is TaskStatus.SUCCESS


def test_sync_bundle(prefix: str) -> None:
    from omniq_redis import RedisBackend

    with RedisBackend(support.URL, prefix=prefix) as b:
        t = make_task(5)
        assert b.sync_task_queue.enqueue_sync(t) is TaskStatus.PENDING
        assert b.sync_task_queue.count_sync(status=TaskStatus.PENDING) == 1
        done = TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=1)
        b.sync_result_storage.set_sync(done)
        assert b.sync_result_storage.get_sync(t.id).result == 1


async def test_every_key_carries_the_hash_tag(backend: Any, prefix: str) -> None:
    from redis.crc import key_slot

    q = backend.task_queue
    a = make_task(1, queue="a", priority=3)
    b = make_task(2, queue="b", depends_on=[a.id], run_at=time.time() + 60)
    c = make_task(3, queue="a", expires_at=time.time() + 60)
    await q.enqueue_many([a, b, c])
    claimed = await q.dequeue(["a"], worker_id="w")
    await q.complete_with_results(
        [(claimed, TaskResult(task_id=a.id, status=TaskStatus.SUCCESS, result=1, attempt=1))],
        backend.result_storage,
    )
    await q.release_dependents(a.id, True)
    await backend.event_storage.log(TaskEvent(event_type=EventType.ENQUEUED, task_id=a.id))
    from omniq.models import Schedule

    await backend.schedule_storage.save(Schedule(func="m:f", interval=60))
    keys = support.keys_of(prefix)
    assert len(keys) > 10
    slots = {key_slot(k) for k in keys}
    assert slots == {key_slot(f"{{{prefix}}}".encode())}, "keys of one app span slots"
    assert all(k.startswith(f"{{{prefix}}}:".encode()) for k in keys)


async def test_url_options_and_password_never_shown(prefix: str) -> None:
    from omniq_redis import AsyncRedisQueue, RedisBackend

    q = AsyncRedisQueue.from_url(f"{support.URL}?prefix={prefix}&default_lease=7")
    await q.connect()
    try:
        assert q.prefix == prefix and q.default_lease == 7.0
        await q.enqueue(make_task())  # redis-py did not see OmniQ's query options
        assert await q.count() == 1
    finally:
        await q.close()
    secret = "s3cr3t-pw"
    url = f"redis://omniq:{secret}@127.0.0.1:6379/0?prefix={prefix}"
    shown = [repr(AsyncRedisQueue(url)), AsyncRedisQueue(url).url, repr(RedisBackend(url))]
    assert all(secret not in s for s in shown), shown
    assert "***" in shown[0]


async def test_counts_come_from_counters(backend: Any, prefix: str) -> None:
    q = backend.task_queue
    await q.enqueue_many([make_task(i, queue="a") for i in range(5)])
    await q.enqueue_many([make_task(i, queue="b") for i in range(3)])
    got = await q.dequeue_many(["a"], 2, worker_id="w")
    await q.complete(got[0])
    await q.fail(got[1], None, error="x")
    r = await q.redis()
    counts = {k.decode(): int(v) for k, v in (await r.hgetall(f"{q.p}counts")).items()}
    assert counts["a\tpending"] == 3 and counts["a\tsuccess"] == 1 and counts["a\tfailed"] == 1
    assert await q.count("a") == 5 and await q.count(status=TaskStatus.PENDING) == 6
    assert await q.prune_finished(time.time() + 1) == 2
    assert await q.count("a") == 3 and await q.purge() == 6
    assert {k: v for k, v in (await r.hgetall(f"{q.p}counts")).items() if int(v)} == {}


async def test_idle_wait_blocks_instead_of_polling(backend: Any) -> None:
    q = backend.task_queue
    calls = 0
    claim = q._claim

    async def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await claim(*args)

    q._claim = counting
    t0 = time.monotonic()
    assert await q.dequeue(["default"], worker_id="w", wait=1.5) is None
    assert time.monotonic() - t0 >= 1.4
    assert calls <= 3, f"an idle wait of 1.5 s made {calls} claim attempts"


async def test_result_wait_is_woken_by_the_write(backend: Any, prefix: str) -> None:
    from omniq_redis import AsyncRedisResultStorage

    writer = AsyncRedisResultStorage(support.URL, prefix=prefix)
    await writer.connect()
    try:
        took: list[float] = []

        async def waiter() -> None:
            await backend.result_storage.wait("warm", timeout=0.05)  # subscribe first
            t0 = time.monotonic()
            r = await backend.result_storage.wait("r1", timeout=10)
            assert r is not None
            took.append(time.monotonic() - t0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.3)
            t_set = time.monotonic()
            await writer.set(TaskResult(task_id="r1", status=TaskStatus.SUCCESS, result=1))
            set_took = time.monotonic() - t_set
        assert took and took[0] - 0.3 < set_took + 0.2, took
    finally:
        await writer.close()


async def test_event_stream_is_capped(prefix: str) -> None:
    from omniq_redis import AsyncRedisEventStorage

    ev = AsyncRedisEventStorage(support.URL, prefix=prefix, events_maxlen=100)
    await ev.connect()
    try:
        await ev.log_many(
            [TaskEvent(event_type=EventType.ENQUEUED, task_id=f"t{i}") for i in range(2000)]
        )
        r = await ev.redis()
        assert await r.xlen(ev.stream) < 500
        assert len(await ev.query(types=[EventType.ENQUEUED])) < 500
    finally:
        await ev.close()


async def test_complete_with_results_elsewhere_falls_back(backend: Any, prefix: str) -> None:
    from omniq.storage.memory import AsyncMemoryResultStorage

    q = backend.task_queue
    other = AsyncMemoryResultStorage()
    await q.enqueue(make_task())
    c = await q.dequeue(["default"], worker_id="w")
    res = TaskResult(task_id=c.id, status=TaskStatus.SUCCESS, result="m", attempt=c.attempt)
    assert await q.complete_with_results([(c, res)], other) == [True]
    assert (await other.get(c.id)).result == "m"


async def test_restart_of_the_server_keeps_tasks_and_reconnects(tmp_path: Path) -> None:
    from omniq_redis import AsyncRedisQueue, AsyncRedisResultStorage

    with support.private_redis(tmp_path / "redis") as server:
        q = AsyncRedisQueue(server.url, prefix="restart")
        results = AsyncRedisResultStorage(server.url, prefix="restart")
        await q.connect()
        await results.connect()
        try:
            tasks = [make_task(i) for i in range(200)]
            await q.enqueue_many(tasks)
            first = await q.dequeue_many(["default"], 50, worker_id="w", lease=1)
            done = [
                (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=t.args[0],
                               attempt=t.attempt))
                for t in first[:25]
            ]  # fmt: skip
            assert await q.complete_with_results(done, results) == [True] * 25
            server.kill()  # SIGKILL: AOF with appendfsync always keeps every write
            server.start()
            # the same clients reconnect; nothing acknowledged is lost
            assert await q.count() == 200
            assert await q.count(status=TaskStatus.SUCCESS) == 25
            assert (await results.get(first[0].id)).result == first[0].args[0]
            seen: set[str] = set()
            while len(seen) < 175:
                got = await q.dequeue_many(["default"], 50, worker_id="w2", lease=30, wait=3)
                assert got, f"only {len(seen)} of 175 tasks came back"
                for t in got:
                    seen.add(t.id)
                    assert await q.complete(t)
            assert seen == {t.id for t in tasks} - {t.id for t, _ in done}
            assert await q.count(status=TaskStatus.SUCCESS) == 200
        finally:
            await q.close()
            await results.close()


async def test_a_claim_blocked_in_its_pop_survives_a_server_restart(tmp_path: Path) -> None:
    """The worker's claim waits in BLPOP (with the claim script pipelined behind it) when
    the server is killed and restarted: the same call picks up the task enqueued after
    the restart, or a retry does; nothing is lost or held by a ghost claim."""
    from omniq_redis import AsyncRedisQueue

    with support.private_redis(tmp_path / "redis") as server:
        q = AsyncRedisQueue(server.url, prefix="blocked")
        await q.connect()
        try:
            waiter = asyncio.ensure_future(
                q.dequeue_many(["default"], 10, worker_id="w", lease=2, wait=20)
            )
            deadline = time.monotonic() + 30
            r = await q.redis()
            while not any(  # the pop is waiting on the server
                c.get("cmd") in ("blpop", "bzpopmin", "brpop", "blmove")
                for c in await r.client_list()
            ):
                assert time.monotonic() < deadline, "the claim never blocked in its pop"
                await anyio.sleep(0.01)
            server.kill()
            server.start()
            task = make_task(1)
            await q.enqueue(task)
            try:
                got = await asyncio.wait_for(waiter, 30)
            except Exception:  # the dropped connection may end the call: a retry claims
                got = []
            while not got:
                assert time.monotonic() < deadline, "the task enqueued after the restart never came"
                got = await q.dequeue_many(["default"], 10, worker_id="w", lease=2, wait=2)
            assert [t.id for t in got] == [task.id]
        finally:
            await q.close()
