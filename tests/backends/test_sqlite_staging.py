"""Staged bulk enqueue on SQLite (omniq_sqlite._staging): a batch of new tasks is one row
in ``task_batches`` until the first claim, read or conflicting enqueue expands it.

The conformance suite runs once more with every bulk enqueue staged
(``TestSQLiteQueueStaged`` in test_sqlite.py); these tests pin what it cannot see: that
staging happens at all, that expansion keeps ids, order and idempotency exact, and that a
damaged batch does not block the queue.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from omniq.models import Task, TaskStatus
from omniq.models.ids import new_ids
from omniq.serialization.manager import SerializationManager
from omniq_sqlite import AsyncSQLiteQueue, _staging
from omniq_sqlite._task_sql import claim

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tasks(n: int, **fields: Any) -> list[Task]:
    ids = new_ids(n)
    return [Task(func="tests:noop", args=(i,), id=tid, **fields) for i, tid in enumerate(ids)]


def rows_of(path: Path) -> tuple[int, int]:
    """(task rows, staged batches) as another connection sees them. The tasks of a
    claimed batch (RUNNING, their rows written when they finish) count as task rows,
    and only the batches of PENDING tasks as staged."""
    conn = sqlite3.connect(path)
    try:
        (stored,) = conn.execute(
            "SELECT (SELECT count(*) FROM tasks) + "
            "(SELECT coalesce(sum(size), 0) FROM task_batches WHERE claim IS NOT NULL)"
        ).fetchone()
        (staged,) = conn.execute("SELECT count(*) FROM task_batches WHERE claim IS NULL").fetchone()
    finally:
        conn.close()
    return int(stored), int(staged)


@pytest.fixture
async def queue(tmp_path: Path) -> Any:
    async with AsyncSQLiteQueue(f"sqlite:///{tmp_path / 'q.db'}", stage_min=4) as q:
        yield q


async def test_a_bulk_enqueue_is_one_staged_row_until_read(queue: AsyncSQLiteQueue) -> None:
    batch = tasks(10)
    assert await queue.enqueue_many(batch) == [TaskStatus.PENDING] * 10
    assert rows_of(Path(queue.path)) == (0, 1)
    got = await queue.get(batch[3].id)  # a read expands the batch first
    assert got is not None and got.args == (3,) and got.status is TaskStatus.PENDING
    assert rows_of(Path(queue.path)) == (10, 0)
    assert [t.id for t in await queue.list()] == [t.id for t in batch]


async def test_small_batches_and_disabled_staging_insert_rows(tmp_path: Path) -> None:
    async with AsyncSQLiteQueue(f"sqlite:///{tmp_path / 'a.db'}", stage_min=4) as q:
        await q.enqueue_many(tasks(3))
        assert rows_of(Path(q.path)) == (3, 0)
    async with AsyncSQLiteQueue(f"sqlite:///{tmp_path / 'b.db'}", stage_min=0) as q:
        await q.enqueue_many(tasks(50))
        assert rows_of(Path(q.path)) == (50, 0)


async def test_ids_not_increasing_are_inserted_row_by_row(queue: AsyncSQLiteQueue) -> None:
    batch = tasks(6)
    batch.reverse()
    assert await queue.enqueue_many(batch) == [TaskStatus.PENDING] * 6
    assert rows_of(Path(queue.path)) == (6, 0)


@pytest.mark.parametrize("reader", ["list", "claim", "cancel", "purge_queue", "expire"])
async def test_every_reader_sees_staged_tasks(queue: AsyncSQLiteQueue, reader: str) -> None:
    batch = tasks(5, queue="q")
    await queue.enqueue_many(batch)
    if reader == "list":
        assert len(await queue.list("q", TaskStatus.PENDING)) == 5
    elif reader == "claim":
        got = await queue.dequeue_many(["q"], 10, worker_id="w")
        assert [t.id for t in got] == [t.id for t in batch]
    elif reader == "cancel":
        assert await queue.cancel(batch[2].id)
        assert await queue.count("q", TaskStatus.CANCELLED) == 1
    elif reader == "purge_queue":
        assert await queue.purge("q") == 5
    else:
        assert await queue.cleanup_expired(time.time()) == []
        assert await queue.count("q") == 5
        assert rows_of(Path(queue.path)) == (0, 1)  # no TTL: nothing for the sweep
        return
    assert rows_of(Path(queue.path))[1] == 0


async def test_count_includes_staged_tasks_without_expanding_them(
    queue: AsyncSQLiteQueue,
) -> None:
    await queue.enqueue_many(tasks(5, queue="a"))
    await queue.enqueue_many(tasks(4, queue="b", expires_at=time.time() + 600))
    await queue.enqueue(tasks(1, queue="a")[0])
    assert rows_of(Path(queue.path)) == (1, 2)
    assert await queue.count() == 10
    assert await queue.count("a") == 6
    assert await queue.count("a", TaskStatus.PENDING) == 6
    assert await queue.count("b", TaskStatus.PENDING) == 4
    assert await queue.count(None, TaskStatus.PENDING) == 10
    assert await queue.count("b", TaskStatus.EXPIRED) == 0
    assert await queue.count("c") == 0
    for status in (TaskStatus.RUNNING, TaskStatus.WAITING, TaskStatus.SUCCESS):
        assert await queue.count(None, status) == 0
    assert rows_of(Path(queue.path)) == (1, 2)  # still staged: a worker expands them


@pytest.mark.parametrize("case", ["mixed queues", "past ttl"])
async def test_count_expands_when_the_batch_row_cannot_tell(
    queue: AsyncSQLiteQueue, case: str
) -> None:
    if case == "mixed queues":
        batch = tasks(3, queue="a") + tasks(3, queue="b")
        await queue.enqueue_many(batch)
        assert await queue.count("a", TaskStatus.PENDING) == 3
    else:
        await queue.enqueue_many(tasks(3, expires_at=time.time() - 1) + tasks(3))
        assert await queue.count(None, TaskStatus.PENDING) == 3
        assert await queue.count(None, TaskStatus.EXPIRED) == 3
    assert rows_of(Path(queue.path)) == (6, 0)


async def test_purge_all_counts_staged_tasks(queue: AsyncSQLiteQueue) -> None:
    await queue.enqueue_many(tasks(7))
    await queue.enqueue(tasks(1)[0])
    assert await queue.purge() == 8
    assert rows_of(Path(queue.path)) == (0, 0)


async def test_ttl_of_a_staged_task_is_swept(queue: AsyncSQLiteQueue) -> None:
    batch = tasks(4, expires_at=time.time() - 1)
    await queue.enqueue_many(batch)
    assert await queue.cleanup_expired() == sorted(t.id for t in batch)


async def test_claim_order_spans_staged_and_inserted_tasks(queue: AsyncSQLiteQueue) -> None:
    low = tasks(4, priority=0)
    await queue.enqueue_many(low)  # staged
    high = tasks(1, priority=5)[0]
    await queue.enqueue(high)  # inserted directly, after the staged batch
    assert rows_of(Path(queue.path)) == (1, 1)
    got = await queue.dequeue_many(["default"], 10, worker_id="w")
    assert [t.id for t in got] == [high.id] + [t.id for t in low]


async def test_enqueue_stays_idempotent_against_staged_and_stored_ids(
    queue: AsyncSQLiteQueue,
) -> None:
    staged = tasks(5)
    assert await queue.enqueue_many(staged) == [TaskStatus.PENDING] * 5
    # one id of the staged batch again (other arguments): the stored task wins
    assert await queue.enqueue(staged[2].copy(args=("other",))) is TaskStatus.PENDING
    assert await queue.count() == 5
    stored = await queue.get(staged[2].id)
    assert stored is not None and stored.args == (2,)
    await queue.cancel(staged[0].id)
    again = [staged[0], *tasks(5)]
    assert await queue.enqueue_many(again) == [TaskStatus.CANCELLED] + [TaskStatus.PENDING] * 5
    assert await queue.count() == 10


async def test_a_batch_overlapping_a_staged_range_is_not_staged(
    queue: AsyncSQLiteQueue,
) -> None:
    ids, now = new_ids(10), time.time()  # one due time: the claim order is by id
    first = [Task(func="tests:noop", id=tid, created_at=now) for tid in ids[0::2]]  # staged
    await queue.enqueue_many(first)
    assert rows_of(Path(queue.path)) == (0, 1)
    # interleaved ids: none is stored, but they fall inside the staged range
    second = [Task(func="tests:noop", id=tid, created_at=now) for tid in ids[1::2]]
    assert await queue.enqueue_many(second) == [TaskStatus.PENDING] * 5
    assert rows_of(Path(queue.path)) == (10, 0)
    got = await queue.dequeue_many(["default"], 20, worker_id="w")
    assert [t.id for t in got] == ids


async def test_a_damaged_batch_is_marked_and_the_queue_goes_on(
    queue: AsyncSQLiteQueue, caplog: pytest.LogCaptureFixture
) -> None:
    await queue.enqueue_many(tasks(4))
    conn = sqlite3.connect(queue.path, isolation_level=None)
    conn.execute("UPDATE task_batches SET rows = x'c1c1'")
    conn.close()
    good = tasks(4)
    await queue.enqueue_many(good)
    with caplog.at_level(logging.ERROR, logger="omniq.sqlite"):
        got = await queue.dequeue_many(["default"], 10, worker_id="w")
    assert [t.id for t in got] == [t.id for t in good]
    assert "cannot be decoded" in caplog.text
    conn = sqlite3.connect(queue.path)
    (error,) = conn.execute("SELECT error FROM task_batches").fetchone()
    conn.close()
    assert "cannot be decoded" in error
    assert await queue.count() == 4  # and later reads do not trip over it again


class Point:
    """Not msgpack-native: encoded through the signed dill extension."""

    def __init__(self, x: int) -> None:
        self.x = x


@pytest.mark.parametrize("dill", [False, True])
async def test_staged_tasks_keep_their_exact_payload(tmp_path: Path, dill: bool) -> None:
    signed = SerializationManager(secret_key="staging-test-key")
    async with AsyncSQLiteQueue(
        f"sqlite:///{tmp_path / 'p.db'}", stage_min=4, serializer=signed
    ) as queue:
        await _check_payloads(queue, dill)


async def _check_payloads(queue: AsyncSQLiteQueue, dill: bool) -> None:
    batch = [
        Task(func="tests:noop", id=tid, args=(Point(i), b"\x00bytes", {"k": [i]}),
             kwargs={"when": 1.5}, metadata={"m": i}, serializer="dill" if dill else None)
        for i, tid in enumerate(new_ids(6))
    ]  # fmt: skip
    await queue.enqueue_many(batch)
    # dill tasks are encoded one by one, so they are inserted, not staged
    assert rows_of(Path(queue.path)) == ((6, 0) if dill else (0, 1))
    got = await queue.dequeue_many(["default"], 10, worker_id="w")
    assert [t.id for t in got] == [t.id for t in batch]
    for i, t in enumerate(got):
        assert isinstance(t.args[0], Point) and t.args[0].x == i
        assert t.args[1:] == (b"\x00bytes", {"k": [i]}) and t.kwargs == {"when": 1.5}
        assert t.metadata == {"m": i}
    # the stored bytes are exactly what a direct insert stores
    await queue.list(limit=100)  # a claimed batch's tasks get their rows
    conn = sqlite3.connect(queue.path)
    stored = dict(conn.execute("SELECT id, data FROM tasks").fetchall())
    conn.close()
    ser = queue.serializer
    for t in got:
        assert ser.decode_task(stored[t.id]).args[1:] == t.args[1:]


# --- expansion only where needed -----------------------------------------------------------


async def test_a_claim_expands_only_the_batches_it_needs(queue: AsyncSQLiteQueue) -> None:
    batches = [tasks(5) for _ in range(3)]
    for batch in batches:
        await queue.enqueue_many(batch)
    got = await queue.dequeue_many(["default"], 3, worker_id="w")
    assert [t.id for t in got] == [t.id for t in batches[0][:3]]
    # the claimed tasks were taken straight out of the first batch, which keeps the rest
    assert rows_of(Path(queue.path)) == (3, 3), "3 claimed task rows, 3 batches staged"
    got = await queue.dequeue_many(["default"], 5, worker_id="w")
    assert [t.id for t in got] == [t.id for t in batches[0][3:] + batches[1][:3]]
    assert rows_of(Path(queue.path)) == (8, 2), "8 claimed task rows, batches 2 and 3 staged"


def _claim_order_workload(now: float) -> list[list[Task]]:
    """Enqueue calls whose tasks interleave in claim order: priorities inside and across
    batches, due times before and after other batches, a delay not yet due."""
    ids = iter(new_ids(40))

    def make(n: int, **fields: Any) -> list[Task]:
        return [Task(func="tests:noop", id=next(ids), **fields) for _ in range(n)]

    mixed = make(5, created_at=now - 5)
    mixed[2] = mixed[2].copy(priority=9)
    return [
        make(5, created_at=now - 10),  # staged
        make(1, created_at=now - 20, priority=1),  # one task: inserted directly
        mixed,  # staged: one high priority task inside
        make(5, created_at=now - 30, run_at=now - 1),  # staged, delayed but due: due now-1
        make(4, created_at=now - 40, priority=3),  # staged, after lower priorities
        make(4, created_at=now - 50, run_at=now + 600),  # staged, not due yet
        make(2, created_at=now - 60),  # inserted directly
    ]


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_claim_order_is_the_unstaged_order(tmp_path: Path, limit: int) -> None:
    now = time.time()
    workload = _claim_order_workload(now)
    orders = []
    for stage_min in (4, 0):  # staged, then every task inserted directly
        async with AsyncSQLiteQueue(
            f"sqlite:///{tmp_path / f'o{stage_min}.db'}", stage_min=stage_min
        ) as q:
            for call in workload:
                await q.enqueue_many(call)
            order: list[str] = []
            while got := await q.dequeue_many(["default"], limit, worker_id="w"):
                order += [t.id for t in got]
            orders.append(order)
            if stage_min:
                assert rows_of(Path(q.path)) == (22, 1)  # the batch not due stays staged
    staged, direct = orders
    assert len(direct) == 22 and staged == direct


async def test_a_staged_batch_not_due_is_not_expanded_but_awaited(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    async with AsyncSQLiteQueue(f"sqlite:///{path}", stage_min=4) as q:
        await q.enqueue_many(tasks(5, run_at=time.time() + 600))
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            got, may_become_ready = claim(conn, ["default"], 10, "w", 30.0)
            assert got == [] and may_become_ready  # an idle worker re-checks in time
            assert claim(conn, ["other"], 10, "w", 30.0) == ([], False)
        finally:
            conn.close()
        assert rows_of(path) == (0, 1)


async def test_get_cancel_and_dependencies_expand_the_batch_holding_the_id(
    queue: AsyncSQLiteQueue,
) -> None:
    first, second, third = tasks(5), tasks(5), tasks(5)
    for batch in (first, second, third):
        await queue.enqueue_many(batch)
    got = await queue.get(second[1].id)
    assert got is not None and got.id == second[1].id
    assert rows_of(Path(queue.path)) == (5, 2)
    assert await queue.cancel(first[4].id)
    assert rows_of(Path(queue.path)) == (10, 1)
    dependent = Task(func="tests:noop", depends_on=[third[0].id])
    assert await queue.enqueue(dependent) is TaskStatus.WAITING
    assert rows_of(Path(queue.path)) == (16, 0)


async def test_ttl_sweep_and_queue_purge_leave_other_batches_staged(
    queue: AsyncSQLiteQueue,
) -> None:
    expired = tasks(4, queue="a", expires_at=time.time() - 1)
    await queue.enqueue_many(expired)
    await queue.enqueue_many(tasks(5, queue="a"))
    await queue.enqueue_many(tasks(6, queue="b"))
    assert await queue.cleanup_expired() == sorted(t.id for t in expired)
    assert rows_of(Path(queue.path)) == (4, 2)
    assert await queue.purge("a") == 9  # its staged batch is dropped without expanding
    assert rows_of(Path(queue.path)) == (0, 1)
    assert await queue.count("b") == 6


async def test_a_large_enqueue_is_staged_in_bounded_rows(
    queue: AsyncSQLiteQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_staging, "BATCH_ROWS", 4)
    batch = tasks(10)
    assert await queue.enqueue_many(batch) == [TaskStatus.PENDING] * 10
    assert rows_of(Path(queue.path)) == (0, 3)
    got = await queue.dequeue_many(["default"], 3, worker_id="w")
    # three tasks taken out of the first staged row, not the whole call moved in
    assert rows_of(Path(queue.path)) == (3, 3), "3 claimed task rows, 3 batches staged"
    got += await queue.dequeue_many(["default"], 20, worker_id="w")
    assert [t.id for t in got] == [t.id for t in batch]
    # a single id inside the call's range is still found in the right staged row
    assert await queue.enqueue(batch[9].copy(args=("again",))) is TaskStatus.RUNNING


async def test_list_and_count_expand_only_the_batches_they_cannot_skip(
    queue: AsyncSQLiteQueue,
) -> None:
    await queue.enqueue_many(tasks(4, queue="a"))
    await queue.enqueue_many(tasks(5, queue="b"))
    await queue.enqueue_many(tasks(2, queue="a") + tasks(2, queue="c"))  # spans queues
    assert len(await queue.list("a")) == 6  # the "a" batch and the mixed one
    assert rows_of(Path(queue.path)) == (8, 1)
    assert await queue.count("b", TaskStatus.PENDING) == 5
    assert rows_of(Path(queue.path)) == (8, 1)
    assert len(await queue.list("b", TaskStatus.SUCCESS)) == 0  # no staged task is final
    assert rows_of(Path(queue.path)) == (8, 1)


async def test_a_batch_row_that_disagrees_with_its_batch_is_not_claimed_from_it(
    queue: AsyncSQLiteQueue,
) -> None:
    """A staged row written by something else (a damaged or hostile store) whose queue or
    TTL disagree with the batch's columns: a claim must not take it straight out of the
    batch (it would run a task of another queue, or one past its TTL); the batch is
    expanded and each row goes where it says."""
    batch = tasks(6)
    await queue.enqueue_many(batch)  # staged: one row, queue 'default', no TTL
    hostile = list(batch)
    hostile[1] = Task(func="tests:noop", id=batch[1].id, queue="other")
    hostile[2] = Task(func="tests:noop", id=batch[2].id, expires_at=time.time() - 60)
    conn = sqlite3.connect(queue.path, isolation_level=None)
    conn.execute("UPDATE task_batches SET rows = ?", (_staging._pack(queue.serializer, hostile),))
    conn.close()
    got = await queue.dequeue_many(["default"], 10, worker_id="w")
    expected = [t.id for i, t in enumerate(batch) if i not in (1, 2)]
    assert [t.id for t in got] == expected, "only the default queue's live tasks are claimed"
    expired = await queue.get(batch[2].id)
    assert expired is not None and expired.status == TaskStatus.EXPIRED, expired
    other = await queue.dequeue_many(["other"], 10, worker_id="w")
    assert [t.id for t in other] == [batch[1].id], "the other queue's task waits in its queue"


async def test_claims_by_two_connections_from_one_batch_never_overlap(tmp_path: Path) -> None:
    """A connection remembers the staged batch it decoded or wrote last (a drain claims
    from one batch several times in a row); a claim by another connection (another
    worker process) rewrites the batch, and the remembered copy must not be used then:
    every claim takes the next tasks in claim order, none twice."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    async with AsyncSQLiteQueue(url, stage_min=4) as one, AsyncSQLiteQueue(url) as two:
        assert one.database is not two.database, "the test needs two connections"
        batch = tasks(900)
        await one.enqueue_many(batch)
        got: list[str] = []
        for q in (one, one, two, one, two, two, one):
            got += [t.id for t in await q.dequeue_many(["default"], 100, worker_id="w")]
        assert got == [t.id for t in batch[:700]], "claims follow claim order, none twice"
        assert rows_of(Path(one.path)) == (700, 1)
        rest = await two.dequeue_many(["default"], 500, worker_id="w")
        assert [t.id for t in rest] == [t.id for t in batch[700:]]
