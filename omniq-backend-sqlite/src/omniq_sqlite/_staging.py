"""Staged bulk enqueue: a batch of new tasks written as one row, expanded when needed.

Inserting a task row costs three B-tree inserts (the table, the id index and the claim
index), which made bulk enqueue several times slower than a plain ``executemany`` of
small rows. A bulk enqueue of at least ``SQLiteOptions.stage_min`` new tasks without
dependencies therefore writes its task rows, already encoded, as blobs in
``task_batches`` (one row per :data:`BATCH_ROWS` tasks) and returns: the batch is as
durable as any commit.

A staged batch is moved into ``tasks`` (expanded) by the first write transaction that
needs one of its tasks, and only then:

- a claim expands, one batch at a time, the batches that may hold one of the tasks it is
  about to take: ``prio_max`` and ``due_min`` bound the claim order of a batch's tasks,
  so the claim order stays exactly the one the tasks would have had if inserted directly,
  while the insert work is spread over the drain instead of stalling one claim;
- ``get``/``cancel`` and an enqueue that names a staged id (as its own id or a
  dependency) expand the batch holding it; the TTL sweep the batches with an expired
  task; ``list`` and ``purge`` of one queue the batches that may hold its tasks;
- ``count`` reads the batch columns (queue, size, earliest TTL) and expands nothing,
  unless only the tasks can tell.

Idempotency by id stays exact: a batch is staged only when its ids are strictly
increasing and no stored or staged id lies between its first and last id (two range
probes); otherwise the ordinary insert runs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from omniq.models import Task, TaskStatus
from omniq.serialization.manager import SerializationManager
from omniq_sqlite._database import Connection, begin_immediate

log = logging.getLogger("omniq.sqlite")

#: (id, queue, priority, due, run_at, expires_at, created_at, data): a new task's row
Encoded = tuple[str, str, int, float, float | None, float | None, float, bytes]

#: The insert of new tasks (all PENDING); an id that exists already is skipped.
INSERT_NEW_SQL = (
    "INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, created_at, "
    "data) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)

#: Most tasks in one staged row: a claim that needs one of them expands them all.
BATCH_ROWS = 1000

_HAS_STAGED_SQL = "SELECT 1 FROM task_batches WHERE error IS NULL LIMIT 1"
# ranges are disjoint, so the batch starting last at or before an id is the only one
# that can hold it (and for a range: the one that overlaps it, if any does)
_RANGE_PROBE_SQL = (
    "SELECT seq, last_id FROM task_batches WHERE error IS NULL AND first_id <= ? "
    "ORDER BY first_id DESC LIMIT 1"
)
_ID_IN_RANGE_SQL = "SELECT 1 FROM tasks WHERE id BETWEEN ? AND ? LIMIT 1"
_QUEUE_BATCHES = "error IS NULL AND (queue = ? OR queue IS NULL)"
#: the batch whose tasks may come first in claim order, among those of a queue that
#: hold a task due by now
_NEXT_BATCH_SQL = (
    f"SELECT seq, prio_max, due_min, first_id FROM task_batches WHERE {_QUEUE_BATCHES} "
    "AND due_min <= ? ORDER BY prio_max DESC, due_min, first_id LIMIT 1"
)
_KTH_READY_SQL = (
    "SELECT priority, due, id FROM tasks WHERE queue = ? AND status = 'pending' "
    "AND (run_at IS NULL OR run_at <= ?) ORDER BY priority DESC, due, id LIMIT 1 OFFSET ?"
)

#: A staged row: the columns of Encoded, then the task as embedded msgpack.
_Staged = tuple[str, str, int, float, float | None, float | None, float, msgspec.Raw]
_decoder = msgspec.msgpack.Decoder(list[_Staged])
_HEADER = b"\x01"  # SerializationManager's msgpack header byte


def _pack(serializer: SerializationManager, tasks: Sequence[Task]) -> bytes:
    """The batch as one document: the tasks are encoded in the same call (no per-task
    encode), zlib level 1 on top: a map() batch is very repetitive (same function,
    queue, times, id prefixes), ~160 -> ~6 bytes per task for ~0.2 us, so the commit
    writes (and fsyncs) a fraction of the pages."""
    rows = [
        (t.id, t.queue, t.priority, t.created_at if t.run_at is None else t.run_at,
         t.run_at, t.expires_at, t.created_at, t)
        for t in tasks
    ]  # fmt: skip
    return zlib.compress(serializer.encode_raw(rows), 1)


def _unpack(blob: bytes) -> Iterator[Encoded]:
    """The rows of a staged batch, each task back in its stored form (header + msgpack)."""
    for tid, queue, prio, due, run_at, exp, created, raw in _decoder.decode(zlib.decompress(blob)):
        yield tid, queue, prio, due, run_at, exp, created, _HEADER + bytes(raw)


def _columns(tasks: Sequence[Task], blob: bytes) -> tuple[Any, ...]:
    """The task_batches row of one chunk of tasks."""
    queue: str | None = tasks[0].queue
    if any(t.queue != queue for t in tasks):
        queue = None
    ttls = [t.expires_at for t in tasks if t.expires_at is not None]
    due_min = min(t.created_at if t.run_at is None else t.run_at for t in tasks)
    return (
        tasks[0].id, tasks[-1].id, len(tasks), queue, min(ttls) if ttls else None,
        max(t.priority for t in tasks), due_min, blob,
    )  # fmt: skip


def has_staged(conn: sqlite3.Connection) -> bool:
    """True when a staged batch waits to be expanded (a read, no lock taken)."""
    return conn.execute(_HAS_STAGED_SQL).fetchone() is not None


def _holding(conn: sqlite3.Connection, first_id: str, last_id: str) -> int | None:
    """The staged batch whose id range meets ``[first_id, last_id]`` and starts last."""
    row = conn.execute(_RANGE_PROBE_SQL, (last_id,)).fetchone()
    return int(row[0]) if row is not None and row[1] >= first_id else None


def overlaps_staged(conn: sqlite3.Connection, first_id: str, last_id: str) -> bool:
    """True when a staged batch's id range meets ``[first_id, last_id]``."""
    return _holding(conn, first_id, last_id) is not None


