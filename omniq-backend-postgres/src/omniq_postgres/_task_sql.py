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
from collections.abc import Sequence
from typing import Any, TypeAlias

import msgspec

from omniq import rules
from omniq.errors import SerializationError
from omniq.models import Task, TaskStatus
from omniq.models.enums import FINAL_STATUSES
from omniq.serialization.manager import SerializationManager

log = logging.getLogger("omniq.postgres")

#: An asyncpg connection (asyncpg ships no type information).
Conn: TypeAlias = Any
#: A new task's row: id, queue, priority, due, run_at, expires_at, created_at, data.
Encoded = tuple[str, str, int, float, float | None, float | None, float, bytes]

FINAL = sorted(s.value for s in FINAL_STATUSES)

TASK_COLUMNS = (
    "id, queue, status, priority, created_at, run_at, expires_at, attempt, lease_until, "
    "worker_id, error, data"
)

_UNNEST_NEW = (
    "unnest($1::text[], $2::text[], $3::int[], $4::float8[], $5::float8[], $6::float8[], "
    "$7::float8[], $8::bytea[]) AS n(id, queue, priority, due, run_at, expires_at, "
    "created_at, data)"
)
#: Multi-row insert of tasks without dependencies, notifying waiting workers (one
#: notification per queue: PostgreSQL folds identical ones within a transaction).
INSERT_NEW_SQL = f"""
WITH ins AS (
    INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, created_at, data)
    SELECT id, queue, 'pending', priority, due, run_at, expires_at, created_at, data
    FROM {_UNNEST_NEW}
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue
)
SELECT id, pg_notify($9, queue) FROM ins
"""
INSERT_ONE_SQL = (
    "INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, created_at, "
    "data, error, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
    "ON CONFLICT (id) DO NOTHING"
)

CLAIM_SQL = """
WITH ready AS (
    SELECT id, priority, due, seq FROM tasks
    WHERE queue = $1 AND status = 'pending' AND (run_at IS NULL OR run_at <= $2)
    ORDER BY priority DESC, due, seq LIMIT $3 FOR UPDATE SKIP LOCKED
), lapsed AS (
    SELECT id, priority, due, seq FROM tasks
    WHERE queue = $1 AND status = 'running' AND lease_until < $2
    ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT * FROM ready UNION ALL SELECT * FROM lapsed
), chosen AS (
    SELECT id FROM picked ORDER BY priority DESC, due, seq LIMIT $3
)
UPDATE tasks AS t SET
    status = CASE WHEN t.expires_at <= $2 THEN 'expired' ELSE 'running' END,
    attempt = CASE WHEN t.expires_at <= $2 THEN t.attempt ELSE t.attempt + 1 END,
    worker_id = CASE WHEN t.expires_at <= $2 THEN t.worker_id ELSE $4 END,
    lease_until = CASE WHEN t.expires_at <= $2 THEN NULL ELSE $5::float8 END,
    finished_at = CASE WHEN t.expires_at <= $2 THEN $2 END,
    error = CASE WHEN t.expires_at <= $2 THEN $6 ELSE t.error END,
    unreported = CASE WHEN t.expires_at <= $2 THEN true ELSE t.unreported END
FROM chosen WHERE t.id = chosen.id
RETURNING t.id, t.status, t.priority, t.due, t.seq, t.run_at, t.attempt, t.lease_until,
    t.worker_id, t.error, t.data
"""
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
COMPLETE_MANY_SQL = """
UPDATE tasks AS t SET status = 'success', finished_at = $3, lease_until = NULL, error = NULL
FROM unnest($1::text[], $2::int[]) AS c(id, attempt)
WHERE t.id = c.id AND t.status = 'running' AND t.attempt = c.attempt
RETURNING t.id
"""
#: Complete the current claims and write their results in one statement: the fence
#: (status and attempt) decides which results are written.
COMPLETE_WITH_RESULTS_SQL = """
WITH done AS (
    UPDATE tasks AS t SET status = 'success', finished_at = $3, lease_until = NULL,
        error = NULL
    FROM unnest($1::text[], $2::int[]) AS c(id, attempt)
    WHERE t.id = c.id AND t.status = 'running' AND t.attempt = c.attempt
    RETURNING t.id
), stored AS (
    INSERT INTO results (task_id, status, finished_at, expires_at, data)
    SELECT r.task_id, r.status, r.finished_at, r.expires_at, r.data
    FROM unnest($4::text[], $5::text[], $6::float8[], $7::float8[], $8::bytea[])
        AS r(task_id, status, finished_at, expires_at, data)
    JOIN done ON done.id = r.task_id
    ON CONFLICT (task_id) DO UPDATE SET status = excluded.status,
        finished_at = excluded.finished_at, expires_at = excluded.expires_at,
        data = excluded.data
    RETURNING task_id
), woke AS (
    SELECT pg_notify($9, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
)
SELECT id, (SELECT count(*) FROM woke) FROM done
"""
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
WHERE t.id = c.id AND t.status = 'running' AND t.attempt = c.attempt
"""

Row = Any


# --- rows <-> tasks ------------------------------------------------------------------------


def effective(status: str, expires_at: float | None, now: float) -> TaskStatus:
    """A row's status as a reader sees it (see :func:`omniq.rules.effective_status`)."""
    return rules.effective_status(TaskStatus(status), expires_at, now)


