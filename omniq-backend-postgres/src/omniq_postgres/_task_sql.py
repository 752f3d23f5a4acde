"""Task-queue statements: plain async functions over one asyncpg connection.

A task is stored as its encoded bytes (``data``) plus the columns needed to claim and
filter it. The columns are the truth for the mutable fields (status, attempt, lease,
worker, error, run_at); the bytes hold everything else and are never rewritten, so a
claim, a completion or a heartbeat is one small UPDATE. Times are Unix seconds
(``double precision``), as on every backend.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg  # type: ignore[import-untyped]

from omniq import rules
from omniq.errors import SerializationError
from omniq.models import Task, TaskStatus, WorkerInfo, decode_worker, encode_worker
from omniq.models.enums import FINAL_STATUSES
from omniq.serialization.manager import SerializationManager
from omniq.storage.columns import TASK_COLUMNS, as_claimed, task_from_row, task_row

log = logging.getLogger("omniq.postgres")

#: An asyncpg connection (asyncpg ships no type information).
Conn: TypeAlias = Any
#: A new task's row: id, queue, priority, due, run_at, expires_at, created_at, data.
Encoded = tuple[str, str, int, float, float | None, float | None, float, bytes]

FINAL = sorted(s.value for s in FINAL_STATUSES)


_UNNEST_NEW = (
    "unnest($1::text[], $2::text[], $3::int[], $4::float8[], $5::float8[], $6::float8[], "
    "$7::float8[], $8::bytea[]) AS n(id, queue, priority, due, run_at, expires_at, "
    "created_at, data)"
)
#: Multi-row insert of tasks without dependencies (the ``tasks_added`` trigger of
#: migration 4 wakes idle workers at commit).
INSERT_NEW_SQL = f"""
INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, created_at, data)
SELECT id, queue, 'pending', priority, due, run_at, expires_at, created_at, data
FROM {_UNNEST_NEW}
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
INSERT_ONE_SQL = (
    "INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, created_at, "
    "data, error, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
    "ON CONFLICT (id) DO NOTHING"
)

#: A claim of one queue: the function of migration 2 (the statement with a fixed plan).
CLAIM_SQL = "SELECT * FROM omniq_claim($1, $2, $3, $4, $5::float8, $6)"
#: The same claim resumed after a queue's last full claim: the function of migration 4.
CLAIM_AFTER_SQL = (
    "SELECT * FROM omniq_claim_after($1, $2, $3, $4, $5::float8, $6, $7, $8::float8, $9)"
)
#: Where a queue's last full claim ended, in claim order: (priority, due, seq).
Hint = tuple[int, float, int]
#: When an idle waiter should look again: the next delayed task or lease end.
NEXT_DUE_SQL = """
SELECT min(w) FROM unnest($1::text[]) AS q(name), LATERAL (
    (SELECT run_at AS w FROM tasks
     WHERE queue = q.name AND status = 'pending' AND run_at IS NOT NULL
     ORDER BY run_at LIMIT 1)
    UNION ALL
    (SELECT lease_until FROM tasks WHERE queue = q.name AND status = 'running'
     ORDER BY lease_until LIMIT 1)
) AS s
"""
#: Complete claims (fenced by attempt): the function of migration 2; the ids completed.
COMPLETE_MANY_SQL = "SELECT * FROM omniq_complete($1::text[], $2::int[], $3::float8)"
#: Complete the current claims and write their results in one statement (one
#: transaction): the fence (status and attempt) decides which results are written.
#: The function of migration 5: rows of (id completed, whether some stored task depends
#: on one of the completed ones).
FINISH_SQL = (
    "SELECT * FROM omniq_finish($1::text[], $2::int[], $3::float8, "
    "$4::text[], $5::text[], $6::float8[], $7::float8[], $8::bytea[], $9)"
)
FAIL_SQL = """
UPDATE tasks SET status = $3, error = $4, lease_until = NULL,
    run_at = coalesce($5, run_at), due = coalesce($5, due),
    finished_at = CASE WHEN $3 = 'failed' THEN $6::float8 END
WHERE id = $1 AND status = 'running' AND attempt = $2
"""
HEARTBEAT_SQL = (
    "UPDATE tasks SET lease_until = $3 WHERE id = $1 AND status = 'running' AND attempt = $2"
)
UNCLAIM_SQL = (
    "UPDATE tasks SET status = 'pending', lease_until = NULL, attempt = attempt - 1 "
    "WHERE id = $1 AND status = 'running' AND attempt = $2"
)
UNCLAIM_MANY_SQL = """
UPDATE tasks AS t SET status = 'pending', lease_until = NULL, attempt = t.attempt - 1
FROM unnest($1::text[], $2::int[]) AS c(id, attempt)
WHERE t.id = ANY($1::text[]) AND t.id = c.id AND t.status = 'running'
        AND t.attempt = c.attempt
"""

