"""NATS dependency handling: the ``dependents`` flag on a dependency's record, the index
bucket, and the races between a dependent being enqueued and its dependency finishing.

A finished task whose record has no flag releases nothing and costs no request; these
tests pin down that a dependent is still released exactly once whichever way the race
between its enqueue and its dependency's completion goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from omniq.models import Task, TaskStatus
from omniq.testing import make_task
from tests.backends import test_nats_support as support

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def queues() -> AsyncIterator[tuple[Any, Any]]:
    """Two queue components on separate connections (two processes, as it were)."""
    from omniq_nats import AsyncNATSQueue

    support.require_nats()
    prefix = support.new_prefix()
    a = AsyncNATSQueue(support.URL, name_prefix=prefix, shared=False)
    b = AsyncNATSQueue(support.URL, name_prefix=prefix, shared=False)
    async with a, b:
        yield a, b
    await support.drop_namespace(prefix)


async def _record(q: Any, task_id: str) -> Any:
    from omniq_nats._claim import task_key
    from omniq_nats._deps import decode_entry

    st = await q._state()
    return decode_entry(await st.bucket.get(task_key(task_id)))


async def _claim(q: Any, task_id: str) -> Task:
    got = await q.dequeue(["default"], worker_id="w", wait=5)
    assert got is not None and got.id == task_id
    return got


def _no_listing(q: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every listing of the dependents index made through ``q``."""
    st = q._states[next(iter(q._states))]
    calls: list[str] = []
    original = st.index.keys

    async def keys(pattern: str = ">") -> list[str]:
        calls.append(pattern)
        return list(await original(pattern))

    monkeypatch.setattr(st.index, "keys", keys)
    return calls