def encode(serializer: SerializationManager, task: Task) -> Encoded:
    """The stored form of a new task."""
    due = task.run_at if task.run_at is not None else task.created_at
    return (task.id, task.queue, task.priority, due, task.run_at, task.expires_at,
            task.created_at, serializer.encode_task(task))  # fmt: skip


def to_task(serializer: SerializationManager, row: Row, now: float) -> Task:
    """Rebuild a task from a row in TASK_COLUMNS order (the columns win over the bytes).

    A payload that cannot be decoded yields a placeholder task (``func`` is
    ``"<undecodable>"``, ``metadata["corrupt"]`` is True) so listing never fails.
    """
    (tid, queue, status, priority, created_at, run_at, expires_at, attempt, lease_until,
     worker_id, error, data) = tuple(row)  # fmt: skip
    st = effective(status, expires_at, now)
    try:
        task = serializer.decode_task(bytes(data))
    except SerializationError as e:
        return Task(
            func="<undecodable>", id=tid, queue=queue, priority=priority, status=st,
            created_at=created_at, run_at=run_at, expires_at=expires_at, attempt=attempt,
            lease_until=lease_until, worker_id=worker_id,
            error=error or f"stored payload cannot be decoded: {e}", metadata={"corrupt": True},
        )  # fmt: skip
    return msgspec.structs.replace(
        task, id=tid, status=st, attempt=attempt, lease_until=lease_until,
        worker_id=worker_id, error=error, run_at=run_at,
    )  # fmt: skip


def _columns(rows: Sequence[Encoded]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


# --- enqueue -------------------------------------------------------------------------------


async def insert_new(conn: Conn, rows: Sequence[Encoded], notify: str) -> set[str]:
    """Insert tasks without dependencies in one statement; the ids inserted (an id that
    exists already is left unchanged)."""
    inserted = await conn.fetch(INSERT_NEW_SQL, *_columns(rows), notify)
    return {r[0] for r in inserted}


async def statuses_of(conn: Conn, ids: Sequence[str], now: float) -> dict[str, TaskStatus]:
    """Effective statuses of the stored tasks among ``ids``."""
    rows = await conn.fetch(
        "SELECT id, status, expires_at FROM tasks WHERE id = ANY($1::text[])", list(ids)
    )
    return {r[0]: effective(r[1], r[2], now) for r in rows}


async def enqueue_general(
    conn: Conn, items: Sequence[tuple[Task, Encoded]], notify: str
) -> list[TaskStatus]:
    """Insert tasks with dependencies (and report existing ids' statuses), in one
    transaction. The dependencies are read ``FOR SHARE``: one completing concurrently
    waits for this commit, so its release walk sees the new WAITING task."""
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
            elif status is TaskStatus.PENDING:
                await conn.execute("SELECT pg_notify($1, $2)", notify, queue)
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
) -> list[Task]:
    """Claim up to ``limit`` ready tasks: queue order, then priority, then due time.

    Tasks whose lease lapsed are claimed again (``attempt + 1``). Tasks found past
    their TTL are marked EXPIRED (reported by ``cleanup_expired``); a task whose payload
    cannot be decoded is marked FAILED and the claim goes on.
    """
    now = time.time()
    claimed: list[Task] = []
    decode = serializer.decode_task
    for queue in queues:
        while len(claimed) < limit:
            want = limit - len(claimed)
            rows = await conn.fetch(
                CLAIM_SQL, queue, now, want, worker_id, now + lease, rules.EXPIRED_MESSAGE
            )
            rows.sort(key=lambda r: (-r[2], r[3], r[4]))
            for tid, status, _, _, _, run_at, attempt, lease_until, worker, error, data in rows:
                if status != "running":
                    continue  # expired at claim time
                try:
                    task = decode(bytes(data))
                except SerializationError as e:
                    await fail_corrupt(conn, tid, str(e), now)
                    continue
                task.id, task.status, task.attempt = tid, TaskStatus.RUNNING, attempt
                task.lease_until, task.worker_id, task.error = lease_until, worker, error
                task.run_at = run_at
                claimed.append(task)
            if len(rows) < want:
                break  # this queue has nothing more
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
) -> list[Task]:
    """Tasks in insertion order, filtered by queue and effective status."""
    now = time.time()
    cond, params = _where(queue, status, now)
    rows = await conn.fetch(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE {cond} ORDER BY seq LIMIT ${len(params) + 1}",
        *params,
        max(0, min(limit, 2**62)),
    )
    return [to_task(serializer, row, now) for row in rows]


async def get_task(conn: Conn, serializer: SerializationManager, task_id: str) -> Task | None:
    """One stored task with its effective status."""
    row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1", task_id)
    return None if row is None else to_task(serializer, row, time.time())


async def count_tasks(conn: Conn, queue: str | None, status: TaskStatus | None) -> int:
    """Number of tasks by queue and effective status (the ``(queue, status)`` index)."""
    cond, params = _where(queue, status, time.time())
    return int(await conn.fetchval(f"SELECT count(*) FROM tasks WHERE {cond}", *params))


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
