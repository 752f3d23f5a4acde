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

import bisect
import itertools
import json
import logging
import random
import sqlite3
import time
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
#: the batches of a queue whose tasks are PENDING (not a claimed batch)
_OPEN_BATCHES = f"claim IS NULL AND {_QUEUE_BATCHES}"
#: claimed batches (see migration 5) whose lease lapsed (parameter: now)
LAPSED_CLAIMS = "claim IS NOT NULL AND lease_until < ?"
#: the batch whose tasks may come first in claim order, among those of a queue that
#: hold a task due by now
_NEXT_BATCH_SQL = (
    f"SELECT seq, prio_max, due_min, first_id FROM task_batches WHERE {_OPEN_BATCHES} "
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


def _unpack(blob: bytes, taken: int = 0, stop: int | None = None) -> Iterator[Encoded]:
    """The rows ``[taken, stop)`` of a staged batch's blob (the batch's tasks: those
    before were claimed out of it already), each task back in its stored form (header +
    msgpack)."""
    rows = _decoder.decode(zlib.decompress(blob))
    if not _fits(taken, stop, len(rows)):
        raise ValueError(f"its bounds [{taken!r}, {stop!r}) do not fit its {len(rows)} tasks")
    for tid, queue, prio, due, run_at, exp, created, raw in rows[taken:stop]:
        yield tid, queue, prio, due, run_at, exp, created, _HEADER + bytes(raw)


def _fits(taken: Any, stop: Any, n: int) -> bool:
    """True when a batch row's ``[taken, stop)`` is a slice of its ``n`` rows (only a
    row written by something other than this module, damaged or hostile, has other
    bounds: slicing by them would skip or repeat tasks, or raise at every claim)."""
    if type(taken) is not int or not 0 <= taken <= n:
        return False
    return stop is None or (type(stop) is int and taken <= stop <= n)


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
    """True when a staged batch may hold a task of ``queue``: a PENDING one due by
    ``due_by``, or (``due_by`` None) any task, claimed batches' RUNNING ones included."""
    if due_by is None:
        sql = f"SELECT 1 FROM task_batches WHERE {_QUEUE_BATCHES} LIMIT 1"
        return conn.execute(sql, (queue,)).fetchone() is not None
    sql = f"SELECT 1 FROM task_batches WHERE {_OPEN_BATCHES} AND due_min <= ? LIMIT 1"
    return conn.execute(sql, (queue, due_by)).fetchone() is not None


def has_lapsed_claims(conn: sqlite3.Connection, now: float) -> bool:
    """True when a claimed batch's lease lapsed (its tasks are to be recovered)."""
    sql = f"SELECT 1 FROM task_batches WHERE {LAPSED_CLAIMS} LIMIT 1"
    return conn.execute(sql, (now,)).fetchone() is not None


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
    those batches. A claimed batch's tasks are RUNNING (``size``: those not finished)."""
    if status not in (None, TaskStatus.PENDING, TaskStatus.EXPIRED, TaskStatus.RUNNING):
        return 0  # a staged task is PENDING, or EXPIRED once past its TTL, or RUNNING
    total = 0
    for batch_queue, expires_min, size, claim in conn.execute(
        "SELECT queue, expires_min, size, claim FROM task_batches WHERE error IS NULL"
    ):
        if queue is not None and batch_queue != queue:
            if batch_queue is None:
                return None
            continue
        if claim is not None:
            if status in (None, TaskStatus.RUNNING):
                total += size
            continue
        if status is TaskStatus.RUNNING:
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
UNCOUNTABLE = "claim IS NULL AND (queue IS NULL OR expires_min <= ?)"


def expand(conn: sqlite3.Connection, where: str = "1", params: Sequence[Any] = ()) -> int:
    """Move the staged batches matching the SQL condition ``where`` (all by default) into
    ``tasks``, in the caller's write transaction (begun here when one is needed);
    returns the number of tasks moved. A claimed batch's tasks become RUNNING rows
    (attempt 1, its worker and lease); those that finished have their row already.

    A blob that cannot be decoded is marked with its error and left in place (logged),
    so one damaged row never blocks the queue.
    """
    cond = f"error IS NULL AND ({where})"
    if conn.execute(f"SELECT 1 FROM task_batches WHERE {cond} LIMIT 1", params).fetchone() is None:
        return 0  # a read: no write lock taken when there is nothing to do
    begin_immediate(conn)
    moved = 0
    batches = conn.execute(
        "SELECT seq, size, rows, taken, stop, claim, worker_id, lease_until FROM task_batches "
        f"WHERE {cond} ORDER BY seq",
        params,
    ).fetchall()
    for seq, size, blob, taken, stop, claim, worker_id, lease_until in batches:
        try:
            rows = list(_unpack(blob, taken, stop))
        except (zlib.error, msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            message = f"staged batch cannot be decoded: {e}"
            log.error("SQLite task_batches row %s (%s tasks): %s", seq, size, message)
            conn.execute("UPDATE task_batches SET error = ? WHERE seq = ?", (message, seq))
            continue
        before = conn.total_changes
        if claim is not None:
            conn.executemany(INSERT_CLAIMED_SQL, [(*r, worker_id, lease_until) for r in rows])
            conn.execute("DELETE FROM task_batches WHERE seq = ?", (seq,))
            moved += conn.total_changes - before - 1
            continue
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
    "SELECT seq, prio_max, due_min, first_id, queue, expires_min, rows, taken "
    f"FROM task_batches WHERE {_OPEN_BATCHES} AND due_min <= ? "
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
    ``want`` become RUNNING (attempt 1, leased to ``worker_id``) and the batch keeps the
    others.

    When the batch's rows are stored in claim order with increasing ids (a ``map()``
    batch), the claimed ones are its next rows: they become a claimed batch (one row,
    the same blob, see migration 5) and their task rows are written once, when they
    finish (:func:`finish_claimed`). Otherwise they are inserted RUNNING. Either way a
    bulk drain never inserts a task PENDING to update it at once.

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
    batch = found[0]
    seq, prio_max, due_min, _, batch_queue, expires_min, blob, skip = batch
    if batch_queue != queue or (expires_min is not None and expires_min <= now):
        return []
    ready, rows, increasing = _batch_rows(conn, batch, now)
    if ready is None:
        return []  # undecodable, or a row written by something else: expand() handles it
    stored = [(-p, d, i) for p, d, i in conn.execute(_READY_KEYS_SQL, (queue, now, want))]
    bound = None
    if len(found) > 1:
        _, next_prio, next_due, next_first, *_ = found[1]
        bound = (-next_prio, next_due, next_first)
    taken: list[_Staged] = []
    if not stored:  # (a drain) the batch's first, up to the next batch's bound
        n = min(want, len(ready))
        if bound is not None:
            n = bisect.bisect_left(ready, bound, 0, n, key=_claim_key)
        taken = ready[:n]
    ahead = 0  # stored tasks before the next ready task of the batch
    for row in ready if stored else ():
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
    k = len(taken)
    if rows is ready and increasing and isinstance(conn, Connection):
        # the next k rows of the blob, with the lowest ids: a claimed batch of their own
        token = random.getrandbits(62)
        cur = conn.execute(
            "INSERT INTO task_batches (first_id, last_id, size, queue, expires_min, prio_max, "
            "due_min, rows, taken, stop, claim, worker_id, lease_until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (claimed[0][0], claimed[-1][0], k, queue, expires_min, prio_max, due_min, blob,
             skip, skip + k, token, worker_id, lease_until),
        )  # fmt: skip
        mine = conn.claimed
        if mine is None:
            mine = conn.claimed = {}
        elif len(mine) > _MAX_CLAIMED:  # finished elsewhere (failed, expanded...): forget them
            mine.clear()
        # no TTL in the batch, and rows in claim order have no delay: see _finish_params
        entry = (cur.lastrowid, token, expires_min is None)
        for enc in claimed:
            mine[enc[0]] = (entry, enc)
    else:
        conn.execute("SAVEPOINT claim_staged")
        before = conn.total_changes
        conn.executemany(INSERT_CLAIMED_SQL, [(*r, worker_id, lease_until) for r in claimed])
        if conn.total_changes - before != k:  # pragma: no cover - see expand()
            conn.execute("ROLLBACK TO claim_staged")
            conn.execute("RELEASE claim_staged")
            return []
        conn.execute("RELEASE claim_staged")
    if k == len(rows):
        conn.execute("DELETE FROM task_batches WHERE seq = ?", (seq,))
        return claimed
    if rows is ready:
        # every row left is ready and stored in claim order: the claim took the first
        # ones, and the blob stays as it is (no encoding, no compression, one small write)
        first_id = rows[k][0] if increasing else batch[3]  # ids below went to the claim
        conn.execute(
            "UPDATE task_batches SET size = ?, taken = taken + ?, first_id = ? WHERE seq = ?",
            (len(rows) - k, k, first_id, seq),
        )
        known = getattr(conn, "decoded_batch", None)
        if known is not None and known.columns[0] == seq and known.blob == blob:
            known.columns = (*known.columns[:3], first_id, *known.columns[4:])
        return claimed
    in_order = len(ready) == len(rows) and all(r[4] is None for r in rows)
    if in_order:
        left = ready[k:]  # written in claim order: the next claims take prefixes
    else:
        ids = {r[0] for r in taken}
        left = [r for r in rows if r[0] not in ids]
    blob = zlib.compress(_encoder.encode(left), 1)
    conn.execute(
        "UPDATE task_batches SET size = ?, rows = ?, taken = 0, first_id = ? WHERE seq = ?",
        (len(left), blob, min(r[0] for r in left), seq),
    )
    if in_order:
        _remember(conn, (*batch[:3], min(r[0] for r in left), *batch[4:]), blob, left)
    return claimed