async def test_finished_task_without_dependents_releases_without_a_request(
    queues: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    q, _ = queues
    tasks = [make_task(i) for i in range(3)]
    await q.enqueue_many(tasks)
    claimed = await q.dequeue_many(["default"], 3, worker_id="w")
    assert await q.complete_many(claimed[:2]) == [True, True]
    assert await q.fail(claimed[2], None, error="boom")
    listings = _no_listing(q, monkeypatch)
    released = await q.release_dependents_many([t.id for t in claimed[:2]], True)
    assert released.ready == [] and released.cancelled == []
    assert (await q.release_dependents_many([claimed[2].id], False)).cancelled == []
    assert listings == []  # decided from the final records written here


async def test_dependent_enqueued_while_dependency_runs_is_released_once(
    queues: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from omniq_nats._config import encode_token

    worker, producer = queues
    parent = make_task(1)
    await worker.enqueue(parent)
    claim = await _claim(worker, parent.id)
    child = make_task(2, depends_on=[parent.id])
    assert await producer.enqueue(child) is TaskStatus.WAITING
    assert (await _record(worker, parent.id)).dependents
    # the flag moved the record on: the worker's pipelined write is refused, its retry
    # re-reads the record and keeps the flag
    assert await worker.complete_many([claim]) == [True]
    done = await _record(worker, parent.id)
    assert done.status is TaskStatus.SUCCESS and done.dependents
    listings = _no_listing(worker, monkeypatch)
    assert (await worker.release_dependents_many([parent.id], True)).ready == [child.id]
    assert listings == [f"d.{encode_token(parent.id)}.*"]  # the flagged task's index keys
    got = await _claim(worker, child.id)
    assert await worker.complete(got)
    assert await worker.dequeue(["default"], worker_id="w") is None


async def test_dependency_finishing_between_read_and_flag_is_not_missed(
    queues: tuple[Any, Any],
) -> None:
    """The dependency completes after the enqueue read it RUNNING but before its flag
    was written: the flag write fails, the re-check sees SUCCESS, and the enqueue
    releases the dependent itself; the worker's release has nothing to do."""
    from omniq_nats._claim import task_key

    worker, producer = queues
    parent = make_task(1)
    await worker.enqueue(parent)
    claim = await _claim(worker, parent.id)
    st = await producer._state()
    original_cas = st.bucket.cas
    finished: list[Any] = []

    async def cas(key: str, value: bytes, last: int, **kw: Any) -> int | None:
        if key == task_key(parent.id) and not finished:
            assert await worker.complete_many([claim]) == [True]
            finished.append(await worker.release_dependents_many([parent.id], True))
        return await original_cas(key, value, last, **kw)

    st.bucket.cas = cas
    try:
        child = make_task(2, depends_on=[parent.id])
        assert await producer.enqueue(child) is TaskStatus.PENDING
    finally:
        del st.bucket.cas
    assert finished and finished[0].ready == []
    assert not (await _record(worker, parent.id)).dependents
    got = await _claim(worker, child.id)
    assert await worker.complete(got)
    assert await worker.dequeue(["default"], worker_id="w") is None


async def test_racing_enqueues_and_completions_release_each_dependent_once(
    queues: tuple[Any, Any],
) -> None:
    worker, producer = queues
    parents = [make_task(i) for i in range(20)]
    await worker.enqueue_many(parents)
    claims = await worker.dequeue_many(["default"], 20, worker_id="w")
    assert len(claims) == 20
    children = [make_task(100 + i, depends_on=[p.id]) for i, p in enumerate(parents)]

    # staggered so that some enqueues end before their dependency completes, some start
    # after it, and some overlap it
    async def finish(i: int, c: Task) -> list[str]:
        await asyncio.sleep(0.002 * (i % 10))
        assert await worker.complete_many([c]) == [True]
        return (await worker.release_dependents_many([c.id], True)).ready

    async def add(i: int, t: Task) -> TaskStatus:
        await asyncio.sleep(0.002 * (i * 7 % 10))
        status: TaskStatus = await producer.enqueue(t)
        return status

    by_id = {c.id: c for c in claims}
    pairs = [(by_id[p.id], t) for p, t in zip(parents, children, strict=True)]
    results = await asyncio.gather(
        *(finish(i, c) for i, (c, _) in enumerate(pairs)),
        *(add(i, t) for i, (_, t) in enumerate(pairs)),
    )
    released = [tid for ready in results[:20] for tid in ready]
    pending = [t.id for t, s in zip(children, results[20:], strict=True) if s is TaskStatus.PENDING]
    assert sorted(released + pending) == sorted(t.id for t in children)  # once each
    got = await worker.dequeue_many(["default"], 40, worker_id="w", wait=2)
    assert sorted(t.id for t in got) == sorted(t.id for t in children)
    assert await worker.dequeue(["default"], worker_id="w") is None


async def test_release_for_tasks_finished_elsewhere_uses_the_index(
    queues: tuple[Any, Any],
) -> None:
    worker, other = queues
    parent = make_task(1)
    child = make_task(2, depends_on=[parent.id])
    await worker.enqueue_many([parent, child])
    claim = await _claim(worker, parent.id)
    assert await worker.complete(claim)
    # ``other`` did not finish it: it finds the dependents through the index listing
    assert (await other.release_dependents_many([parent.id], True)).ready == [child.id]


async def test_batch_with_dependents_before_their_dependencies_flags_them(
    queues: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """enqueue_many stores a batch's dependencies before their dependents, so each
    dependency is flagged and its completion releases at once (no sweep needed)."""
    q, _ = queues
    a = make_task(1)
    b = make_task(2, depends_on=[a.id])
    c = make_task(3, depends_on=[b.id])
    statuses = await q.enqueue_many([c, b, a])
    assert statuses == [TaskStatus.WAITING, TaskStatus.WAITING, TaskStatus.PENDING]
    listings = _no_listing(q, monkeypatch)
    for task, nxt in ((a, b), (b, c)):
        claim = await _claim(q, task.id)
        assert await q.complete_many([claim]) == [True]
        assert (await q.release_dependents_many([task.id], True)).ready == [nxt.id]
    assert len(listings) == 2


async def test_index_lives_in_its_own_bucket(queues: tuple[Any, Any]) -> None:
    import time

    q, _ = queues
    a = make_task(1, expires_at=time.time() + 60)
    b = make_task(2, depends_on=[a.id])
    await q.enqueue_many([a, b])
    st = await q._state()
    assert all(k.startswith("t.") for k in await st.bucket.keys())
    assert sorted(k[:2] for k in await st.index.keys()) == ["d.", "x."]
    waiting = await q.list(status=TaskStatus.WAITING)
    assert [t.id for t in waiting] == [b.id]
    assert await q.purge() == 2
    assert await st.index.keys() == []


async def test_sweep_releases_dependents_of_a_task_whose_worker_died_after_finishing(
    queues: tuple[Any, Any],
) -> None:
    """A worker that completed a flagged task and died before releasing its dependents:
    its knowledge is gone, the workers' periodic sweep finds the dependent through the
    index and releases it."""
    from omniq import AsyncOmniQ

    worker, other = queues
    parent = make_task(1)
    child = make_task(2, depends_on=[parent.id])
    await worker.enqueue_many([parent, child])
    claim = await _claim(worker, parent.id)
    assert await worker.complete_many([claim]) == [True]  # ... and the worker dies here
    async with AsyncOmniQ(task_queue=other) as oq:
        assert await oq.lifecycle.sweep_waiting() == 1
    got = await _claim(other, child.id)
    assert await other.complete(got)


async def test_release_walk_cancels_transitively_with_the_reasons_of_the_rules(
    queues: tuple[Any, Any],
) -> None:
    from omniq import rules

    q, _ = queues
    a = make_task(1)
    b = make_task(2, depends_on=[a.id])
    c = make_task(3, depends_on=[b.id])
    d = make_task(4, depends_on=[a.id])
    await q.enqueue_many([a, b, c, d])
    claim = await _claim(q, a.id)
    assert await q.fail(claim, None, error="boom")
    released = await q.release_dependents_many([a.id], False)
    assert released.ready == []
    assert released.cancelled == [*sorted([b.id, d.id]), c.id]  # step by step
    for task, dependency in ((b, a), (c, b), (d, a)):
        stored = await q.get(task.id)
        assert stored is not None and stored.status is TaskStatus.CANCELLED
        assert stored.error == rules.dependency_failed(dependency.id)
    st = await q._state()
    assert await st.index.keys("d.>") == []


async def test_success_with_another_dependency_failed_cancels_naming_that_one(
    queues: tuple[Any, Any],
) -> None:
    from omniq import rules

    q, _ = queues
    a, b = make_task(1), make_task(2)
    both = make_task(3, depends_on=[a.id, b.id])
    await q.enqueue_many([a, b, both])
    claims = {t.id: t for t in await q.dequeue_many(["default"], 2, worker_id="w")}
    assert await q.fail(claims[b.id], None, error="boom")  # ... its release never ran
    assert await q.complete(claims[a.id])
    released = await q.release_dependents_many([a.id], True)
    assert released.cancelled == [both.id]
    stored = await q.get(both.id)
    assert stored is not None and stored.error == rules.dependency_failed(b.id)


async def test_release_of_a_batch_reads_in_batches(
    queues: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dependents of many tasks finished elsewhere: one listing of the index, one batch
    read of the dependents and one of their dependencies, whatever the batch size."""
    worker, other = queues
    parents = [make_task(i) for i in range(50)]
    children = [make_task(100 + i, depends_on=[p.id]) for i, p in enumerate(parents)]
    await worker.enqueue_many([*parents, *children])
    claims = await worker.dequeue_many(["default"], 50, worker_id="w")
    assert len(claims) == 50 and all(await worker.complete_many(claims))
    listings = _no_listing(other, monkeypatch)
    st = await other._state()
    reads: list[int] = []
    original = st.bucket.get_many

    async def get_many(keys: Any) -> Any:
        reads.append(len(keys))
        return await original(keys)

    monkeypatch.setattr(st.bucket, "get_many", get_many)
    released = await other.release_dependents_many([p.id for p in parents], True)
    assert sorted(released.ready) == sorted(t.id for t in children)
    assert listings == ["d.>"]
    assert reads == [50, 50]
    got = await worker.dequeue_many(["default"], 60, worker_id="w", wait=2)
    assert sorted(t.id for t in got) == sorted(t.id for t in children)
