"""The file backend's local-disk fast path: a task completed with its result writes one
file, hard-linked as its record and its result (:mod:`omniq_file._final`); each name
then lives on by itself (the result deleted, the record rewritten by a requeue)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from omniq_file import FileBackend
from omniq_file._final import HEADER
from omniq_file._store import LocalStore, _renameat2

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


async def test_a_completed_batch_has_one_ttl_index_entry_and_the_sweep_follows_each_result(
    backend: FileBackend, tmp_path: Path
) -> None:
    q, results = backend.task_queue, backend.result_storage
    tasks = [make_task(i) for i in range(3)]
    await q.enqueue_many(tasks)
    claimed = await q.dequeue_many(["default"], 3, worker_id="w", lease=30.0)
    assert len(claimed) == 3, f"three claims expected, got {claimed}"
    now = time.time()
    expiry = {t.id: now + (10 if i == 0 else 100) for i, t in enumerate(claimed)}
    batch = [
        (t, TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=1, expires_at=expiry[t.id]))
        for t in claimed
    ]
    assert await q.complete_with_results(batch, results) == [True] * 3
    root = tmp_path / "store"
    assert len(list((root / "rttl").iterdir())) == 1, "one index entry for the batch"
    assert await results.cleanup_expired(now=now + 1) == 0, "nothing expired yet"
    assert await results.cleanup_expired(now=now + 50) == 1, "the short-lived result goes"
    short = claimed[0].id
    assert await results.get(short) is None
    left = {r.task_id for r in await results.list()}
    assert left == {t.id for t in claimed[1:]}, f"the others stay until they expire: {left}"
    assert len(list((root / "rttl").iterdir())) == 1, "the rest is indexed again"
    assert await results.cleanup_expired(now=now + 101) == 2, "then they go too"
    assert not list((root / "rttl").iterdir()), "no index entry left"
    for t in claimed:
        got = await q.get(t.id)
        assert got is not None and got.status is TaskStatus.SUCCESS, f"records stay: {got}"


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
    spares = set(backend.result_storage.store._spares)  # type: ignore[attr-defined]
    left = {str(p) for p in (root / "tmp").iterdir()}
    assert left <= spares, f"no temporary file left behind but spares: {left - spares}"
    backend.result_storage.store.close()
    assert not list((root / "tmp").iterdir()), "closing the store deletes its spare files"


# --- hostile combined files -------------------------------------------------------------------


def _hostile(combined: bytes) -> dict[str, bytes]:
    """Damaged or forged combined record+result files (see omniq_file._final), built from a
    real one: what a torn copy, a bad disk or a foreign writer leaves."""
    size = int.from_bytes(combined[len(HEADER) : len(HEADER) + 4], "big")
    body = combined[len(HEADER) + 4 :]
    return {
        "header only": HEADER,
        "length cut short": HEADER + b"\x00\x00",
        "length beyond the end": HEADER + (2**32 - 1).to_bytes(4, "big") + body,
        "length just past the end": HEADER + (len(body) + 1).to_bytes(4, "big") + body,
        "length into the middle": HEADER + (size // 2).to_bytes(4, "big") + body,
        "length zero": HEADER + (0).to_bytes(4, "big") + body,
        "file cut in the result": combined[: len(HEADER) + 4 + size // 2],
        "file cut in the record": combined[: len(combined) - 5],
    }


async def _completed(b: FileBackend, value: object) -> tuple[Task, bytes]:
    task = make_task(7)
    await b.task_queue.enqueue(task)
    await _run_once(b, value)
    return task, b.task_queue.store.read(f"tasks/{task.id}") or b""


async def test_hostile_combined_files_are_reported_not_raised(
    backend: FileBackend, tmp_path: Path
) -> None:
    from omniq.errors import SerializationError

    q, results = backend.task_queue, backend.result_storage
    task, combined = await _completed(backend, {"answer": 42})
    assert combined.startswith(HEADER), "a completion with its result writes a combined file"
    other = make_task(8)
    await q.enqueue(other)
    forged_record = q.serializer.encode_task(other)
    # a length that makes the "record" part another task's valid record: not that task
    variants = _hostile(combined)
    variants["record of another task"] = HEADER + (4).to_bytes(4, "big") + b"abcd" + forged_record
    root = tmp_path / "store"
    for what, data in variants.items():
        for name in ("tasks", "results"):
            (root / name / task.id).unlink(missing_ok=True)
            (root / name / task.id).write_bytes(data)  # two files: each name on its own
        got = await q.get(task.id)
        assert got is not None, f"{what}: get() reports the task, got None"
        assert got.id == task.id, f"{what}: get() must not return another task: {got}"
        assert got.metadata.get("corrupt") or got.status is TaskStatus.SUCCESS, (
            f"{what}: a damaged record reads as a corrupt stub, got {got}"
        )
        listed = {t.id: t for t in await q.list(limit=100)}
        assert task.id in listed and other.id in listed, f"{what}: list() keeps both: {listed}"
        assert listed[task.id].id == task.id
        try:
            res = await results.get(task.id)
        except SerializationError as e:
            assert task.id in str(e), f"{what}: the error names the task: {e}"
        else:
            assert res is None or res.task_id == task.id, f"{what}: not another result: {res}"
        found = [r.task_id for r in await results.list()]
        assert set(found) <= {task.id}, f"{what}: list() skips or reads it, got {found}"
    # the other task is untouched and still runs
    claimed = await q.dequeue_many(["default"], 10, worker_id="w", lease=30.0)
    assert [t.id for t in claimed] == [other.id], f"the other task runs, got {claimed}"


async def test_worker_fails_a_hostile_record_and_runs_the_rest(
    backend: FileBackend, tmp_path: Path
) -> None:
    from omniq import AsyncOmniQ

    q = backend.task_queue
    _, combined = await _completed(backend, "x")
    root = tmp_path / "store"
    hostile = _hostile(combined)
    victims = []
    for i, data in enumerate(hostile.values()):
        t = make_task(100 + i)
        await q.enqueue(t)
        (root / "tasks" / t.id).unlink()
        (root / "tasks" / t.id).write_bytes(data)  # the queued record replaced by garbage
        victims.append(t.id)
    url = f"file://{root}"
    aoq = AsyncOmniQ(
        task_queue={"type": "file", "url": url}, result_storage={"type": "file", "url": url}
    )
    ran: list[int] = []

    @aoq.task(name="tests.noop_counted")
    async def counted(i: int) -> int:
        ran.append(i)
        return i

    async with aoq:
        good = [await counted.enqueue(i) for i in range(5)]
        await aoq.drain(["default"], concurrency=2)
        for h in good:
            assert (await h.result(timeout=5)) in range(5), "the good tasks complete"
        for tid in victims:
            got = await aoq.task_queue.get(tid)
            assert got is not None and got.status is TaskStatus.FAILED, (
                f"a hostile record fails its task (not the worker): {got}"
            )
    assert sorted(ran) == list(range(5)), f"every good task ran once: {ran}"


async def test_a_foreign_file_in_place_of_a_record_is_never_written_through(
    backend: FileBackend, tmp_path: Path
) -> None:
    # the completion swaps the old record out and later rewrites it as a spare file:
    # a symbolic link or a FIFO put there by someone else must not be written through
    q = backend.task_queue
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    tasks = [make_task(200 + i) for i in range(3)]
    await q.enqueue_many(tasks)
    claimed = await q.dequeue_many(["default"], 3, worker_id="w", lease=30.0)
    root = tmp_path / "store"
    first, second = claimed[0].id, claimed[1].id
    (root / "tasks" / first).unlink()
    (root / "tasks" / first).symlink_to(outside)
    (root / "tasks" / second).unlink()
    os.mkfifo(root / "tasks" / second)
    for t in claimed:  # one by one: each completion reuses the file the last one swapped out
        assert await q.complete(t), f"{t.id} completes"
    assert outside.read_bytes() == b"keep me", "the link's target is untouched"
    for t in claimed:
        got = await q.get(t.id)
        assert got is not None and got.status is TaskStatus.SUCCESS, f"{t.id}: {got}"


async def test_cleanup_sweeps_what_dead_processes_left_under_tmp(tmp_path: Path) -> None:
    """A killed worker leaves its spare files (and a write cut short) under tmp/: the
    periodic cleanup deletes tmp/ files untouched for an hour, not fresh ones nor the
    spares this process still holds."""
    from omniq_file import AsyncFileQueue

    async with AsyncFileQueue(f"file://{tmp_path}") as q:
        await q.enqueue(Task(func="tests:noop", id="t1"))
        tmp = tmp_path / "tmp"
        tmp.mkdir(exist_ok=True)
        stale, fresh = tmp / "dead-worker-spare", tmp / "live-write"
        stale.write_bytes(b"old")
        fresh.write_bytes(b"new")
        hours_ago = time.time() - 2 * 3600
        os.utime(stale, (hours_ago, hours_ago))
        await q.cleanup_expired()
        assert not stale.exists(), "a tmp/ file untouched for 2 hours is swept"
        assert fresh.exists(), "a fresh tmp/ file may be a write in progress: kept"
        stale.write_bytes(b"old")
        os.utime(stale, (hours_ago, hours_ago))
        await q.cleanup_expired()
        assert stale.exists(), "one sweep per TMP_SWEEP_EVERY: the next comes later"


def _finishing_store(root: Path) -> LocalStore:
    """A store holding one task's old record ``tasks/x`` and its token, a second name of
    that file, in ``q/finishing/`` (as a claim leaves them)."""
    store = LocalStore(str(root))
    store.write("tasks/x", b"old record")
    (root / "q" / "finishing").mkdir(parents=True)
    os.link(root / "tasks" / "x", root / "q" / "finishing" / "t")
    return store


def _tokens(root: Path) -> list[str]:
    return [f"{d}/{n}" for d in ("finishing", "done") if (root / "q" / d).is_dir()
            for n in os.listdir(root / "q" / d)]  # fmt: skip


def test_finish_moves_the_token_last_and_keeps_the_old_record_as_a_spare(
    tmp_path: Path,
) -> None:
    store = _finishing_store(tmp_path)
    assert store.finish([], "tasks/x", b"new record", "q/finishing/t", "q/done/t")
    assert _tokens(tmp_path) == ["done/t"], "the token moved to done/"
    rec, done = tmp_path / "tasks" / "x", tmp_path / "q" / "done" / "t"
    assert rec.read_bytes() == b"new record"
    assert os.stat(rec).st_ino == os.stat(done).st_ino, "the token names the new record"
    assert len(store._spares) == 1, f"the old record is kept as a spare: {store._spares}"
    spare = Path(store._spares[0])
    assert spare.read_bytes() == b"old record" and os.stat(spare).st_nlink == 1, (
        "the spare is the old record with no other name left (safe to rewrite)"
    )


class _Killed(BaseException):
    pass


@pytest.mark.skipif(_renameat2 is None, reason="no renameat2 on this system")
def test_a_kill_at_any_step_of_finish_leaves_exactly_one_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed between any two file-system calls of ``finish`` (simulated: from
    the k-th call on, every call fails as if the process were gone) leaves the task one
    token and a readable record, old or new."""
    from omniq_file import _store

    k = 0
    while True:
        k += 1
        root = tmp_path / f"kill-{k}"
        store = _finishing_store(root)
        calls = 0

        def counted(fn: Callable[..., Any], kill_at: int = k) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls >= kill_at:
                    raise _Killed
                return fn(*args, **kwargs)

            return call

        with monkeypatch.context() as m:
            for name in ("link", "rename", "replace", "unlink", "open"):
                m.setattr(os, name, counted(getattr(os, name)))
            m.setattr(_store, "_exchange", counted(_store._exchange))
            try:
                finished = store.finish([], "tasks/x", b"new record", "q/finishing/t",
                                        "q/done/t")  # fmt: skip
            except _Killed:
                finished = False
        tokens = _tokens(root)
        assert len(tokens) == 1, f"killed at call {k}: expected one token, found {tokens}"
        assert (root / "tasks" / "x").read_bytes() in (b"old record", b"new record"), k
        if finished:
            assert tokens == ["done/t"], tokens
            break
        assert k < 50, "finish never completed"


def test_finish_of_a_token_taken_over_returns_false_and_makes_no_second_token(
    tmp_path: Path,
) -> None:
    store = _finishing_store(tmp_path)
    (tmp_path / "q" / "ready").mkdir()
    os.rename(tmp_path / "q" / "finishing" / "t", tmp_path / "q" / "ready" / "t")  # recovered
    assert not store.finish([], "tasks/x", b"new record", "q/finishing/t", "q/done/t")
    assert _tokens(tmp_path) == [], "no token made in finishing/ or done/"
    assert os.listdir(tmp_path / "q" / "ready") == ["t"], "the other process's token stays"
