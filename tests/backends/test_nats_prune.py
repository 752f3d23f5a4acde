"""NATS ``prune_finished``: bounded reads from the front of the tasks bucket's stream.

A final record's message was stored when its task finished, so the records to prune are
at the front of the stream; each call reads from there (after the previous call's
cursor) and stops at the first message stored at or after ``before`` or at ``limit``.
These tests pin down that a call never lists or scans the bucket, reads about as many
records as it deletes, and never touches a task that is not final.
"""

from __future__ import annotations

import asyncio
import time
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


def _count_reads(q: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Messages each ``prune_finished`` read, one entry per read; listing or scanning the
    bucket fails the test."""
    from omniq_nats import _kv

    reads: list[int] = []
    original = _kv.StreamReader.read

    async def read(self: Any, batch: int = 1000) -> list[Any]:
        got = await original(self, batch)
        reads.append(len(got))
        return got

    async def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("prune_finished listed or scanned the tasks bucket")

    monkeypatch.setattr(_kv.StreamReader, "read", read)
    st = q._states[next(iter(q._states))]
    monkeypatch.setattr(st.bucket, "keys", forbidden)
    monkeypatch.setattr(st.bucket, "scan", forbidden)
    return reads


async def _claim_all(q: Any, n: int, queue: str = "default") -> list[Task]:
    claimed: list[Task] = []
    while len(claimed) < n:
        got = await q.dequeue_many([queue], min(500, n - len(claimed)), worker_id="w", wait=2)
        assert got, f"claimed {len(claimed)} of {n}"
        claimed += got
    return claimed


async def test_prune_deletes_in_bounded_calls_and_never_touches_unfinished_tasks(
    queues: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    q, _ = queues
    # unfinished tasks at the front of the stream, among and after the finished ones
    early = [make_task(i, queue="keep") for i in range(10)]
    await q.enqueue_many(early)
    finished = [make_task(100 + i) for i in range(2500)]
    await q.enqueue_many(finished[:1200])
    await q.enqueue_many([make_task(20 + i, queue="keep") for i in range(5)])
    await q.enqueue_many(finished[1200:])
    claimed = await _claim_all(q, 2500)
    assert all(await q.complete_many(claimed[:2000]))
    for t in claimed[2000:]:  # FAILED and CANCELLED are final too
        assert await q.fail(t, None, error="boom") if t.args[0] % 2 else await q.cancel(t.id)
    running = [make_task(50 + i, queue="run") for i in range(3)]
    await q.enqueue_many(running)
    assert len(await _claim_all(q, 3, "run")) == 3
    await asyncio.sleep(0.05)
    before = time.time()
    await asyncio.sleep(0.05)
    # finished after ``before``: kept
    late = [make_task(9000 + i) for i in range(5)]
    await q.enqueue_many(late)
    assert all(await q.complete_many(await _claim_all(q, 5)))

    reads = _count_reads(q, monkeypatch)
    counts = []
    for _ in range(4):
        start = len(reads)
        counts.append(await q.prune_finished(before, limit=1000))
        read = sum(reads[start:])
        # about what it deletes: the unfinished ones met on the way, and one short pull
        assert read <= counts[-1] + 10 + 5 + 3 + 64, (counts, reads)
    assert counts == [1000, 1000, 500, 0]
    # the cursor: nothing is read twice (each record once, plus the first late one)
    assert sum(reads) <= 2500 + 10 + 5 + 3 + 64
    monkeypatch.undo()

    left = await q.list(limit=100)
    assert sorted(t.args[0] for t in left) == sorted(
        [*range(10), *range(20, 25), *range(50, 53), *range(9000, 9005)]
    )
    assert {t.id: t.status for t in left if t.queue == "run"} == {
        t.id: TaskStatus.RUNNING for t in running
    }
    assert await q.count(status=TaskStatus.PENDING) == 15
    assert await q.count(status=TaskStatus.SUCCESS) == 5
    # the late ones go once ``before`` passes them
    assert await q.prune_finished(time.time() + 1, limit=1000) == 5
    assert await q.count() == 18


async def test_prune_from_another_connection_and_with_a_stale_cursor(
    queues: tuple[Any, Any],
) -> None:
    q, other = queues
    tasks = [make_task(i) for i in range(30)]
    await q.enqueue_many(tasks)
    assert all(await q.complete_many(await _claim_all(q, 30)))
    assert await other.prune_finished(time.time() + 1, limit=10) == 10
    assert await q.prune_finished(time.time() + 1, limit=10) == 10
    # a cursor for another stream (this one was re-created meanwhile) starts over
    st = await other._state()
    st.prune_stream, st.prune_cursor = "another stream", 10**9
    assert await other.prune_finished(time.time() + 1, limit=100) == 10
    assert await q.count() == 0


async def test_prune_waits_until_an_expired_task_was_reported(queues: tuple[Any, Any]) -> None:
    q, _ = queues
    t = make_task(1, expires_at=time.time() + 0.2)
    await q.enqueue(t)
    await asyncio.sleep(0.3)
    assert await q.dequeue(["default"], worker_id="w") is None  # found EXPIRED at claim
    stored = await q.get(t.id)
    assert stored is not None and stored.status is TaskStatus.EXPIRED
    assert await q.prune_finished(time.time() + 1) == 0  # cleanup_expired reports it first
    assert await q.cleanup_expired() == [t.id]
    assert await q.prune_finished(time.time() + 1) == 1
    assert await q.get(t.id) is None


async def test_prune_removes_index_keys_but_keeps_those_of_waiting_dependents(
    queues: tuple[Any, Any],
) -> None:
    from omniq_nats._config import encode_token

    q, _ = queues
    parent = make_task(1, expires_at=time.time() + 600)
    waiting = make_task(2, depends_on=[parent.id, "never-enqueued"])
    cancelled = make_task(3, depends_on=[parent.id])
    await q.enqueue_many([parent, waiting, cancelled])
    assert await q.cancel(cancelled.id)
    claim = await q.dequeue(["default"], worker_id="w", wait=2)
    assert claim is not None and claim.id == parent.id
    assert await q.complete_many([claim]) == [True]  # ... and its release never ran
    st = await q._state()
    p, w, c = (encode_token(t.id) for t in (parent, waiting, cancelled))
    assert sorted(await st.index.keys()) == sorted(
        [f"x.{p}", f"d.{p}.{w}", f"d.{p}.{c}", f"d.{encode_token('never-enqueued')}.{w}"]
    )
    assert await q.prune_finished(time.time() + 1) == 2  # the parent and the cancelled one
    # the waiting task is still found through the index, and still waits
    assert sorted(await st.index.keys()) == sorted(
        [f"d.{p}.{w}", f"d.{encode_token('never-enqueued')}.{w}"]
    )
    assert [t.id for t in await q.list(status=TaskStatus.WAITING)] == [waiting.id]