def has_staged_for(conn: sqlite3.Connection, queue: str, due_by: float | None = None) -> bool:
    """True when a staged batch may hold a task of ``queue`` (due by ``due_by``)."""
    sql = f"SELECT 1 FROM task_batches WHERE {_QUEUE_BATCHES}"
    if due_by is None:
        return conn.execute(sql + " LIMIT 1", (queue,)).fetchone() is not None
    return conn.execute(sql + " AND due_min <= ? LIMIT 1", (queue, due_by)).fetchone() is not None


def stage(
    conn: sqlite3.Connection, serializer: SerializationManager, tasks: Sequence[Task]
) -> bool:
    """Write ``tasks`` (new, without dependencies) as staged batches.

    False, with nothing written, when the ids are not strictly increasing, a task asks
    for dill (encoded apart from the others), or an id stored or staged already may fall
    in their range: the caller inserts them row by row instead, which reports existing
    ids exactly.
    """
    if not tasks:
        return False
    first_id, last_id = tasks[0].id, tasks[-1].id
    prev = None
    for t in tasks:  # ids made by omniq.new_ids are increasing: one pass, no sort
        if (prev is not None and t.id <= prev) or t.serializer == "dill":
            return False
        prev = t.id
    chunks = [tasks[i : i + BATCH_ROWS] for i in range(0, len(tasks), BATCH_ROWS)]
    rows = [_columns(chunk, _pack(serializer, chunk)) for chunk in chunks]  # before the lock
    begin_immediate(conn)
    if conn.execute(_ID_IN_RANGE_SQL, (first_id, last_id)).fetchone() is not None:
        return False
    if overlaps_staged(conn, first_id, last_id):
        return False
    conn.executemany(
        "INSERT INTO task_batches (first_id, last_id, size, queue, expires_min, prio_max, "
        "due_min, rows) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return True


def staged_count(
    conn: sqlite3.Connection, queue: str | None, status: TaskStatus | None, now: float
) -> int | None:
    """How many staged tasks ``count(queue, status)`` must include, read from the batch
    columns alone; None when only expanding can tell (a batch spanning queues under a
    queue filter, or one whose earliest TTL has passed): :data:`UNCOUNTABLE` selects
    those batches."""
    if status not in (None, TaskStatus.PENDING, TaskStatus.EXPIRED):
        return 0  # a staged task is PENDING, or EXPIRED once past its TTL
    total = 0
    for batch_queue, expires_min, size in conn.execute(
        "SELECT queue, expires_min, size FROM task_batches WHERE error IS NULL"
    ):
        if queue is not None and batch_queue != queue:
            if batch_queue is None:
                return None
            continue
        some_expired = expires_min is not None and expires_min <= now
        if status is None:
            total += size
        elif some_expired:
            return None
        elif status is TaskStatus.PENDING:
            total += size
    return total


#: The batches staged_count cannot count (parameter: now).
UNCOUNTABLE = "queue IS NULL OR expires_min <= ?"


def expand(conn: sqlite3.Connection, where: str = "1", params: Sequence[Any] = ()) -> int:
    """Move the staged batches matching the SQL condition ``where`` (all by default) into
    ``tasks``, in the caller's write transaction (begun here when one is needed);
    returns the number of tasks moved.

    A blob that cannot be decoded is marked with its error and left in place (logged),
    so one damaged row never blocks the queue.
    """
    cond = f"error IS NULL AND ({where})"
    if conn.execute(f"SELECT 1 FROM task_batches WHERE {cond} LIMIT 1", params).fetchone() is None:
        return 0  # a read: no write lock taken when there is nothing to do
    begin_immediate(conn)
    moved = 0
    batches = conn.execute(
        f"SELECT seq, size, rows FROM task_batches WHERE {cond} ORDER BY seq", params
    ).fetchall()
    for seq, size, blob in batches:
        try:
            rows = list(_unpack(blob))
        except (zlib.error, msgspec.DecodeError, msgspec.ValidationError) as e:
            message = f"staged batch cannot be decoded: {e}"
            log.error("SQLite task_batches row %s (%s tasks): %s", seq, size, message)
            conn.execute("UPDATE task_batches SET error = ? WHERE seq = ?", (message, seq))
            continue
        before = conn.total_changes
        conn.executemany(INSERT_NEW_SQL, rows)
        inserted = conn.total_changes - before
        if inserted != len(rows):  # pragma: no cover - excluded by stage()'s range probes
            log.error(
                "SQLite staged batch %s: %d of %d task ids existed already and were skipped",
                seq, len(rows) - inserted, len(rows),
            )  # fmt: skip
        conn.execute("DELETE FROM task_batches WHERE seq = ?", (seq,))
        moved += inserted
    return moved


def expand_range(conn: sqlite3.Connection, first_id: str, last_id: str) -> int:
    """Expand the staged batches whose id range meets ``[first_id, last_id]``."""
    if not overlaps_staged(conn, first_id, last_id):
        return 0
    return expand(conn, "first_id <= ? AND last_id >= ?", (last_id, first_id))


def expand_ids(conn: sqlite3.Connection, ids: Iterable[str]) -> int:
    """Expand the staged batches holding any of ``ids``."""
    if not has_staged(conn):
        return 0
    seqs = {seq for tid in ids if (seq := _holding(conn, tid, tid)) is not None}
    if not seqs:
        return 0
    return expand(conn, "seq IN (SELECT value FROM json_each(?))", (json.dumps(sorted(seqs)),))


def expand_for_claim(conn: sqlite3.Connection, queue: str, want: int, now: float) -> None:
    """Expand, one batch at a time, the staged batches that may hold one of the next
    ``want`` ready tasks of ``queue`` in claim order (priority, due time, id).

    A batch's ``(prio_max, due_min, first_id)`` sorts no later than any of its tasks:
    once it sorts after the ``want``-th ready task in ``tasks``, no staged task can be
    among the next ``want``.
    """
    while True:
        batch = conn.execute(_NEXT_BATCH_SQL, (queue, now)).fetchone()
        if batch is None:
            return
        seq, prio_max, due_min, first_id = batch
        kth = conn.execute(_KTH_READY_SQL, (queue, now, want - 1)).fetchone()
        if kth is not None and (-kth[0], kth[1], kth[2]) < (-prio_max, due_min, first_id):
            return
        expand(conn, "seq = ?", (seq,))


#: The insert of staged tasks claimed as they are taken out (attempt 1, leased).
INSERT_CLAIMED_SQL = (
    "INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, created_at, "
    "data, attempt, worker_id, lease_until) "
    "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_NEXT_BATCHES_SQL = (
    "SELECT seq, prio_max, due_min, first_id, queue, expires_min, rows "
    f"FROM task_batches WHERE {_QUEUE_BATCHES} AND due_min <= ? "
    "ORDER BY prio_max DESC, due_min, first_id LIMIT 2"
)
_READY_KEYS_SQL = (
    "SELECT priority, due, id FROM tasks WHERE queue = ? AND status = 'pending' "
    "AND (run_at IS NULL OR run_at <= ?) ORDER BY priority DESC, due, id LIMIT ?"
)
_encoder = msgspec.msgpack.Encoder()


def claim_staged(
    conn: sqlite3.Connection, queue: str, want: int, now: float, worker_id: str, lease_until: float
) -> list[Encoded]:
    """Claim up to ``want`` tasks straight out of the staged batch that comes first in
    claim order, in the caller's write transaction: the ones sure to be among the next
    ``want`` are inserted RUNNING (attempt 1, leased to ``worker_id``) and the batch keeps
    the others. A bulk drain then writes each task's row once, instead of inserting it
    PENDING and updating it at once (two more index moves per task).

    "Sure" means: among the ``want`` first of this batch's ready tasks and the ready
    tasks in ``tasks``, and sorting before the bound of the next staged batch (which
    sorts no later than any of its tasks). The batch keeps its bounds (still bounds of
    what is left) and range. Returns the claimed rows; none, with nothing written, when
    the batch spans queues or holds a task past its TTL (the ordinary claim reports those)
    or an id was stored meanwhile: the caller then expands and claims as usual.
    """
    found = conn.execute(_NEXT_BATCHES_SQL, (queue, now)).fetchall()
    if not found:
        return []
    seq, _, _, _, batch_queue, expires_min, blob = found[0]
    if batch_queue != queue or (expires_min is not None and expires_min <= now):
        return []
    ready, rows = _batch_rows(conn, found[0], now)
    if ready is None:
        return []  # undecodable, or a row written by something else: expand() handles it
    stored = [(-p, d, i) for p, d, i in conn.execute(_READY_KEYS_SQL, (queue, now, want))]
    bound = None
    if len(found) > 1:
        _, next_prio, next_due, next_first, *_ = found[1]
        bound = (-next_prio, next_due, next_first)
    taken: list[_Staged] = []
    ahead = 0  # stored tasks before the next ready task of the batch
    for row in ready:
        key = _claim_key(row)
        while ahead < len(stored) and stored[ahead] < key:
            ahead += 1
        if len(taken) + ahead >= want or (bound is not None and key >= bound):
            break
        taken.append(row)
    if not taken:
        return []
    claimed: list[Encoded] = [(*r[:7], _HEADER + bytes(r[7])) for r in taken]
    begin_immediate(conn)
    conn.execute("SAVEPOINT claim_staged")
    before = conn.total_changes
    conn.executemany(INSERT_CLAIMED_SQL, [(*r, worker_id, lease_until) for r in claimed])
    if conn.total_changes - before != len(taken):  # pragma: no cover - see expand()
        conn.execute("ROLLBACK TO claim_staged")
        conn.execute("RELEASE claim_staged")
        return []
    conn.execute("RELEASE claim_staged")
    if len(taken) == len(rows):
        conn.execute("DELETE FROM task_batches WHERE seq = ?", (seq,))
        return claimed
    if rows is ready:  # every row ready, in claim order: the rest is what follows
        left = ready[len(taken) :]
    else:
        ids = {r[0] for r in taken}
        left = [r for r in rows if r[0] not in ids]
    blob = zlib.compress(_encoder.encode(left), 1)
    conn.execute("UPDATE task_batches SET size = ?, rows = ? WHERE seq = ?", (len(left), blob, seq))
    if rows is ready:
        _remember(conn, found[0], blob, left)
    return claimed


class _DecodedBatch:
    """The last staged batch a connection decoded or wrote, with its rows in claim order:
    a drain claims from one batch several times in a row, and then need not decode what
    it has just encoded. Used only while the stored row (its columns and its blob, byte
    for byte) is the one remembered: another process's claim changes it."""

    __slots__ = ("blob", "columns", "rows")

    def __init__(self, columns: tuple[Any, ...], blob: bytes, rows: list[_Staged]) -> None:
        self.columns, self.blob, self.rows = columns, blob, rows


def _remember(
    conn: sqlite3.Connection, batch: Sequence[Any], blob: bytes, rows: list[_Staged]
) -> None:
    if isinstance(conn, Connection):
        conn.decoded_batch = _DecodedBatch(tuple(batch[:6]), blob, rows)


def _batch_rows(
    conn: sqlite3.Connection, batch: Sequence[Any], now: float
) -> tuple[list[_Staged] | None, list[_Staged]]:
    """(ready rows in claim order, all rows) of a staged batch; ready is None when its
    blob cannot be decoded or a row disagrees with the batch (see :func:`_ready_rows`).
    When every row is ready the two are the same list."""
    blob = batch[6]
    known = getattr(conn, "decoded_batch", None)
    if known is not None and known.blob == blob and known.columns == tuple(batch[:6]):
        return known.rows, known.rows  # remembered only when every row was ready
    try:
        rows = _decoder.decode(zlib.decompress(blob))
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError):
        return None, []  # expand() marks the batch with its error
    ready = _ready_rows(rows, batch, now)
    if ready is not None and len(ready) == len(rows) and all(r[4] is None for r in rows):
        _remember(conn, batch, blob, ready)
        return ready, ready
    return ready, rows


def _ready_rows(rows: list[_Staged], batch: Sequence[Any], now: float) -> list[_Staged] | None:
    """The batch's rows ready by ``now``, in claim order; None when a row disagrees with
    its batch's columns (queue, earliest TTL, or the bounds the claim order relies on).
    Only a row written by something other than :func:`stage` (a damaged or hostile
    store) can; the claim then falls back to the plain expansion, so such a row can
    neither jump the claim order, nor run past its TTL, nor run in a worker of another
    queue."""
    _, prio_max, due_min, first_id, queue, expires_min, _ = batch
    ready = []
    for row in rows:
        if row[1] != queue or row[2] > prio_max or row[3] < due_min or row[0] < first_id:
            return None
        if row[5] is not None and (expires_min is None or row[5] < expires_min):
            return None
        if row[4] is None or row[4] <= now:
            ready.append(row)
    ready.sort(key=_claim_key)
    return ready


def _claim_key(row: Encoded | _Staged) -> tuple[int, float, str]:
    """Claim order of a staged row: priority (high first), due time, id."""
    return -row[2], row[3], row[0]
