"""Results written by one completion with expiries in the same second share one expiry
entry (a list of their tasks): the sweep still deletes each result once due, skips a
task whose result changed since, and a result that outlives its pruned task keeps an
expiry entry of its own."""

from __future__ import annotations

import time
from typing import Any

import pytest

from omniq.models import TaskStatus
from tests.backends import test_redis_support as support

pytestmark = pytest.mark.anyio


anyio_backend = support.asyncio_only


prefix = support.prefix


backend = support.backend


_ok = support.ok_result


async def _claimed(q: Any, n: int, queue: str = "rx") -> list[Any]:
    return await support.claim_new(q, n, queue)


async def test_one_completion_shares_one_expiry_entry(backend: Any, prefix: str) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    tasks = await _claimed(q, 5)
    base = int(time.time()) + 100.25  # all four in one second
    far = tasks[-1]
    done = [(t, _ok(t, i, base + i * 0.01)) for i, t in enumerate(tasks[:-1])]
    done.append((far, _ok(far, "far", base + 3600)))  # far from the others: its own entry
    assert await q.complete_with_results(done, results) == [True] * 5
    assert await r.zcard(f"{q.p}rexpb") == 1, "the close expiries share one entry"
    assert await r.zscore(f"{q.p}rexp", far.id) is not None, "the far one has its own"
    assert await r.zcard(f"{q.p}rexp") == 1
    # one of them is requeued and completes again with a later expiry before the sweep
    again = await q.requeue(tasks[0].id)
    assert again is not None
    (reclaimed,) = await q.dequeue_many(["rx"], 1, worker_id="w", lease=30)
    assert reclaimed.id == tasks[0].id
    later = base + 1000
    assert await q.complete_with_results([(reclaimed, _ok(reclaimed, "new", later))], results)
    # the shared entry is due at the latest of its expiries; the far one is not
    swept = await results.cleanup_expired(base + 1)
    assert swept == 3, f"the 3 unchanged results of the shared entry, got {swept}"
    for t in tasks[1:-1]:
        assert await r.hget(f"{q.p}t:{t.id}", "rs") is None, "their bytes left the hash"
        assert await results.get(t.id) is None
    got = await results.get(tasks[0].id)
    assert got is not None and got.result == "new", "the newer result was skipped"
    assert await results.get(far.id) is not None
    assert await r.zcard(f"{q.p}rexpb") == 0, "the shared entry and its list are gone"
    assert await support.numbered_left(r, q.p, "rxb", "rxbn") == []
    assert await results.cleanup_expired(base + 1) == 0
    assert await results.cleanup_expired(later + 1) == 1, "the newer one when due"
    assert await results.cleanup_expired(base + 3601) == 1, "the far one when due"


async def test_a_result_outliving_its_task_gets_its_own_expiry_entry(
    backend: Any, prefix: str
) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    a, b = await _claimed(q, 2)
    exp = int(time.time()) + 3600.25
    done = [(a, _ok(a, "a", exp)), (b, _ok(b, "b", exp + 0.01))]
    assert await q.complete_with_results(done, results) == [True, True]
    assert await r.zscore(f"{q.p}rexp", a.id) is None, "shared entry only"
    assert await q.prune_finished(time.time() + 1) == 2
    assert await r.zscore(f"{q.p}rexp", a.id) == pytest.approx(exp), "its own entry now"
    got = await results.get(a.id)
    assert got is not None and got.result == "a", "the result outlives its task"
    assert await results.cleanup_expired(exp + 1) == 2, "both keys, by their own entries"
    assert await results.get(a.id) is None and await results.get(b.id) is None
    assert await r.zcard(f"{q.p}results") == 0
    assert await results.cleanup_expired(exp + 1) == 0, "the shared entry finds nothing"
    assert await r.zcard(f"{q.p}rexpb") == 0


async def test_a_completion_looks_up_no_result_key_while_none_exists(
    backend: Any, prefix: str
) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    a, b = await _claimed(q, 2)
    await results.set(_ok(b, "set first"))  # a result in a key of its own
    assert await r.exists(f"{q.p}results") == 1
    done = [(a, _ok(a, "a")), (b, _ok(b, "b"))]
    assert await q.complete_with_results(done, results) == [True, True]
    assert await r.exists(f"{q.p}r:{b.id}") == 0, "the completion replaced the key"
    assert await r.exists(f"{q.p}results") == 0
    got = await results.get(b.id)
    assert got is not None and got.result == "b"


async def test_tasks_ended_together_are_pruned_and_listed_from_one_entry(
    backend: Any, prefix: str
) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    tasks = await _claimed(q, 5)
    done = [(t, _ok(t, i)) for i, t in enumerate(tasks)]
    assert await q.complete_with_results(done, results) == [True] * 5
    assert await r.zcard(f"{q.p}finishedb") == 1, "one entry for the five"
    assert [x.result for x in await results.list()] == [0, 1, 2, 3, 4]
    # one is requeued and ends again later: listed once, at its new end
    again = await q.requeue(tasks[1].id)
    assert again is not None
    (reclaimed,) = await q.dequeue_many(["rx"], 1, worker_id="w", lease=30)
    assert await q.complete_with_results([(reclaimed, _ok(reclaimed, "again"))], results)
    assert [x.result for x in await results.list()] == [0, 2, 3, 4, "again"]
    # another is requeued and still runs: never pruned
    assert await q.requeue(tasks[2].id) is not None
    (running,) = await q.dequeue_many(["rx"], 1, worker_id="w", lease=30)
    assert running.id == tasks[2].id
    assert await q.prune_finished(time.time() + 1, limit=2) == 2, "a limit holds"
    assert await q.prune_finished(time.time() + 1) == 2, "the rest, not the running one"
    assert await q.prune_finished(time.time() + 1) == 0
    assert await r.zcard(f"{q.p}finishedb") == 0
    assert await support.numbered_left(r, q.p, "fb", "fbn") == []
    left = {t.id: t.status for t in await q.list(limit=10)}
    assert left == {tasks[2].id: TaskStatus.RUNNING}, left
    listed = sorted(str(x.result) for x in await results.list())
    assert listed == ["0", "2", "3", "4", "again"], f"results outlive their tasks: {listed}"


async def test_a_deleted_or_requeued_task_leaves_its_list(backend: Any, prefix: str) -> None:
    q, results = backend.task_queue, backend.result_storage
    r = await q.redis()
    tasks = await _claimed(q, 3)
    assert await q.complete_with_results([(t, _ok(t, i)) for i, t in enumerate(tasks)], results)
    (nb,) = await r.zrange(f"{q.p}finishedb", 0, -1)
    lk = f"{q.p}fb:{nb.decode()}"
    assert await r.llen(lk) == 3
    assert await q.requeue(tasks[0].id) is not None
    assert await r.lrange(lk, 0, -1) == [t.id.encode() for t in tasks[1:]], "requeued: gone"
    await q.purge("rx")
    assert await r.exists(lk) == 0, "deleted tasks leave it; the last takes it along"
    assert await r.zcard(f"{q.p}finishedb") == 0
