"""The Redis backend's round-trip savings keep their guarantees: results delivered with
their announcement, wake tokens (deleted when stale, passed on when a claim stops at its
limit, pushed for a delayed task due first), the WAITING index, and completions that
skip the dependents lookup only when no task waits."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from omniq.models import TaskResult, TaskStatus
from omniq.testing import make_task
from tests.backends import test_redis_support as support

pytestmark = pytest.mark.anyio


anyio_backend = support.asyncio_only


prefix = support.prefix


backend = support.backend


def test_announcements_round_trip() -> None:
    from omniq_redis._results import ANNOUNCE_LIMIT, announcement, parse_announcements

    big = b"x" * (ANNOUNCE_LIMIT + 1)
    msg = announcement("a:b\x00c", b"\x01payload") + announcement("t2", big)
    assert parse_announcements(msg) == [("a:b\x00c", b"\x01payload"), ("t2", b"")], (
        "two announcements in one message, the second without its (too large) bytes"
    )
    assert parse_announcements(b"plain-id") == [("plain-id", b"")], "a bare id is one"


async def test_waiter_takes_the_result_from_the_announcement(backend: Any) -> None:
    q, results = backend.task_queue, backend.result_storage
    await results.wait("warm", timeout=0.05)  # subscribed
    small, large = make_task(1, queue="rt"), make_task(2, queue="rt")
    await q.enqueue_many([small, large])
    claimed = await q.dequeue_many(["rt"], 10, worker_id="w")
    assert {t.id for t in claimed} == {small.id, large.id}
    got: dict[str, Any] = {}
    reads = 0
    get = results.get

    async def counting_get(task_id: str) -> Any:
        nonlocal reads
        reads += 1
        return await get(task_id)

    results.get = counting_get

    async def wait(task_id: str) -> None:
        got[task_id] = await results.wait(task_id, timeout=10)

    payload = "y" * 20_000  # over the announcement limit: read from its key
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, small.id)
        tg.start_soon(wait, large.id)
        await anyio.sleep(0.2)  # both waiters made their first read and wait
        reads_before = reads
        by_id = {t.id: t for t in claimed}
        finished = [
            (by_id[small.id], TaskResult(task_id=small.id, status=TaskStatus.SUCCESS, result=7)),
            (
                by_id[large.id],
                TaskResult(task_id=large.id, status=TaskStatus.SUCCESS, result=payload),
            ),
        ]
        assert await q.complete_with_results(finished, results) == [True, True]
    assert got[small.id] is not None and got[small.id].result == 7
    assert got[large.id] is not None and got[large.id].result == payload
    assert reads - reads_before == 1, (
        f"expected one read after the announcement (the large result), got {reads - reads_before}"
    )


async def test_stale_wake_tokens_go_and_a_limited_claim_passes_one_on(
    backend: Any, prefix: str
) -> None:
    q = backend.task_queue
    r = await q.redis()
    wake = f"{{{prefix}}}:w:wk"
    await q.enqueue_many([make_task(i, queue="wk") for i in range(5)])
    assert await r.llen(wake) == 5, "one token per task enqueued"
    assert len(await q.dequeue_many(["wk"], 2, worker_id="w")) == 2
    assert await r.llen(wake) == 6, "tasks are left: the tokens stay, and the claim adds one"
    await r.delete(wake)
    assert len(await q.dequeue_many(["wk"], 2, worker_id="w")) == 2
    assert await r.llen(wake) == 1, "a claim that stopped at its limit wakes another consumer"
    assert len(await q.dequeue_many(["wk"], 10, worker_id="w")) == 1
    assert await r.llen(wake) == 0, "a claim that found the queue empty deletes its tokens"


async def test_a_blocked_consumer_is_woken_by_an_enqueue(backend: Any) -> None:
    q = backend.task_queue
    assert await q.dequeue_many(["bl"], 5, worker_id="w") == []  # now known empty
    took: list[float] = []

    async def consumer() -> None:
        t0 = time.monotonic()
        got = await q.dequeue_many(["bl"], 5, worker_id="w", wait=10)
        took.append(time.monotonic() - t0)
        assert len(got) == 1, f"expected the task enqueued meanwhile, got {got}"

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.sleep(0.2)
        from omniq_redis import AsyncRedisQueue

        other = AsyncRedisQueue(support.URL, prefix=q.prefix)
        try:
            await other.enqueue(make_task(1, queue="bl"))
        finally:
            await other.close()
    assert took and took[0] < 1.5, f"woken after {took[0]:.2f} s, expected about 0.2 s"


async def test_a_delayed_task_due_first_shortens_a_blocked_wait(backend: Any) -> None:
    q = backend.task_queue
    assert await q.dequeue_many(["dl"], 5, worker_id="w") == []
    took: list[float] = []

    async def consumer() -> None:
        t0 = time.monotonic()
        got = await q.dequeue_many(["dl"], 5, worker_id="w", wait=10)
        took.append(time.monotonic() - t0)
        assert len(got) == 1, f"expected the delayed task once due, got {got}"

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.sleep(0.2)
        await q.enqueue(make_task(1, queue="dl", run_at=time.time() + 0.3))
    # without the wake-up the consumer would sleep out its block (2 s) first
    assert took and took[0] < 1.5, f"claimed after {took[0]:.2f} s, expected about 0.5 s"


async def test_waiting_index_lists_without_scanning(backend: Any, prefix: str) -> None:
    q = backend.task_queue
    r = await q.redis()
    dep = make_task(0, queue="a")
    waiting_a = make_task(1, queue="a", depends_on=[dep.id])
    waiting_b = make_task(2, queue="b", depends_on=[dep.id])
    await q.enqueue_many([dep, waiting_a, waiting_b, *(make_task(i) for i in range(3, 50))])
    assert await r.zcard(f"{{{prefix}}}:waiting") == 2
    listed = await q.list(status=TaskStatus.WAITING)
    assert [t.id for t in listed] == [waiting_a.id, waiting_b.id]
    assert [t.id for t in await q.list(queue="b", status=TaskStatus.WAITING)] == [waiting_b.id]
    # an id left behind in the index (e.g. by an older writer) is dropped by the listing
    await r.zadd(f"{{{prefix}}}:waiting", {dep.id: 0})
    assert [t.id for t in await q.list(status=TaskStatus.WAITING)] == [
        waiting_a.id,
        waiting_b.id,
    ]
    assert await r.zscore(f"{{{prefix}}}:waiting", dep.id) is None
    (claimed,) = await q.dequeue_many(["a"], 1, worker_id="w")
    assert claimed.id == dep.id
    assert await q.complete(claimed)
    released = await q.release_dependents(dep.id, succeeded=True)
    assert sorted(released.ready) == sorted([waiting_a.id, waiting_b.id])
    assert await r.zcard(f"{{{prefix}}}:waiting") == 0, "released tasks leave the index"


async def test_completion_skips_the_dependents_lookup_only_when_none_wait(
    backend: Any, prefix: str
) -> None:
    q = backend.task_queue
    first = make_task(1, queue="nd")
    await q.enqueue(first)
    (claimed,) = await q.dequeue_many(["nd"], 1, worker_id="w")
    assert await q.complete(claimed)
    assert claimed.id in q._no_dependents, "no task ever waited: nothing to look up"
    assert (await q.release_dependents(claimed.id, succeeded=True)).ready == []
    assert claimed.id not in q._no_dependents
    # a dependent registered while its dependency runs is released as before
    dep = make_task(2, queue="nd")
    await q.enqueue(dep)
    (running,) = await q.dequeue_many(["nd"], 1, worker_id="w")
    child = make_task(3, queue="nd", depends_on=[dep.id])
    assert await q.enqueue(child) is TaskStatus.WAITING
    assert await q.complete(running)
    assert running.id not in q._no_dependents
    assert (await q.release_dependents(running.id, succeeded=True)).ready == [child.id]


async def test_a_task_enqueued_after_the_subscription_needs_no_read(backend: Any) -> None:
    q, results = backend.task_queue, backend.result_storage
    before = make_task(1, queue="fr")
    await q.enqueue(before)  # no listener yet: its waiter must read first
    await results.wait("warm", timeout=0.05)  # subscribed (and confirmed)
    after = make_task(2, queue="fr")
    await q.enqueue(after)
    reads: list[str] = []
    get = results.get

    async def counting_get(task_id: str) -> Any:
        reads.append(task_id)
        return await get(task_id)

    results.get = counting_get
    claimed = {t.id: t for t in await q.dequeue_many(["fr"], 10, worker_id="w")}
    done = [
        (claimed[t.id], TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=t.id))
        for t in (before, after)
    ]
    assert await q.complete_with_results(done[:1], results) == [True]
    got = await results.wait(before.id, timeout=10)
    assert got is not None and got.result == before.id
    assert reads == [before.id], "a task enqueued before the subscription is read first"
    async with anyio.create_task_group() as tg:

        async def wait_after() -> None:
            res = await results.wait(after.id, timeout=10)
            assert res is not None and res.result == after.id

        tg.start_soon(wait_after)
        await anyio.sleep(0.1)
        assert await q.complete_with_results(done[1:], results) == [True]
    assert reads == [before.id], "the fresh task's result came with its announcement"


async def test_many_enqueues_at_once_wait_for_a_connection(prefix: str) -> None:
    import asyncio

    from omniq_redis import RedisBackend
    from omniq_redis._queue import ENQUEUES_IN_FLIGHT

    pool = ENQUEUES_IN_FLIGHT + 4  # more calls than this at once would need more
    async with RedisBackend(support.URL, prefix=prefix, max_connections=pool) as b:
        q = b.task_queue
        batches = [[make_task(i * 10 + j, queue="many") for j in range(10)] for i in range(60)]
        out = await asyncio.gather(*(q.enqueue_many(batch) for batch in batches))
        assert all(s is TaskStatus.PENDING for statuses in out for s in statuses)
        assert await q.count("many", TaskStatus.PENDING) == 600
