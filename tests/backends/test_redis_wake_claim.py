"""The claim a blocked Redis consumer sends behind its blocking pop: the server runs it
when the pop returns, with the server's clock (plus the client's offset) as ``now``, so
leases, TTLs and due times are judged at the wake-up, not when the pop was sent; a
server that lost its scripts still claims; fencing by attempt keeps stale completions
from writing or announcing results."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from omniq.models import TaskResult, TaskStatus
from omniq.testing import make_task
from omniq.testing.base import eventually
from tests.backends import test_redis_support as support

pytestmark = pytest.mark.anyio

LEASE = 30.0


anyio_backend = support.asyncio_only


prefix = support.prefix


@pytest.fixture
async def consumer(prefix: str) -> AsyncIterator[Any]:
    """A backend whose connections carry a name, so the test can see them blocked."""
    from omniq_redis import RedisBackend

    b = RedisBackend(support.URL, prefix=prefix, client_name=f"consumer-{prefix}")
    async with b:
        yield b


@pytest.fixture
async def producer(prefix: str) -> AsyncIterator[Any]:
    from omniq_redis import RedisBackend

    b = RedisBackend(support.URL, prefix=prefix)
    async with b:
        yield b


async def _blocked(producer: Any, prefix: str) -> bool:
    """True once a connection of the consumer is blocked (its pop sent)."""
    r = await producer.task_queue.redis()
    return any(
        c.get("name") == f"consumer-{prefix}" and "b" in c.get("flags", "")
        for c in await r.client_list()
    )


async def _claim_after_block(
    consumer: Any, producer: Any, prefix: str, queue: str, enqueue: Any
) -> tuple[list[Any], float]:
    """Let the consumer block on an empty ``queue``; once it is blocked and the clock has
    moved on, run ``enqueue``; return what the consumer claimed and when ``enqueue`` began."""
    q = consumer.task_queue
    assert await q.dequeue_many([queue], 5, worker_id="w") == []  # known empty: it blocks
    got: list[Any] = []
    sent: list[float] = []

    async def consume() -> None:
        sent.append(time.time())
        got.extend(await q.dequeue_many([queue], 5, worker_id="w", lease=LEASE, wait=30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        assert await eventually(lambda: _blocked(producer, prefix)), (
            "expected the consumer's connection to block on the wake-up list"
        )
        # the claim was sent with the pop; let the client's clock pass its send time
        while time.time() < sent[0] + 0.3:
            await anyio.sleep(0.05)
        started = time.time()
        await enqueue()
    return got, started


async def test_a_claim_behind_a_pop_leases_from_the_wake_up(
    consumer: Any, producer: Any, prefix: str
) -> None:
    task = make_task(1, queue="lw")
    got, started = await _claim_after_block(
        consumer, producer, prefix, "lw", lambda: producer.task_queue.enqueue(task)
    )
    assert [t.id for t in got] == [task.id], f"expected the task enqueued meanwhile, got {got}"
    claimed = got[0]
    assert claimed.lease_until is not None
    assert claimed.lease_until >= started + LEASE - 0.1, (
        f"expected the lease to run from the wake-up (>= {started + LEASE - 0.1:.3f}), "
        f"got {claimed.lease_until:.3f}: the claim used the time the pop was sent"
    )
    stored = await producer.task_queue.get(task.id)
    assert stored is not None and stored.status is TaskStatus.RUNNING
    assert stored.lease_until == pytest.approx(claimed.lease_until, abs=1e-5), (
        "expected the stored lease to be the one the claim returned"
    )


async def test_a_claim_behind_a_pop_judges_ttl_at_the_wake_up(
    consumer: Any, producer: Any, prefix: str
) -> None:
    ok = make_task(1, queue="tw")

    async def enqueue() -> None:
        # past its TTL when enqueued, but not yet when the consumer's pop was sent
        gone = make_task(0, queue="tw", expires_at=time.time() - 0.05)
        holder.append(gone)
        await producer.task_queue.enqueue_many([gone, ok])

    holder: list[Any] = []
    got, _ = await _claim_after_block(consumer, producer, prefix, "tw", enqueue)
    assert [t.id for t in got] == [ok.id], (
        f"expected only the task within its TTL to be claimed, got {[t.id for t in got]}"
    )
    expired = await producer.task_queue.get(holder[0].id)
    assert expired is not None and expired.status is TaskStatus.EXPIRED, (
        f"expected the task past its TTL at the wake-up to be EXPIRED, got {expired}"
    )


async def test_a_claim_behind_a_pop_loads_a_missing_script(
    consumer: Any, producer: Any, prefix: str
) -> None:
    from omniq_redis import _scripts as lua

    q = consumer.task_queue
    assert await q.dequeue_many(["ns"], 5, worker_id="w") == []
    # a claim script the server has never seen (as after SCRIPT FLUSH or a restart)
    q._scripts["claim"] = (await q.redis()).register_script(lua.CLAIM + f"\n-- {prefix}\n")
    task = make_task(1, queue="ns")
    got, _ = await _claim_after_block(
        consumer, producer, prefix, "ns", lambda: producer.task_queue.enqueue(task)
    )
    assert [t.id for t in got] == [task.id], (
        f"expected the task claimed after the script was loaded, got {got}"
    )


async def test_a_stale_attempt_neither_writes_nor_announces_its_result(
    producer: Any, prefix: str
) -> None:
    q, results = producer.task_queue, producer.result_storage
    task = make_task(1, queue="st")
    await q.enqueue(task)
    (first,) = await q.dequeue_many(["st"], 1, worker_id="a")
    assert await q.fail(first, time.time(), error="lost its worker")  # PENDING again
    (second,) = await q.dequeue_many(["st"], 1, worker_id="b")
    assert second.attempt == first.attempt + 1

    r = await q.redis()
    pubsub = r.pubsub()
    await pubsub.subscribe(results.channel)
    try:
        msg = None
        with anyio.fail_after(10):  # the subscription is confirmed
            while msg is None or msg["type"] != "subscribe":
                msg = await pubsub.get_message(timeout=1.0)

        def result(value: str) -> TaskResult:
            return TaskResult(task_id=task.id, status=TaskStatus.SUCCESS, result=value)

        assert await q.complete_with_results([(first, result("stale"))], results) == [False]
        assert await q.complete_with_results([(second, result("fresh"))], results) == [True]
        msg = None
        with anyio.fail_after(10):  # the current attempt's result is announced
            while msg is None or msg["type"] != "message":
                msg = await pubsub.get_message(timeout=1.0)
        from omniq_redis._results import parse_announcements

        ((announced, data),) = parse_announcements(msg["data"])
        assert announced == task.id
        assert results._decode(task.id, data).result == "fresh", (
            "expected the first announcement to be the current attempt's result"
        )
    finally:
        await pubsub.aclose()
    stored = await results.get(task.id)
    assert stored is not None and stored.result == "fresh"
    waited = await results.wait(task.id, timeout=10)
    assert waited is not None and waited.result == "fresh"
