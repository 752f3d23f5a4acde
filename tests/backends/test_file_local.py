"""The file backend's local-disk fast path: a task completed with its result writes one
file, hard-linked as its record and its result (:mod:`omniq_file._final`); each name
then lives on by itself (the result deleted, the record rewritten by a requeue)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from omniq_file import FileBackend
from omniq_file._final import HEADER

from omniq import TaskStatus
from omniq.models import Task, TaskResult
from omniq.testing import make_task

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[FileBackend]:
    b = FileBackend(f"file://{tmp_path / 'store'}")
    async with b:
        yield b


async def _run_once(b: FileBackend, value: object) -> Task:
    """Claim the one queued task and complete it with ``value`` as its result."""
    q = b.task_queue
    claimed = await q.dequeue_many(["default"], 1, worker_id="w", lease=30.0)
    assert len(claimed) == 1, f"expected one claimable task, got {claimed}"
    task = claimed[0]
    result = TaskResult(task_id=task.id, status=TaskStatus.SUCCESS, result=value)
    accepted = await q.complete_with_results([(task, result)], b.result_storage)
    assert accepted == [True], "the current claim must be accepted"
    return task


async def test_completion_writes_one_file_under_both_names(
    backend: FileBackend, tmp_path: Path
) -> None:
    task = make_task(1)
    await backend.task_queue.enqueue(task)
    await _run_once(backend, {"answer": 42})
    root = tmp_path / "store"
    record, result = root / "tasks" / task.id, root / "results" / task.id
    assert os.stat(record).st_ino == os.stat(result).st_ino, "one file, two names"
    assert record.read_bytes().startswith(HEADER), "the shared file has the combined header"
    got = await backend.task_queue.get(task.id)
    assert got is not None and got.status is TaskStatus.SUCCESS, f"record reads SUCCESS: {got}"
    assert got.attempt == 1, f"the record keeps the claim's attempt: {got}"
    res = await backend.result_storage.get(task.id)
    assert res is not None and res.result == {"answer": 42}, f"result reads back: {res}"
    assert [r.task_id for r in await backend.result_storage.list()] == [task.id]


async def test_result_deleted_record_stays(backend: FileBackend) -> None:
    task = make_task(2)
    await backend.task_queue.enqueue(task)
    await _run_once(backend, "value")
    assert await backend.result_storage.delete(task.id) is True
    assert await backend.result_storage.get(task.id) is None, "the result is gone"
    got = await backend.task_queue.get(task.id)
    assert got is not None and got.status is TaskStatus.SUCCESS, f"the record stays: {got}"


async def test_requeued_and_completed_again_replaces_both_names(backend: FileBackend) -> None:
    q, results = backend.task_queue, backend.result_storage
    task = make_task(3)
    await q.enqueue(task)
    await _run_once(backend, "first")
    again = await q.requeue(task.id)
    assert again is not None and again.status is TaskStatus.PENDING, f"requeued: {again}"
    kept = await results.get(task.id)
    assert kept is not None and kept.result == "first", "the requeue rewrote only the record"
    await _run_once(backend, "second")
    got = await q.get(task.id)
    assert got is not None and got.status is TaskStatus.SUCCESS, f"done again: {got}"
    res = await results.get(task.id)
    assert res is not None and res.result == "second", f"the second result replaced it: {res}"


async def test_stale_claim_writes_neither_record_nor_result(backend: FileBackend) -> None:
    q, results = backend.task_queue, backend.result_storage
    task = make_task(4)
    await q.enqueue(task)
    claimed = await q.dequeue_many(["default"], 1, worker_id="w", lease=30.0)
    stale = claimed[0]
    assert await q.cancel(task.id) is True, "a running task can be cancelled"
    result = TaskResult(task_id=stale.id, status=TaskStatus.SUCCESS, result="late")
    assert await q.complete_with_results([(stale, result)], results) == [False]
    assert await results.get(task.id) is None, "a stale claim must not store its result"
    got = await q.get(task.id)
    assert got is not None and got.status is TaskStatus.CANCELLED, f"stays cancelled: {got}"


async def test_result_ttl_index_is_a_link_and_the_sweep_keeps_the_record(
    backend: FileBackend, tmp_path: Path
) -> None:
    q, results = backend.task_queue, backend.result_storage
    task = make_task(5)
    await q.enqueue(task)
    claimed = await q.dequeue_many(["default"], 1, worker_id="w", lease=30.0)
    expires = time.time() + 60
    result = TaskResult(task_id=task.id, status=TaskStatus.SUCCESS, result=1, expires_at=expires)
    assert await q.complete_with_results([(claimed[0], result)], results) == [True]
    root = tmp_path / "store"
    index = list((root / "rttl").iterdir())
    assert len(index) == 1, f"one TTL index entry expected, got {index}"
    shared = os.stat(root / "results" / task.id).st_ino
    assert os.stat(index[0]).st_ino == shared, "the index entry is a link, not a new file"
    assert await results.cleanup_expired(now=expires + 1) == 1, "the expired result is swept"
    assert await results.get(task.id) is None
    assert not list((root / "rttl").iterdir()), "the sweep removes its index entry"
    got = await q.get(task.id)
    assert got is not None and got.status is TaskStatus.SUCCESS, f"the record stays: {got}"


async def test_set_many_with_ttl_writes_one_file_per_result(
    backend: FileBackend, tmp_path: Path
) -> None:
    results = backend.result_storage
    now = time.time()
    batch = [
        TaskResult(task_id=f"t{i}", status=TaskStatus.SUCCESS, result=i, expires_at=now + 60)
        for i in range(3)
    ]
    await results.set_many(batch)
    await results.set_many(batch[:1])  # replacing an existing result and index entry
    root = tmp_path / "store"
    for r in batch:
        got = await results.get(r.task_id)
        assert got is not None and got.result == r.result, f"{r.task_id} reads back: {got}"
    assert len(list((root / "rttl").iterdir())) == 3, "one index entry per result"
    assert not [p for p in (root / "tmp").iterdir()], "no temporary file left behind"