#: Bound on the claimed tasks a connection remembers (see finish_claimed).
_MAX_CLAIMED = 100_000

#: A claimed task's final row, result included (its claimed batch stays its truth).
_FINISH_SQL = (
    "INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, created_at, "
    "data, attempt, worker_id, lease_until, result, result_expires) "
    "VALUES (?, ?, 'success', ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
#: The same for tasks without delay or TTL (most): NULL written in the statement. The
#: sqlite3 module binds int, float, str and bytearray directly, and looks anything else
#: (None, bytes) up in its adapter registry first, which costs more than the insert of
#: the row: hence the literals, and blobs bound as bytearray.
_FINISH_PLAIN_SQL = _FINISH_SQL.replace(
    "'success', ?, ?, ?, ?, ?, ?, 1,", "'success', ?, ?, NULL, NULL, ?, ?, 1,"
)


def finish_claimed(
    conn: sqlite3.Connection, claims: list[tuple[str, int]], results: list[tuple[bytes, Any]]
) -> tuple[set[str], list[int]]:
    """Complete, with their results, the claims that are tasks of a claimed batch this
    connection made (attempt 1): each gets its task row now, SUCCESS, in one insert.

    The fence: the claimed batch still exists (same ``claim`` token), so none of its
    unfinished tasks was handed to anyone else (expanding it, for a lapsed lease, a
    read, a cancel..., deletes it). Returns the ids completed and the indexes in
    ``claims`` left to the ordinary fenced update (first expanding what holds them).
    """
    mine: dict[str, Any] | None = getattr(conn, "claimed", None)
    if not mine:
        return set(), list(range(len(claims)))
    groups: dict[tuple[int, int, bool], list[tuple[int, Encoded]]] = {}
    rest: list[int] = []
    for i, (tid, attempt) in enumerate(claims):
        known = mine.pop(tid, None) if attempt == 1 else None
        if known is None:
            rest.append(i)
        else:
            groups.setdefault(known[0], []).append((i, known[1]))
    done: set[str] = set()
    now = time.time()  # when they ended (lease_until of a final row)
    for (seq, token, plain), items in groups.items():
        begin_immediate(conn)
        conn.execute("SAVEPOINT finish_claimed")
        row = conn.execute(
            "UPDATE task_batches SET size = size - ? WHERE seq = ? AND claim = ? "
            "RETURNING size, worker_id",
            (len(items), seq, token),
        ).fetchone()
        before = conn.total_changes
        if row is not None:
            conn.executemany(*_finish_params(items, results, row[1], now, plain))
        if row is None or conn.total_changes - before != len(items):
            # expanded or purged meanwhile (or, never seen, a row exists): the fenced
            # update decides, as for any other claim
            conn.execute("ROLLBACK TO finish_claimed")
            conn.execute("RELEASE finish_claimed")
            rest += [i for i, _ in items]
            continue
        conn.execute("RELEASE finish_claimed")
        if row[0] <= 0:
            conn.execute("DELETE FROM task_batches WHERE seq = ?", (seq,))
        done.update(r[0] for _, r in items)
    rest.sort()
    return done, rest


def _finish_params(
    items: list[tuple[int, Encoded]],
    results: list[tuple[bytes, Any]],
    worker: str,
    now: float,
    plain: bool,
) -> tuple[str, list[tuple[Any, ...]]]:
    """The statement and parameters of :func:`finish_claimed`'s insert; ``plain``: no
    task has a delay or a TTL."""
    ba = bytearray
    if plain:
        return _FINISH_PLAIN_SQL, [
            (r[0], r[1], r[2], r[3], r[6], ba(r[7]), worker, now, ba(res[0]), res[1])
            for i, r in items
            for res in (results[i],)
        ]
    return _FINISH_SQL, [
        (*r[:7], ba(r[7]), worker, now, ba(results[i][0]), results[i][1]) for i, r in items
    ]


class _DecodedBatch:
    """The last staged batch a connection decoded or wrote, with all its rows (the ones
    claimed out of it already included, see ``taken``), stored in claim order and all
    ready: a drain claims from one batch several times in a row, and then need not
    decode it again. Used only while the stored row (its columns and its blob, byte for
    byte) is the one remembered; another process's claim of the next rows advances
    ``taken`` (read each time) and ``first_id`` (checked against the rows left), any
    other change rewrites the blob or the columns."""

    __slots__ = ("blob", "columns", "increasing", "rows")

    def __init__(
        self, columns: tuple[Any, ...], blob: bytes, rows: list[_Staged], increasing: bool
    ) -> None:
        self.columns, self.blob, self.rows, self.increasing = columns, blob, rows, increasing


def _increasing(rows: Sequence[_Staged]) -> bool:
    return all(a[0] < b[0] for a, b in itertools.pairwise(rows))


def _remember(
    conn: sqlite3.Connection, batch: Sequence[Any], blob: bytes, rows: list[_Staged]
) -> None:
    if isinstance(conn, Connection):
        conn.decoded_batch = _DecodedBatch(tuple(batch[:6]), blob, rows, _increasing(rows))


def _batch_rows(
    conn: sqlite3.Connection, batch: Sequence[Any], now: float
) -> tuple[list[_Staged] | None, list[_Staged], bool]:
    """(ready rows in claim order, rows left, ids increasing) of a staged batch: the
    rows left are those past its ``taken`` first, in stored order. Ready is None when
    its blob cannot be decoded or a row disagrees with the batch (see
    :func:`_ready_rows`). When every row left is ready and stored in claim order, the
    two are the same list, and the flag tells whether their ids increase too."""
    blob, skip = batch[6], batch[7]
    if type(skip) is not int or skip < 0:
        return None, [], False  # damaged bounds: expand() marks the batch with its error
    known = getattr(conn, "decoded_batch", None)
    if known is not None and known.blob == blob:  # remembered only when all ready, in order
        columns = tuple(batch[:6])
        rest = known.rows[skip:] if skip else known.rows
        if known.columns == columns:
            return rest, rest, known.increasing
        if (
            known.increasing
            and known.columns[:3] == columns[:3]
            and known.columns[4:] == columns[4:]
            and rest
            and rest[0][0] >= columns[3]
        ):
            # another connection claimed the next rows (taken and first_id moved on):
            # what is left is still the rest of the same rows, the lowest id first
            known.columns = columns
            return rest, rest, True
    try:
        rows = _decoder.decode(zlib.decompress(blob))
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError):
        return None, [], False  # expand() marks the batch with its error
    if not _fits(skip, None, len(rows)):
        return None, [], False
    rest = rows[skip:]
    ready = _ready_rows(rest, batch, now)
    if (
        ready is not None
        and len(ready) == len(rest)
        and all(r[4] is None for r in rest)
        and all(a is b for a, b in zip(ready, rest, strict=True))
    ):
        _remember(conn, batch, blob, rows)
        return rest, rest, _increasing(rest)
    return ready, rest, False


def _ready_rows(rows: list[_Staged], batch: Sequence[Any], now: float) -> list[_Staged] | None:
    """The batch's rows ready by ``now``, in claim order; None when a row disagrees with
    its batch's columns (queue, earliest TTL, or the bounds the claim order relies on).
    Only a row written by something other than :func:`stage` (a damaged or hostile
    store) can; the claim then falls back to the plain expansion, so such a row can
    neither jump the claim order, nor run past its TTL, nor run in a worker of another
    queue."""
    _, prio_max, due_min, first_id, queue, expires_min, *_ = batch
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
