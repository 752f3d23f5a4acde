"""The Redis key layout that saves server work per task keeps every promise: a result
written with its completion lives in the task's hash (no key of its own), yet it is
read, listed, replaced, deleted, expired and outlives the task as any other; results
written by an older version (a key of their own) are still read and replaced; claims
lease a batch of tasks at once, and a lapsed batch still gives its tasks back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from omniq.models import TaskResult, TaskStatus
from omniq.testing import make_task
from tests.backends import test_redis_support as support

pytestmark = pytest.mark.anyio


anyio_backend = support.asyncio_only


prefix = support.prefix


backend = support.backend


_ok = support.ok_result


async def _claimed(q: Any, n: int, queue: str = "lay") -> list[Any]:
    return await support.claim_new(q, n, queue)


async def test_a_result_written_with_its_completion_lives_in_the_task_hash(
    backend: Any, prefix: str
) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    (t,) = await _claimed(q, 1)
    assert await q.complete_with_results([(t, _ok(t, 7, time.time() + 60))], results) == [True]
    p = q.p
    assert await r.exists(f"{p}r:{t.id}") == 0, "no key of its own for the result"
    assert await r.hget(f"{p}t:{t.id}", "rs") is not None, "the result is in the task hash"
    got = await results.get(t.id)
    assert got is not None and got.result == 7, f"the result is read back, got {got!r}"
    assert [x.result for x in await results.list()] == [7], "and listed"
    # set() replaces it (a later write wins), and the hash keeps no second copy
    await results.set(TaskResult(task_id=t.id, status=TaskStatus.FAILED, error="boom"))
    assert await r.hget(f"{p}t:{t.id}", "rs") is None, "set() removed the hash's result"
    got = await results.get(t.id)
    assert got is not None and got.status is TaskStatus.FAILED, f"set() wins, got {got!r}"
    assert len(await results.list()) == 1, "one result listed per task"
    assert await results.delete(t.id) and await results.get(t.id) is None, "deleted"


async def test_results_in_hashes_and_in_keys_are_listed_oldest_first(backend: Any) -> None:
    q, results = backend.task_queue, backend.result_storage
    a, b, c = await _claimed(q, 3)
    await q.complete_with_results([(a, _ok(a, "a"))], results)
    await results.set(_ok(b, "b"))
    await q.complete_with_results([(c, _ok(c, "c"))], results)
    assert [x.result for x in await results.list()] == ["a", "b", "c"], (
        "results of both kinds merge in write order"
    )
    assert [x.result for x in await results.list(limit=2)] == ["a", "b"]


async def test_a_result_of_the_older_layout_is_read_and_replaced(backend: Any, prefix: str) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    old_done, running = make_task(1, queue="lay"), make_task(2, queue="lay")
    p = q.p
    # what an older version wrote: a key per result, indexed in ``results`` and ``rexp``
    for t in (old_done, running):
        data, px, exp = results.encode(_ok(t, f"old-{t.id}", time.time() + 60), time.time())
        await r.set(f"{p}r:{t.id}", data, px=int(px))
        await r.zadd(f"{p}results", {t.id: time.time()})
        await r.zadd(f"{p}rexp", {t.id: float(exp)})
    got = await results.get(old_done.id)
    assert got is not None and got.result == f"old-{old_done.id}", "an old result is read"
    await q.enqueue(running)
    (claimed,) = await q.dequeue_many(["lay"], 1, worker_id="w", lease=30)
    assert await q.complete_with_results([(claimed, _ok(claimed, "new"))], results) == [True]
    assert await r.exists(f"{p}r:{running.id}") == 0, "the old key was deleted"
    assert await r.zscore(f"{p}rexp", running.id) is None, "and its expiry entry"
    got = await results.get(running.id)
    assert got is not None and got.result == "new", f"the new result stands, got {got!r}"
    listed = sorted(str(x.result) for x in await results.list())
    assert listed == sorted([f"old-{old_done.id}", "new"]), f"each listed once: {listed}"


async def test_expired_results_in_hashes_are_swept(backend: Any, prefix: str) -> None:
    q, results = backend.task_queue, backend.result_storage
    a, b = await _claimed(q, 2)
    soon = time.time() + 0.5
    done = [(a, _ok(a, 1, soon)), (b, _ok(b, 2, time.time() + 3600))]
    assert await q.complete_with_results(done, results) == [True, True]
    assert await results.cleanup_expired(soon + 1) == 1, "one result past its TTL"
    r = await q.redis()
    assert await r.hget(f"{q.p}t:{a.id}", "rs") is None, "its bytes left the hash"
    assert await results.get(b.id) is not None, "the other one stays"
    assert await results.cleanup_expired(soon + 1) == 0


async def test_a_result_outlives_its_pruned_or_requeued_task(backend: Any, prefix: str) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    a, b, c = await _claimed(q, 3)
    done = [
        (a, _ok(a, "kept", time.time() + 3600)),
        (b, _ok(b, "forever")),
        (c, _ok(c, "gone", time.time() - 1)),  # written already expired
    ]
    assert await q.complete_with_results(done, results) == [True, True, True]
    again = await q.requeue(b.id)
    assert again is not None, "a finished task can be requeued"
    got = await results.get(b.id)
    assert got is not None and got.result == "forever", "requeue keeps the last result"
    assert await r.hget(f"{q.p}t:{b.id}", "rs") is None, "in a key of its own now"
    assert await q.prune_finished(time.time() + 1) == 2, "a and c are pruned"
    assert await q.get(a.id) is None
    got = await results.get(a.id)
    assert got is not None and got.result == "kept", "an unexpired result outlives its task"
    ttl = await r.pttl(f"{q.p}r:{a.id}")
    assert 0 < ttl <= 3_600_000, f"with its remaining expiry, got PTTL {ttl}"
    assert await results.get(c.id) is None, "an expired one goes with the task"
    assert await r.zscore(f"{q.p}rexp", c.id) is None, "and leaves the expiry index"
    assert {x.result for x in await results.list()} == {"kept", "forever"}


async def _batch_keys(q: Any) -> tuple[int, int, int]:
    """(batches with a lease, their counters, their task lists) now stored."""
    r = await q.redis()
    lists = [k async for k in r.scan_iter(match=f"{q.p}bl:*", count=500)]
    return await r.zcard(f"{q.p}bl"), await r.hlen(f"{q.p}bln"), len(lists)


async def test_a_claim_batch_shares_one_lease_and_a_lapsed_one_gives_tasks_back(
    backend: Any,
) -> None:
    q = backend.task_queue
    tasks = [make_task(i, queue="lay") for i in range(4)]
    await q.enqueue_many(tasks)
    claimed = await q.dequeue_many(["lay"], 4, worker_id="dead", lease=0.5)
    assert len(claimed) == 4, "one claim takes the four tasks"
    assert await _batch_keys(q) == (1, 1, 1), "one lease for the whole claim"
    done, beating, failed, lost = claimed
    assert await q.complete(done)
    assert await q.heartbeat(beating, 30), "a heartbeat moves a task to a lease of its own"
    assert await q.fail(failed, None, error="boom")
    # the batch's lease lapses: only the task still running under it comes back
    again = await q.dequeue_many(["lay"], 10, worker_id="alive", lease=30, wait=10)
    assert [t.id for t in again] == [lost.id], f"expected only {lost.id}, got {again}"
    assert again[0].attempt == lost.attempt + 1, "a new claim carries a new fencing token"
    assert not await q.complete(lost), "the lapsed claim is fenced"
    stored = await q.get(beating.id)
    assert stored is not None and stored.status is TaskStatus.RUNNING, "heartbeat kept it"
    assert await q.complete(again[0]) and await q.complete(beating)
    assert await _batch_keys(q) == (0, 0, 0), "a batch's lease goes with its last task"
    assert await q.count(status=TaskStatus.RUNNING) == 0


async def test_unclaim_cancel_and_delete_release_the_batch(backend: Any) -> None:
    q = backend.task_queue
    await q.enqueue_many([make_task(i, queue="lay") for i in range(3)])
    a, b, _ = await q.dequeue_many(["lay"], 3, worker_id="w", lease=30)
    assert await q.unclaim(a)
    assert await q.cancel(b.id)
    assert await _batch_keys(q) == (1, 1, 1), "one task still holds the lease"
    assert await q.purge("lay") == 3
    assert await _batch_keys(q) == (0, 0, 0), "deleting the last holder deletes the batch"


async def test_a_heartbeat_lease_of_its_own_lapses_too(backend: Any) -> None:
    q = backend.task_queue
    await q.enqueue_many([make_task(i, queue="lay") for i in range(2)])
    a, b = await q.dequeue_many(["lay"], 2, worker_id="dead", lease=30)
    assert await q.complete(a)
    assert await q.heartbeat(b, 0.3), "b leaves the batch for a short lease of its own"
    assert await _batch_keys(q) == (0, 0, 0), "the batch went with its last holder"
    again = await q.dequeue_many(["lay"], 10, worker_id="alive", lease=30, wait=10)
    assert [t.id for t in again] == [b.id], f"the lapsed heartbeat lease gives b back: {again}"
    assert not await q.heartbeat(b, 30) and not await q.complete(b), "the old claim is fenced"
    assert await q.complete(again[0])


async def test_a_claim_of_one_task_takes_a_lease_of_its_own(backend: Any) -> None:
    q = backend.task_queue
    await q.enqueue(make_task(1, queue="lay"))
    (t,) = await q.dequeue_many(["lay"], 10, worker_id="w", lease=30)
    assert await _batch_keys(q) == (0, 0, 0), "no batch for a single task"
    r = await q.redis()
    assert await r.zscore(f"{q.p}leases", t.id) is not None, "its lease is its own"
    assert await q.complete(t)
    assert await r.zscore(f"{q.p}leases", t.id) is None, "and goes with its completion"


async def test_a_claim_written_by_an_older_version_completes_and_lapses(backend: Any) -> None:
    """An older version's claim: state fields and a ``leases`` entry, no batch field
    (here on tasks this version completed before: their cleared batch field stays)."""
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    a, b = await _claimed(q, 2)
    assert await q.complete_with_results([(a, _ok(a, 1)), (b, _ok(b, 2))], results) == [
        True,
        True,
    ]
    past = time.time() - 1
    for t in (a, b):  # what an older version's claim wrote
        await r.hset(f"{q.p}t:{t.id}", mapping={"s": "running", "a": 2, "l": past, "w": "old"})
        await r.zadd(f"{q.p}leases", {t.id: past if t is b else time.time() + 60})
    await r.hincrby(f"{q.p}counts", "lay\tsuccess", -2)
    await r.hincrby(f"{q.p}counts", "lay\trunning", 2)
    assert await q.complete(a.copy(attempt=2)), "the older claim completes"
    assert await r.zscore(f"{q.p}leases", a.id) is None, "its lease entry went with it"
    again = await q.dequeue_many(["lay"], 10, worker_id="new", lease=30, wait=10)
    assert [t.id for t in again] == [b.id], f"the lapsed older claim gives b back: {again}"
    assert again[0].attempt == 3
    assert await q.complete(again[0])
    assert await q.count(status=TaskStatus.RUNNING) == 0