Row = Any


# --- rows <-> tasks ------------------------------------------------------------------------


def effective(status: str, expires_at: float | None, now: float) -> TaskStatus:
    """A row's status as a reader sees it (see :func:`omniq.rules.effective_status`)."""
    return rules.effective_status(TaskStatus(status), expires_at, now)


def _columns(rows: Sequence[Encoded]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


# --- enqueue -------------------------------------------------------------------------------


async def insert_new(conn: Conn, rows: Sequence[Encoded]) -> set[str]:
    """Insert tasks without dependencies in one statement; the ids inserted (an id that
    exists already is left unchanged)."""
    inserted = await conn.fetch(INSERT_NEW_SQL, *_columns(rows))
    return {r[0] for r in inserted}


#: Columns a bulk enqueue COPYs when no task of the batch is delayed or has a TTL (the
#: status takes its default, ``pending``; run_at and expires_at stay NULL).
COPY_COLUMNS = ("id", "queue", "priority", "due", "created_at", "data")
#: Columns a bulk enqueue COPYs otherwise.
COPY_COLUMNS_TIMED = (
    "id", "queue", "priority", "due", "run_at", "expires_at", "created_at", "data",
)  # fmt: skip
#: Smallest batch sent by COPY: below it one INSERT statement is as cheap.
COPY_MIN = 16


#: A bulk enqueue's tasks by queue (all pending), counted in its transaction, which
#: this marks as counting its own inserts (the ``tasks_counted_insert`` row trigger of
#: migration 6 then leaves them alone). There is at least one row: the WHERE runs.
COUNT_COPIED_SQL = (
    "INSERT INTO task_counts (queue, status, n) "
    "SELECT q, 'pending', n FROM unnest($1::text[], $2::bigint[]) AS c(q, n) "
    "WHERE set_config('omniq.counted', 'on', true) = 'on'"
)


async def copy_new(conn: Conn, schema: str, tasks: Sequence[Task], data: Sequence[bytes]) -> bool:
    """Store new tasks (``data``: their encoded bytes, in order) with one ``COPY``
    (binary) and count them by queue, in one transaction; the ``tasks_added`` trigger
    wakes idle workers at its commit.

    COPY is all or nothing: when one of the ids is stored already, nothing is written
    and the answer is False (the caller then takes the ``ON CONFLICT`` insert, which
    leaves existing tasks unchanged). The ids of ``tasks`` must be distinct.

    Only the columns the batch sets are sent, and the rows are made as COPY reads them
    (no list of row tuples is kept: bulk enqueue allocates little that outlives it).
    """
    queues = Counter(t.queue for t in tasks)
    records: Any
    columns: tuple[str, ...]
    if any(t.run_at is not None or t.expires_at is not None for t in tasks):
        columns = COPY_COLUMNS_TIMED
        records = (
            (t.id, t.queue, t.priority, t.created_at if t.run_at is None else t.run_at,
             t.run_at, t.expires_at, t.created_at, d)
            for t, d in zip(tasks, data, strict=True)
        )  # fmt: skip
    else:
        columns = COPY_COLUMNS  # due is the creation time when a task is not delayed
        records = (
            (t.id, t.queue, t.priority, t.created_at, t.created_at, d)
            for t, d in zip(tasks, data, strict=True)
        )
    try:
        async with conn.transaction():
            await conn.execute(COUNT_COPIED_SQL, list(queues), list(queues.values()))
            await conn.copy_records_to_table(
                "tasks", records=records, columns=columns, schema_name=schema
            )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def statuses_of(conn: Conn, ids: Sequence[str], now: float) -> dict[str, TaskStatus]:
    """Effective statuses of the stored tasks among ``ids``."""
    rows = await conn.fetch(
        "SELECT id, status, expires_at FROM tasks WHERE id = ANY($1::text[])", list(ids)
    )
    return {r[0]: effective(r[1], r[2], now) for r in rows}


async def enqueue_general(conn: Conn, items: Sequence[tuple[Task, Encoded]]) -> list[TaskStatus]:
    """Insert tasks with dependencies (and report existing ids' statuses), in one
    transaction (the ``tasks_added`` trigger wakes idle workers at its commit). The
    dependencies are read ``FOR SHARE``: one completing concurrently waits for this
    commit, so its release walk sees the new WAITING task."""
    now = time.time()
    statuses: list[TaskStatus] = []
    async with conn.transaction():
        known = await statuses_of(conn, [t.id for t, _ in items], now)
        for task, (tid, queue, prio, due, run_at, exp, created, data) in items:
            if tid in known:
                statuses.append(known[tid])
                continue
            status, reason = TaskStatus.PENDING, None
            deps = list(task.depends_on)
            if deps:
                rows = await conn.fetch(
                    "SELECT id, status, expires_at FROM tasks WHERE id = ANY($1::text[]) "
                    "ORDER BY id FOR SHARE",
                    deps,
                )
                found = {r[0]: effective(r[1], r[2], now) for r in rows}
                status, failed = rules.dependency_outcome([found.get(d) for d in deps])
                if failed is not None:
                    reason = rules.dependency_failed(deps[failed])
            finished = now if status is TaskStatus.CANCELLED else None
            await conn.execute(
                INSERT_ONE_SQL, tid, queue, status.value, prio, due, run_at, exp, created,
                data, reason, finished,
            )  # fmt: skip
            if status is TaskStatus.WAITING:
                await conn.executemany(
                    "INSERT INTO task_deps (depends_on, task_id, pos) VALUES ($1, $2, $3) "
                    "ON CONFLICT DO NOTHING",
                    [(d, tid, i) for i, d in enumerate(deps)],
                )
            known[tid] = effective(status.value, exp, now)
            statuses.append(status)
    return statuses


# --- claim ---------------------------------------------------------------------------------


async def claim(
    conn: Conn,
    serializer: SerializationManager,
    queues: Sequence[str],
    limit: int,
    worker_id: str,
    lease: float,
    hints: dict[str, Hint] | None = None,
) -> list[Task]:
    """Claim up to ``limit`` ready tasks: queue order, then priority, then due time.

    Tasks whose lease lapsed are claimed again (``attempt + 1``). Tasks found past
    their TTL are marked EXPIRED (reported by ``cleanup_expired``); a task whose payload
    cannot be decoded is marked FAILED and the claim goes on.

    ``hints`` (queue -> where its last full claim ended), when given, is used and
    updated: every ready task before a hint was claimed then (or was locked by another
    claim), so a claim resumes after it, and claims from the start when that finds too
    few. The caller drops the hints whenever tasks may have been added or put back
    since (a tasks notification), and now and then anyway.
    """
    now = time.time()
    claimed: list[Task] = []
    decode = serializer.decode_task
    end = now + lease
    for queue in queues:
        while len(claimed) < limit:
            want = limit - len(claimed)
            hint = None if hints is None else hints.pop(queue, None)
            if hint is None:
                rows = await conn.fetch(
                    CLAIM_SQL, queue, now, want, worker_id, end, rules.EXPIRED_MESSAGE
                )
            else:
                rows = await conn.fetch(
                    CLAIM_AFTER_SQL, queue, now, want, worker_id, end, rules.EXPIRED_MESSAGE,
                    *hint,
                )  # fmt: skip
            rows.sort(key=lambda r: (-r[2], r[3], r[4]))
            if hints is not None and len(rows) == want:
                hints[queue] = (rows[-1][2], rows[-1][3], rows[-1][4])
            for tid, status, _, _, _, run_at, attempt, lease_until, worker, error, data in rows:
                if status != "running":
                    continue  # expired at claim time
                try:
                    task = decode(bytes(data))
                except SerializationError as e:
                    await fail_corrupt(conn, tid, str(e), now)
                    continue
                claimed.append(as_claimed(task, tid, attempt, lease_until, worker, error, run_at))
            if len(rows) < want and hint is None:
                break  # this queue has nothing more (after a hint: look from the start)
        if len(claimed) >= limit:
            break
    return claimed


async def next_due(conn: Conn, queues: Sequence[str]) -> float | None:
    """The earliest time a delayed task of ``queues`` becomes due or a lease ends."""
    value = await conn.fetchval(NEXT_DUE_SQL, list(queues))
    return None if value is None else float(value)


async def fail_corrupt(conn: Conn, task_id: str, reason: str, now: float) -> None:
    """Mark a task whose payload cannot be decoded FAILED (and cancel its dependents)."""
    message = f"stored payload of task {task_id} cannot be decoded: {reason}"
    log.error("PostgreSQL queue: %s; marked the task FAILED", message)
    await conn.execute(
        "UPDATE tasks SET status = 'failed', finished_at = $2, lease_until = NULL, "
        "error = $3 WHERE id = $1",
        task_id, now, message,
    )  # fmt: skip
    await release_many(conn, [task_id], False, now)


async def unclaim_many(conn: Conn, claims: Sequence[tuple[str, int]]) -> None:
    """Hand back claims that never reached a caller (it was cancelled meanwhile)."""
    await conn.execute(UNCLAIM_MANY_SQL, [c[0] for c in claims], [c[1] for c in claims])


# --- fenced updates ------------------------------------------------------------------------


async def complete_many(conn: Conn, claims: Sequence[tuple[str, int]]) -> list[bool]:
    """Mark claimed tasks SUCCESS in one statement: True where the claim was current."""
    rows = await conn.fetch(
        COMPLETE_MANY_SQL, [c[0] for c in claims], [c[1] for c in claims], time.time()
    )
    return accepted(claims, {r[0] for r in rows})


def accepted(claims: Sequence[tuple[str, int]], updated: set[str]) -> list[bool]:
    """One bool per claim; a task given twice is completed once."""
    ok: list[bool] = []
    for tid, _ in claims:
        ok.append(tid in updated)
        updated.discard(tid)
    return ok


async def fail(
    conn: Conn, task_id: str, attempt: int, retry_at: float | None, error: str | None
) -> bool:
    """PENDING again at ``retry_at`` or FAILED; False for a stale claim."""
    status = "failed" if retry_at is None else "pending"
    result = await conn.execute(FAIL_SQL, task_id, attempt, status, error, retry_at, time.time())
    return bool(result == "UPDATE 1")


async def heartbeat(conn: Conn, task_id: str, attempt: int, lease: float) -> bool:
    """Extend a current claim's lease."""
    result = await conn.execute(HEARTBEAT_SQL, task_id, attempt, time.time() + lease)
    return bool(result == "UPDATE 1")


async def unclaim(conn: Conn, task_id: str, attempt: int) -> bool:
    """Give a current claim back uncounted."""
    return bool(await conn.execute(UNCLAIM_SQL, task_id, attempt) == "UPDATE 1")


# --- dependencies --------------------------------------------------------------------------


async def has_dependents(conn: Conn, task_ids: Sequence[str]) -> bool:
    """True when some stored task depends on one of ``task_ids``."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM task_deps WHERE depends_on = ANY($1::text[]))",
            list(task_ids),
        )
    )


async def release_many(
    conn: Conn, task_ids: Sequence[str], succeeded: bool, now: float | None = None
) -> tuple[list[str], list[str]]:
    """Release or (transitively) cancel the waiting dependents of several tasks, in
    one transaction (the release walk of :mod:`omniq.rules`). Nothing is written when
    none of them has dependents."""
    if not task_ids or not await has_dependents(conn, task_ids):
        return [], []
    now = time.time() if now is None else now
    ready: list[str] = []
    cancelled: list[str] = []
    async with conn.transaction():
        ended = [(tid, succeeded) for tid in task_ids]
        while ended:
            step = rules.release_step(ended, await _waiting_dependents(conn, ended, now))
            if step.ready:
                await conn.execute(
                    "UPDATE tasks SET status = 'pending' WHERE id = ANY($1::text[]) "
                    "AND status = 'waiting'",
                    step.ready,
                )
            if step.cancelled:
                await conn.execute(
                    "UPDATE tasks AS t SET status = 'cancelled', error = c.reason, "
                    "finished_at = $3 FROM unnest($1::text[], $2::text[]) AS c(id, reason) "
                    "WHERE t.id = c.id AND t.status = 'waiting'",
                    [t for t, _ in step.cancelled], [r for _, r in step.cancelled], now,
                )  # fmt: skip
            done = [*step.ready, *(t for t, _ in step.cancelled)]
            if done:
                await conn.execute("DELETE FROM task_deps WHERE task_id = ANY($1::text[])", done)
            ready += step.ready
            cancelled += [t for t, _ in step.cancelled]
            ended = step.next_ended
    return ready, cancelled


async def _waiting_dependents(
    conn: Conn, ended: list[tuple[str, bool]], now: float
) -> list[rules.WaitingDependent]:
    """The WAITING dependents of the ended tasks (locked), with their dependencies'
    effective statuses."""
    ids = [tid for tid, _ in ended]
    pairs = await conn.fetch(
        "SELECT d.depends_on, d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id "
        "WHERE d.depends_on = ANY($1::text[]) AND t.status = 'waiting' "
        "ORDER BY d.task_id FOR UPDATE OF t",
        ids,
    )
    if not pairs:
        return []
    by_ended: dict[str, list[str]] = {}
    for ended_id, dep_id in pairs:
        by_ended.setdefault(ended_id, []).append(dep_id)
    rows = await conn.fetch(
        "SELECT d.task_id, d.depends_on, t.status, t.expires_at FROM task_deps d "
        "LEFT JOIN tasks t ON t.id = d.depends_on WHERE d.task_id = ANY($1::text[]) "
        "ORDER BY d.task_id, d.pos",
        sorted({p[1] for p in pairs}),
    )
    deps: dict[str, list[tuple[str, TaskStatus | None]]] = {}
    for task_id, dep, status, expires_at in rows:
        st = None if status is None else effective(status, expires_at, now)
        deps.setdefault(task_id, []).append((dep, st))
    found: list[rules.WaitingDependent] = []
    for tid in ids:
        for dep_id in by_ended.get(tid, []):
            of = deps.get(dep_id, [])
            found.append(
                rules.WaitingDependent(
                    task_id=dep_id,
                    ended=tid,
                    dependencies=[d for d, _ in of],
                    statuses=[s for _, s in of],
                )
            )
    return found


# --- reads, cancel, purge, expiry, pruning ---------------------------------------------------


def status_filter(status: TaskStatus | None, now: float, first: int) -> tuple[str, list[Any]]:
    """SQL condition selecting tasks whose *effective* status is ``status`` (parameters
    numbered from ``first``)."""
    expired = f"(expires_at IS NOT NULL AND expires_at <= ${first})"
    if status is None:
        return "true", []
    if status in (TaskStatus.PENDING, TaskStatus.WAITING):
        return f"status = ${first + 1} AND NOT {expired}", [now, status.value]
    if status is TaskStatus.EXPIRED:
        return f"(status = 'expired' OR (status IN ('pending', 'waiting') AND {expired}))", [now]
    return f"status = ${first}", [status.value]


def _where(queue: str | None, status: TaskStatus | None, now: float) -> tuple[str, list[Any]]:
    params: list[Any] = []
    conds: list[str] = []
    if queue is not None:
        params.append(queue)
        conds.append("queue = $1")
    cond, more = status_filter(status, now, len(params) + 1)
    conds.append(cond)
    return " AND ".join(conds), [*params, *more]


async def select_tasks(
    conn: Conn,
    serializer: SerializationManager,
    queue: str | None,
    status: TaskStatus | None,
    limit: int,
    newest_first: bool = False,
    offset: int = 0,
) -> list[Task]:
    """Tasks in insertion order, filtered by queue and effective status, the first
    ``offset`` of them skipped."""
    now = time.time()
    cond, params = _where(queue, status, now)
    n = len(params)
    rows = await conn.fetch(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE {cond} "
        f"ORDER BY seq{' DESC' if newest_first else ''} LIMIT ${n + 1} OFFSET ${n + 2}",
        *params,
        max(0, min(limit, 2**62)),
        max(0, min(offset, 2**62)),
    )
    return [task_from_row(serializer, row, now) for row in rows]


async def get_task(conn: Conn, serializer: SerializationManager, task_id: str) -> Task | None:
    """One stored task with its effective status."""
    row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1", task_id)
    return None if row is None else task_from_row(serializer, row, time.time())


#: Rows of ``task_counts`` beyond which a count folds them (one per queue and status).
COUNT_ROWS_FOLDED = 200
#: Fold ``task_counts``: one row per (queue, status) whose sum is not zero. A row added
#: meanwhile is either deleted and summed here or left as it is: the sums stay exact,
#: and a concurrent fold skips the rows this one deleted.
FOLD_COUNTS_SQL = """
WITH gone AS (DELETE FROM task_counts RETURNING queue, status, n)
INSERT INTO task_counts (queue, status, n)
SELECT queue, status, sum(n) FROM gone GROUP BY queue, status HAVING sum(n) <> 0
"""


async def fold_counts(conn: Conn) -> None:
    """Fold ``task_counts`` when it holds more than ``COUNT_ROWS_FOLDED`` rows."""
    if await conn.fetchval(f"SELECT count(*) > {COUNT_ROWS_FOLDED} FROM task_counts"):
        await conn.execute(FOLD_COUNTS_SQL)


async def count_tasks(conn: Conn, queue: str | None, status: TaskStatus | None) -> int:
    """Number of tasks by queue and effective status: the sums of ``task_counts``
    (kept by triggers, migration 5, and by bulk enqueues, migration 6), corrected for
    pending and waiting tasks past their TTL that the sweep has not marked EXPIRED yet
    (found on ``tasks_expiry``)."""
    params: list[Any] = [time.time()]
    where: list[str] = []
    if queue is not None:
        params.append(queue)
        where.append(f"queue = ${len(params)}")
    stored = status.value if status is not None else None
    if status is TaskStatus.EXPIRED:
        late, sign = "true", "+"  # pending or waiting past the TTL: expired already
    elif status in (TaskStatus.PENDING, TaskStatus.WAITING):
        late, sign = f"status = '{stored}'", "-"
    else:
        late, sign = "false", "-"
    counted = [*where]
    if stored is not None:
        params.append(stored)
        counted.append(f"status = ${len(params)}")
    cond = " AND ".join(counted) or "true"
    late_cond = " AND ".join([*where, late]) or "true"
    # the fence (OFFSET 0) keeps the scan of late tasks on tasks_expiry, whatever the
    # statistics say: the queue's own indexes would visit its every pending task
    row = await conn.fetchrow(
        f"SELECT coalesce(sum(n), 0), count(*), (SELECT count(*) FROM ("
        "SELECT queue, status FROM tasks WHERE status IN ('pending', 'waiting') "
        f"AND expires_at IS NOT NULL AND expires_at <= $1 OFFSET 0) AS late "
        f"WHERE {late_cond}) FROM task_counts WHERE {cond}",
        *params,
    )
    total, rows, late_n = row
    if rows > COUNT_ROWS_FOLDED:
        await conn.execute(FOLD_COUNTS_SQL)
    return int(total) + int(late_n) if sign == "+" else int(total) - int(late_n)


async def cancel(conn: Conn, task_id: str, reason: str) -> bool:
    """Cancel a task that is not (effectively) final."""
    now = time.time()
    async with conn.transaction():
        result = await conn.execute(
            "UPDATE tasks SET status = 'cancelled', finished_at = $2, lease_until = NULL, "
            "error = $3 WHERE id = $1 AND (status = 'running' OR "
            "(status IN ('pending', 'waiting') AND (expires_at IS NULL OR expires_at > $2)))",
            task_id, now, reason,
        )  # fmt: skip
        if result != "UPDATE 1":
            return False
        await conn.execute("DELETE FROM task_deps WHERE task_id = $1", task_id)
    return True


async def purge(conn: Conn, queue: str | None) -> int:
    """Delete the tasks of one queue (or all) and their dependency rows."""
    async with conn.transaction():
        if queue is None:
            n = await conn.fetchval(
                "WITH d AS (DELETE FROM tasks RETURNING 1) SELECT count(*) FROM d"
            )
            await conn.execute("DELETE FROM task_deps")
        else:
            n = await conn.fetchval(
                "WITH d AS (DELETE FROM tasks WHERE queue = $1 RETURNING id), "
                "x AS (DELETE FROM task_deps WHERE task_id IN (SELECT id FROM d)) "
                "SELECT count(*) FROM d",
                queue,
            )
    return int(n)


async def prune_finished(conn: Conn, before: float, limit: int) -> int:
    """Delete up to ``limit`` tasks that ended before ``before`` (and their dependency
    rows) in one short statement; rows locked by someone else are skipped."""
    n = await conn.fetchval(
        "WITH gone AS (DELETE FROM tasks WHERE id IN (SELECT id FROM tasks "
        "WHERE finished_at < $1 AND status = ANY($3::text[]) ORDER BY finished_at LIMIT $2 "
        "FOR UPDATE SKIP LOCKED) RETURNING id), "
        "deps AS (DELETE FROM task_deps WHERE task_id IN (SELECT id FROM gone)) "
        "SELECT count(*) FROM gone",
        before, max(0, limit), FINAL,
    )  # fmt: skip
    return int(n)


async def expire(conn: Conn, now: float) -> list[str]:
    """Mark pending/waiting tasks past their TTL EXPIRED; return them and the tasks found
    expired at claim time since the last call."""
    async with conn.transaction():
        seen = await conn.fetch("UPDATE tasks SET unreported = NULL WHERE unreported RETURNING id")
        new = await conn.fetch(
            "UPDATE tasks SET status = 'expired', error = $1, finished_at = $2 "
            "WHERE status IN ('pending', 'waiting') AND expires_at IS NOT NULL "
            "AND expires_at <= $2 RETURNING id",
            rules.EXPIRED_MESSAGE, now,
        )  # fmt: skip
        new_ids = [r[0] for r in new]
        if new_ids:
            await conn.execute("DELETE FROM task_deps WHERE task_id = ANY($1::text[])", new_ids)
    return sorted(r[0] for r in seen) + sorted(new_ids)


# --- re-queue of ended tasks, live workers -----------------------------------------------


async def requeue(
    conn: Conn, serializer: SerializationManager, task_id: str, notify: str
) -> Task | None:
    """Put an ended task back to PENDING (:func:`omniq.rules.requeued`), fenced on the
    status and attempt read; None when unknown or not final."""
    now = time.time()
    async with conn.transaction():
        row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1", task_id)
        if row is None:
            return None
        task = task_from_row(serializer, row, now)
        if not task.status.is_final or task.metadata.get("corrupt"):
            return None
        fresh = rules.requeued(task, now)
        _, queue, _, due, run_at, expires_at, _, data = task_row(serializer, fresh)
        result = await conn.execute(
            "UPDATE tasks SET status = 'pending', due = $3, run_at = $4, expires_at = $5, "
            "lease_until = NULL, worker_id = NULL, error = NULL, finished_at = NULL, "
            "unreported = NULL, data = $6 WHERE id = $1 AND status = $2 AND attempt = $7",
            task_id, row[2], due, run_at, expires_at, data, fresh.attempt,
        )  # fmt: skip
        if result != "UPDATE 1":
            return None
        await conn.execute("SELECT pg_notify($1, $2)", notify, queue)
    return fresh


async def record_worker(conn: Conn, info: WorkerInfo) -> None:
    """Insert or replace a worker's heartbeat row."""
    await conn.execute(
        "INSERT INTO workers (id, started_at, expires_at, info) VALUES ($1, $2, $3, $4::jsonb) "
        "ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, "
        "expires_at = excluded.expires_at, info = excluded.info",
        info.id, info.started_at, info.expires_at, encode_worker(info).decode(),
    )  # fmt: skip


async def remove_worker(conn: Conn, worker_id: str) -> None:
    """Delete a worker's heartbeat row."""
    await conn.execute("DELETE FROM workers WHERE id = $1", worker_id)


async def list_workers(conn: Conn) -> list[WorkerInfo]:
    """Live workers oldest first; rows of workers gone silent are deleted."""
    now = time.time()
    await conn.execute("DELETE FROM workers WHERE expires_at <= $1", now)
    rows = await conn.fetch("SELECT info::text FROM workers ORDER BY started_at, id")
    return [info for (data,) in rows if (info := decode_worker(data)) is not None]


async def pause_queue(conn: Conn, queue: str) -> None:
    """Mark a queue paused."""
    await conn.execute(
        "INSERT INTO paused_queues (queue, paused_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        queue, time.time(),
    )  # fmt: skip


async def resume_queue(conn: Conn, queue: str, notify: str) -> None:
    """Unmark a paused queue and wake its idle workers."""
    await conn.execute("DELETE FROM paused_queues WHERE queue = $1", queue)
    await conn.execute("SELECT pg_notify($1, $2)", notify, queue)


async def paused_queues(conn: Conn) -> set[str]:
    """The paused queues."""
    return {r[0] for r in await conn.fetch("SELECT queue FROM paused_queues")}
