"""Task-queue transactions: plain functions that run on the connection's thread.

A task is stored as its encoded bytes (``data``) plus the columns needed to claim and
filter it. The columns are the truth for the mutable fields (status, attempt, lease,
worker, error, run_at); the bytes hold everything else and are never rewritten, so a
claim, a completion or a heartbeat is one small UPDATE.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from omniq import rules
from omniq.errors import SerializationError
from omniq.models import Task, TaskStatus, WorkerInfo, decode_worker, encode_worker
from omniq.models.enums import FINAL_STATUSES
from omniq.serialization.manager import SerializationManager
from omniq.storage.columns import TASK_COLUMNS, as_claimed, task_from_row, task_row
from omniq_sqlite._database import begin_immediate
from omniq_sqlite._staging import (
    INSERT_NEW_SQL,
    LAPSED_CLAIMS,
    UNCOUNTABLE,
    Encoded,
    claim_staged,
    expand,
    expand_for_claim,
    expand_ids,
    expand_range,
    finish_claimed,
    has_lapsed_claims,
    has_staged,
    has_staged_for,
    stage,
    staged_count,
)

log = logging.getLogger("omniq.sqlite")

EXPIRED_MSG = rules.EXPIRED_MESSAGE


INSERT_SQL = (
    "INSERT INTO tasks (id, queue, status, priority, due, run_at, expires_at, error, "
    "created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)

HAS_READY_SQL = (
    "SELECT 1 FROM tasks WHERE queue = ? AND status = 'pending' "
    "AND (run_at IS NULL OR run_at <= ?) LIMIT 1"
)
# two statements: each matches one partial index (an IN over both would scan the table)
HAS_PENDING_SQL = "SELECT 1 FROM tasks WHERE queue = ? AND status = 'pending' LIMIT 1"
HAS_RUNNING_SQL = "SELECT 1 FROM tasks WHERE queue = ? AND status = 'running' LIMIT 1"
HAS_LAPSED_SQL = "SELECT 1 FROM tasks WHERE status = 'running' AND lease_until < ? LIMIT 1"
#: The current time in Unix seconds, in SQL. A finished task's ``lease_until`` holds when
#: it ended (a finished task has no lease): the ``tasks_state`` index (status,
#: lease_until, ...) then finds the tasks that ended before a time without an index of
#: their own, and the finishing UPDATEs write nothing more than before.
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
RECOVER_SQL = (
    "UPDATE tasks SET status = 'pending', lease_until = NULL "
    "WHERE status = 'running' AND lease_until < ?"
)
CLAIM_SQL = """
UPDATE tasks SET
    status = CASE WHEN expires_at <= :now THEN 'expired' ELSE 'running' END,
    attempt = CASE WHEN expires_at <= :now THEN attempt ELSE attempt + 1 END,
    worker_id = CASE WHEN expires_at <= :now THEN worker_id ELSE :worker END,
    lease_until = CASE WHEN expires_at <= :now THEN :now ELSE :lease_until END,
    error = CASE WHEN expires_at <= :now THEN :expired_msg ELSE error END,
    unreported = CASE WHEN expires_at <= :now THEN 1 ELSE unreported END
WHERE rowid IN (
    SELECT rowid FROM tasks
    WHERE queue = :queue AND status = 'pending' AND (run_at IS NULL OR run_at <= :now)
    ORDER BY priority DESC, due, id
    LIMIT :limit
)
RETURNING id, queue, status, priority, created_at, run_at, expires_at, attempt, lease_until,
    worker_id, error, data, due
"""
COMPLETE_SQL = (
    f"UPDATE tasks SET status = 'success', lease_until = {NOW_SQL}, error = NULL "
    "WHERE id = ? AND status = 'running' AND attempt = ?"
)
#: complete for a batch of (id, attempt) pairs given as a JSON array: one statement
COMPLETE_MANY_SQL = f"""
UPDATE tasks SET status = 'success', lease_until = {NOW_SQL}, error = NULL
WHERE rowid IN (
    SELECT t.rowid FROM json_each(?) AS c
    JOIN tasks AS t ON t.id = json_extract(c.value, '$[0]')
    WHERE t.status = 'running' AND t.attempt = json_extract(c.value, '$[1]')
)
RETURNING id
"""
FAIL_SQL = (
    f"UPDATE tasks SET status = ?1, lease_until = CASE ?1 WHEN 'failed' THEN {NOW_SQL} END, "
    "error = ?, "
    "run_at = coalesce(?, run_at), due = coalesce(?, due) "
    "WHERE id = ? AND status = 'running' AND attempt = ?"
)
HEARTBEAT_SQL = (
    "UPDATE tasks SET lease_until = ? WHERE id = ? AND status = 'running' AND attempt = ?"
)
UNCLAIM_SQL = (
    "UPDATE tasks SET status = 'pending', lease_until = NULL, attempt = attempt - 1 "
    "WHERE id = ? AND status = 'running' AND attempt = ?"
)

Row = tuple[Any, ...]


# --- rows <-> tasks ------------------------------------------------------------------------


def effective(status: str, expires_at: float | None, now: float) -> TaskStatus:
    """A row's status as a reader sees it (see :func:`omniq.rules.effective_status`)."""
    return rules.effective_status(TaskStatus(status), expires_at, now)


def _ids_param(ids: Sequence[str]) -> str:
    return json.dumps(list(ids))


# --- enqueue -------------------------------------------------------------------------------


def _dependency_status(
    conn: sqlite3.Connection, depends_on: Sequence[str], now: float
) -> tuple[TaskStatus, str | None]:
    found = {
        tid: effective(st, exp, now)
        for tid, st, exp in conn.execute(
            "SELECT id, status, expires_at FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
            (_ids_param(depends_on),),
        )
    }
    outcome, failed = rules.dependency_outcome([found.get(dep) for dep in depends_on])
    return outcome, None if failed is None else rules.dependency_failed(depends_on[failed])


def enqueue_encoded(
    conn: sqlite3.Connection, items: list[tuple[Task, Encoded]]
) -> list[TaskStatus]:
    """Insert tasks in one transaction; the status of each (existing ids unchanged).

    A batch without dependencies takes :func:`insert_new` (one ``executemany``); the
    general path handles dependencies and ids that exist already.
    """
    if not any(task.depends_on for task, _ in items):
        statuses = insert_new(conn, [encoded for _, encoded in items])
        if statuses is not None:
            return statuses
    return enqueue_general(conn, items)


def insert_new(conn: sqlite3.Connection, rows: list[Encoded]) -> list[TaskStatus] | None:
    """Insert tasks without dependencies with one ``executemany``: all PENDING.

    When an id exists already (the insert changed fewer rows than given), nothing is
    written and None is returned: :func:`enqueue_general` then reports that task's
    stored status, as the contract asks.
    """
    begin_immediate(conn)
    expand_range(conn, min(r[0] for r in rows), max(r[0] for r in rows))  # staged ids count
    # a savepoint, not ROLLBACK: other writes may share this transaction (group commit)
    conn.execute("SAVEPOINT insert_new")
    before = conn.total_changes
    conn.executemany(INSERT_NEW_SQL, rows)
    inserted = conn.total_changes - before == len(rows)
    if not inserted:
        conn.execute("ROLLBACK TO insert_new")
    conn.execute("RELEASE insert_new")
    return [TaskStatus.PENDING] * len(rows) if inserted else None


def enqueue_general(
    conn: sqlite3.Connection, items: list[tuple[Task, Encoded]]
) -> list[TaskStatus]:
    """Insert tasks, reporting existing ids' statuses and resolving dependencies.

    Tasks with dependencies are checked inside the same write transaction, so a
    dependency that completes concurrently cannot leave a task WAITING forever.
    """
    now = time.time()
    begin_immediate(conn)
    # staged tasks count as stored: for existing ids and dependencies
    expand_ids(conn, [*(t.id for t, _ in items), *(d for t, _ in items for d in t.depends_on)])
    known: dict[str, TaskStatus] = {
        tid: effective(st, exp, now)
        for tid, st, exp in conn.execute(
            "SELECT id, status, expires_at FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
            (_ids_param([t.id for t, _ in items]),),
        )
    }
    statuses: list[TaskStatus] = []
    plain: list[tuple[Any, ...]] = []
    for task, (tid, queue, prio, due, run_at, exp, created, data) in items:
        if tid in known:
            statuses.append(known[tid])
            continue
        if not task.depends_on:
            plain.append((tid, queue, "pending", prio, due, run_at, exp, None, created, data))
            known[tid] = effective("pending", exp, now)
            statuses.append(TaskStatus.PENDING)
            continue
        if plain:  # earlier tasks of the batch must be visible to this dependency check
            conn.executemany(INSERT_SQL, plain)
            plain = []
        status, reason = _dependency_status(conn, task.depends_on, now)
        conn.execute(
            INSERT_SQL, (tid, queue, status.value, prio, due, run_at, exp, reason, created, data)
        )
        if status is TaskStatus.WAITING:
            conn.executemany(
                "INSERT OR IGNORE INTO task_deps (depends_on, task_id) VALUES (?, ?)",
                [(dep, tid) for dep in task.depends_on],
            )
        known[tid] = effective(status.value, exp, now)
        statuses.append(status)
    if plain:
        conn.executemany(INSERT_SQL, plain)
    return statuses


def enqueue_tasks(
    conn: sqlite3.Connection,
    serializer: SerializationManager,
    tasks: Sequence[Task],
    stage_min: int = 0,
) -> list[TaskStatus]:
    """Encode (off the event loop) and insert ``tasks`` in one transaction.

    At least ``stage_min`` (> 0) new tasks without dependencies are staged as one row
    (see :mod:`omniq_sqlite._staging`).
    """
    plain = not any(t.depends_on for t in tasks)
    if plain and 0 < stage_min <= len(tasks) and stage(conn, serializer, tasks):
        return [TaskStatus.PENDING] * len(tasks)
    enc = serializer.encode_task
    rows: list[Encoded] = [
        (t.id, t.queue, t.priority, t.created_at if t.run_at is None else t.run_at,
         t.run_at, t.expires_at, t.created_at, enc(t))
        for t in tasks
    ]  # fmt: skip
    if plain:
        statuses = insert_new(conn, rows)
        if statuses is not None:
            return statuses
    return enqueue_general(conn, list(zip(tasks, rows, strict=True)))


# --- claim ---------------------------------------------------------------------------------


def _has_work(conn: sqlite3.Connection, queues: Sequence[str], now: float) -> bool:
    if conn.execute(HAS_LAPSED_SQL, (now,)).fetchone() is not None:
        return True
    if has_lapsed_claims(conn, now):
        return True
    return any(
        conn.execute(HAS_READY_SQL, (q, now)).fetchone() is not None
        or has_staged_for(conn, q, due_by=now)
        for q in queues
    )


def _has_timed(conn: sqlite3.Connection, queues: Sequence[str]) -> bool:
    """True when a task of ``queues`` may become claimable by the clock alone: a delayed
    one, or a running one whose lease may lapse."""
    return any(
        conn.execute(HAS_PENDING_SQL, (q,)).fetchone() is not None
        or conn.execute(HAS_RUNNING_SQL, (q,)).fetchone() is not None
        or has_staged_for(conn, q)
        for q in queues
    )


#: A claimed task as the claim read it: (claim-order key, id, attempt, lease_until,
#: worker_id, error, run_at, stored bytes). Decoded after the commit (see :func:`claim`).
Claimed = tuple[tuple[int, float, str], str, int, float, str, Any, Any, bytes]


def claim(
    conn: sqlite3.Connection, queues: Sequence[str], limit: int, worker_id: str, lease: float
) -> tuple[list[Claimed], bool]:
    """Claim up to ``limit`` ready tasks: queue order, then priority, then due time.

    A read-only probe comes first, so idle pollers never take the write lock. Tasks
    found past their TTL are marked EXPIRED (reported by ``cleanup_expired``). The tasks
    come back as stored: the caller decodes them after the commit (:func:`decode_claims`),
    so the write lock, which other worker processes wait for, is not held for that. The
    flag is False when nothing in ``queues`` can become claimable without a commit (so
    an idle waiter need not re-check soon).
    """
    now = time.time()
    if not _has_work(conn, queues, now):
        return [], _has_timed(conn, queues)
    begin_immediate(conn)
    expand(conn, LAPSED_CLAIMS, (now,))  # their tasks RUNNING rows, recovered below
    conn.execute(RECOVER_SQL, (now,))
    claimed: list[Claimed] = []
    params: dict[str, Any] = {
        "now": now, "worker": worker_id, "lease_until": now + lease, "expired_msg": EXPIRED_MSG,
    }  # fmt: skip
    lease_until = params["lease_until"]
    for queue in queues:
        ours: list[Claimed] = []  # this queue's claims, put in claim order below
        while len(claimed) + len(ours) < limit:
            want = limit - len(claimed) - len(ours)
            staged = claim_staged(conn, queue, want, now, worker_id, lease_until)
            if staged:
                ours += [
                    ((-prio, due, tid), tid, 1, lease_until, worker_id, None, run_at, data)
                    for tid, _, prio, due, run_at, _, _, data in staged
                ]
                continue
            expand_for_claim(conn, queue, want, now)
            params["queue"], params["limit"] = queue, want
            rows = conn.execute(CLAIM_SQL, params).fetchall()
            ours += [
                ((-prio, due, tid), tid, attempt, lease_until_, worker, error, run_at, data)
                for (tid, _, status, prio, _, run_at, _, attempt, lease_until_, worker, error,
                     data, due) in rows
                if status == "running"  # else expired at claim time
            ]  # fmt: skip
            if len(rows) < want:
                break  # this queue has nothing more
        ours.sort(key=_first)
        claimed.extend(ours)
        if len(claimed) >= limit:
            break
    return claimed, True


def decode_claims(
    serializer: SerializationManager, claimed: list[Claimed]
) -> tuple[list[Task], list[tuple[str, int, str]]]:
    """The claimed tasks decoded, in claim order, and (id, attempt, reason) of those
    whose stored bytes cannot be decoded (to be failed with :func:`fail_corrupt`)."""
    decode = serializer.decode_task
    tasks: list[Task] = []
    corrupt: list[tuple[str, int, str]] = []
    for _, tid, attempt, lease_until, worker, error, run_at, data in claimed:
        try:
            task = decode(data)
        except SerializationError as e:
            corrupt.append((tid, attempt, str(e)))
            continue
        tasks.append(as_claimed(task, tid, attempt, lease_until, worker, error, run_at))
    return tasks, corrupt


def _first(item: Claimed) -> tuple[int, float, str]:
    """The claim-order key of a claimed row: (-priority, due, id)."""
    return item[0]


def fail_corrupt(conn: sqlite3.Connection, corrupt: list[tuple[str, int, str]]) -> None:
    """Mark claimed tasks whose payload cannot be decoded FAILED (fenced by the attempt
    that claimed them) and cancel their waiting dependents."""
    now = time.time()
    begin_immediate(conn)
    expand_ids(conn, [tid for tid, _, _ in corrupt])  # claimed batches: rows first
    for tid, attempt, reason in corrupt:
        message = f"stored payload of task {tid} cannot be decoded: {reason}"
        log.error("SQLite queue: %s; marked the task FAILED", message)
        cur = conn.execute(
            "UPDATE tasks SET status = 'failed', lease_until = ?, error = ? "
            "WHERE id = ? AND status = 'running' AND attempt = ?",
            (now, message, tid, attempt),
        )
        if cur.rowcount == 1:
            release(conn, tid, False, now)


def unclaim(conn: sqlite3.Connection, claims: list[tuple[str, int]]) -> None:
    """Hand back claims that never reached a caller (it was cancelled meanwhile)."""
    begin_immediate(conn)
    expand_ids(conn, [tid for tid, _ in claims])  # claimed batches: rows first
    conn.executemany(UNCLAIM_SQL, claims)


# --- fenced updates (group-committed) ------------------------------------------------------


class Fence(StrEnum):
    """The kinds of fenced update: each applies only to the current claim."""

    COMPLETE = "complete"
    FAIL = "fail"
    UNCLAIM = "unclaim"
    HEARTBEAT = "heartbeat"


class FenceOp(NamedTuple):
    """One fenced update of the claim (``task_id``, ``attempt``)."""

    kind: Fence
    task_id: str
    attempt: int
    retry_at: float | None = None
    """FAIL: PENDING again at this time; None: FAILED for good."""
    error: str | None = None
    """FAIL: the error recorded."""
    lease: float = 0.0
    """HEARTBEAT: seconds the lease is extended by."""


def complete_many(
    conn: sqlite3.Connection, claims: list[tuple[str, int]]
) -> tuple[list[bool], list[str]]:
    """Mark claimed tasks SUCCESS in one transaction: True where the claim was current.

    Also returns the completed tasks that have no dependents, probed in the same
    transaction: releasing their dependents has nothing to do, now or later, since a
    dependent enqueued after this commit checks their (SUCCESS) status itself.
    """
    begin_immediate(conn)
    expand_ids(conn, [tid for tid, _ in claims])  # claimed batches: rows first
    updated = {r[0] for r in conn.execute(COMPLETE_MANY_SQL, (json.dumps(claims),))}
    return _accepted(conn, claims, updated)


#: Most completions in one statement (4 parameters each, far below SQLite's limit).
COMPLETE_CHUNK = 512


def _complete_storing_sql(n: int) -> str:
    """:data:`COMPLETE_MANY_SQL` that also stores each task's result in its row, for
    ``n`` rows of (id, attempt, result, result TTL)."""
    values = ", ".join(["(?, ?, ?, ?)"] * n)
    return (
        f"UPDATE tasks SET status = 'success', lease_until = {NOW_SQL}, error = NULL, "
        f"result = v.column3, result_expires = v.column4 FROM (VALUES {values}) AS v "
        "WHERE tasks.id = v.column1 AND tasks.status = 'running' AND tasks.attempt = v.column2 "
        "RETURNING tasks.id"
    )


def _padded(n: int) -> int:
    """Rows of the statement for ``n`` completions: a power of two (at least 8), so a
    few statement texts serve every batch size (they stay in the statement cache)."""
    size = 8
    while size < n:
        size *= 2
    return size


def complete_storing(
    conn: sqlite3.Connection, claims: list[tuple[str, int]], results: list[tuple[bytes, Any]]
) -> tuple[list[bool], list[str]]:
    """:func:`complete_many` that stores each task's encoded result (and its TTL) in the
    task's row, in the same statement: the fence decides which results are written, so a
    stale attempt's result never replaces a newer one. Padding rows (to
    :func:`_padded`) have attempt -1: they match no task. Tasks of a claimed batch this
    connection made get their row here, in one insert each (:func:`finish_claimed`)."""
    begin_immediate(conn)
    updated, rest = finish_claimed(conn, claims, results)
    if rest:
        expand_ids(conn, [claims[i][0] for i in rest])  # claimed batches: rows first
    for start in range(0, len(rest), COMPLETE_CHUNK):
        part = rest[start : start + COMPLETE_CHUNK]
        params: list[Any] = []
        for i in part:
            data, expires = results[i]
            params += (*claims[i], bytearray(data), expires)  # bytearray: see _staging
        size = _padded(len(part))
        params += ["", -1, 0, 0] * (size - len(part))  # attempt -1: matches no task
        updated.update(r[0] for r in conn.execute(_complete_storing_sql(size), params))
    return _accepted(conn, claims, updated)


def _accepted(
    conn: sqlite3.Connection, claims: list[tuple[str, int]], updated: set[str]
) -> tuple[list[bool], list[str]]:
    """(True where a claim was completed, the completed tasks without dependents)."""
    ok: list[bool] = []
    for tid, _ in claims:
        ok.append(tid in updated)
        updated.discard(tid)  # a task given twice is completed once, like complete() twice
    done = [tid for (tid, _), accepted in zip(claims, ok, strict=True) if accepted]
    with_dependents = _with_dependents(conn, done)
    return ok, [tid for tid in done if tid not in with_dependents]


def _with_dependents(conn: sqlite3.Connection, task_ids: Sequence[str]) -> set[str]:
    """The ids among ``task_ids`` that some stored task depends on."""
    if not task_ids or conn.execute("SELECT 1 FROM task_deps LIMIT 1").fetchone() is None:
        return set()
    return {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT depends_on FROM task_deps "
            "WHERE depends_on IN (SELECT value FROM json_each(?))",
            (_ids_param(task_ids),),
        )
    }


def fenced(conn: sqlite3.Connection, ops: list[FenceOp]) -> list[bool]:
    """Apply complete/fail/unclaim/heartbeat operations; True where the claim was
    current."""
    begin_immediate(conn)
    expand_ids(conn, [op.task_id for op in ops])  # claimed batches: rows first
    now = time.time()
    out: list[bool] = []
    for op in ops:
        if op.kind is Fence.COMPLETE:
            cur = conn.execute(COMPLETE_SQL, (op.task_id, op.attempt))
        elif op.kind is Fence.FAIL:
            status = "failed" if op.retry_at is None else "pending"
            cur = conn.execute(
                FAIL_SQL,
                (status, op.error, op.retry_at, op.retry_at, op.task_id, op.attempt),
            )
        elif op.kind is Fence.UNCLAIM:
            cur = conn.execute(UNCLAIM_SQL, (op.task_id, op.attempt))
        else:
            cur = conn.execute(HEARTBEAT_SQL, (now + op.lease, op.task_id, op.attempt))
        out.append(cur.rowcount == 1)
    return out


# --- dependencies --------------------------------------------------------------------------


def release(
    conn: sqlite3.Connection, task_id: str, succeeded: bool, now: float | None = None
) -> tuple[list[str], list[str]]:
    """Release or (transitively) cancel the waiting dependents of ``task_id``."""
    return release_many(conn, [task_id], succeeded, now)


def release_many(
    conn: sqlite3.Connection, task_ids: list[str], succeeded: bool, now: float | None = None
) -> tuple[list[str], list[str]]:
    """Release or (transitively) cancel the waiting dependents of several tasks.

    A read-only probe first: most finished tasks have no dependents, and then no write
    lock is taken at all.
    """
    if not task_ids or not _with_dependents(conn, task_ids):
        return [], []
    begin_immediate(conn)
    now = time.time() if now is None else now
    ready: list[str] = []
    cancelled: list[str] = []
    ended = [(tid, succeeded) for tid in task_ids]
    while ended:  # the release walk of omniq.rules
        step = rules.release_step(ended, _waiting_dependents(conn, ended, now))
        conn.executemany(
            "UPDATE tasks SET status = 'pending' WHERE id = ?", [(t,) for t in step.ready]
        )
        conn.executemany(
            "UPDATE tasks SET status = 'cancelled', error = ?, lease_until = ? WHERE id = ?",
            [(reason, now, t) for t, reason in step.cancelled],
        )
        done = [*step.ready, *(t for t, _ in step.cancelled)]
        conn.executemany("DELETE FROM task_deps WHERE task_id = ?", [(t,) for t in done])
        ready += step.ready
        cancelled += [t for t, _ in step.cancelled]
        ended = step.next_ended
    return ready, cancelled


def _waiting_dependents(
    conn: sqlite3.Connection, ended: list[tuple[str, bool]], now: float
) -> list[rules.WaitingDependent]:
    """The WAITING dependents of the ended tasks, with their dependencies' statuses."""
    found = []
    for tid, _ in ended:
        waiting = sorted(
            r[0]
            for r in conn.execute(
                "SELECT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id "
                "WHERE d.depends_on = ? AND t.status = 'waiting'",
                (tid,),
            )
        )
        for dep_id in waiting:
            rows = conn.execute(
                "SELECT d.depends_on, t.status, t.expires_at FROM task_deps d "
                "LEFT JOIN tasks t ON t.id = d.depends_on WHERE d.task_id = ?",
                (dep_id,),
            ).fetchall()
            found.append(
                rules.WaitingDependent(
                    task_id=dep_id,
                    ended=tid,
                    dependencies=[r[0] for r in rows],
                    statuses=[None if r[1] is None else effective(r[1], r[2], now) for r in rows],
                )
            )
    return found


# --- reads, cancel, purge, expiry ------------------------------------------------------------


def status_filter(status: TaskStatus | None, now: float) -> tuple[str, list[Any]]:
    """SQL condition selecting tasks whose *effective* status is ``status``."""
    expired = "(expires_at IS NOT NULL AND expires_at <= ?)"
    if status is None:
        return "1", []
    if status in (TaskStatus.PENDING, TaskStatus.WAITING):
        return f"status = ? AND NOT {expired}", [status.value, now]
    if status is TaskStatus.EXPIRED:
        return f"(status = 'expired' OR (status IN ('pending', 'waiting') AND {expired}))", [now]
    return "status = ?", [status.value]


def select_tasks(
    conn: sqlite3.Connection,
    serializer: SerializationManager,
    queue: str | None,
    status: TaskStatus | None,
    limit: int,
    newest_first: bool = False,
    offset: int = 0,
) -> list[Task]:
    """Tasks in insertion order (or newest first), filtered by queue and effective
    status, the first ``offset`` of them skipped."""
    now = time.time()
    # what staged tasks are: PENDING (or EXPIRED), RUNNING in a claimed batch
    staged = {None: "1", TaskStatus.PENDING: "claim IS NULL", TaskStatus.EXPIRED: "claim IS NULL",
              TaskStatus.RUNNING: "claim IS NOT NULL"}.get(status)  # fmt: skip
    if staged is not None:
        if queue is None:
            expand(conn, staged)
        else:
            expand(conn, f"({staged}) AND (queue = ? OR queue IS NULL)", (queue,))
    cond, params = status_filter(status, now)
    if queue is not None:
        cond, params = f"queue = ? AND {cond}", [queue, *params]
    # Waiting and running tasks are few and have a partial index: read them through it
    # (+rowid), rather than walking the whole table in rowid order.
    order = "+rowid" if status in (TaskStatus.WAITING, TaskStatus.RUNNING) else "rowid"
    source = "tasks"
    if order == "rowid" and status is not None and _dense(conn, cond, params):
        # Many matches: an index on the filter would read them all and sort them by
        # rowid (100,000 pending tasks of a queue: ~200 ms); walking the table in
        # rowid order stops after offset + limit matches.
        source = "tasks NOT INDEXED"
    rows = conn.execute(
        f"SELECT {TASK_COLUMNS} FROM {source} WHERE {cond} "
        f"ORDER BY {order}{' DESC' if newest_first else ''} LIMIT ? OFFSET ?",
        [*params, min(limit, 2**62), min(max(0, offset), 2**62)],
    ).fetchall()
    return [task_from_row(serializer, row, now) for row in rows]


DENSE = 2000  # matches past which listing walks the table rather than sorting them


def _dense(conn: sqlite3.Connection, cond: str, params: list[Any]) -> bool:
    """Whether at least DENSE tasks match ``cond`` (an index probe, stops at DENSE)."""
    (n,) = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM tasks WHERE {cond} LIMIT {DENSE})", params
    ).fetchone()
    return int(n) >= DENSE


def count_tasks(conn: sqlite3.Connection, queue: str | None, status: TaskStatus | None) -> int:
    """Number of tasks, filtered by queue and effective status. Staged tasks are
    counted from their batch row (expanded only when that cannot tell)."""
    now = time.time()
    staged = staged_count(conn, queue, status, now) if has_staged(conn) else 0
    if staged is None:
        expand(conn, UNCOUNTABLE, (now,))
        staged = staged_count(conn, queue, status, now) or 0  # countable now
    cond, params = status_filter(status, now)
    if queue is not None:
        cond, params = f"queue = ? AND {cond}", [queue, *params]
    (n,) = conn.execute(f"SELECT count(*) FROM tasks WHERE {cond}", params).fetchone()
    return int(n) + staged


def cancel(conn: sqlite3.Connection, task_id: str, reason: str) -> bool:
    """Cancel a task that is not (effectively) final."""
    now = time.time()
    begin_immediate(conn)
    expand_range(conn, task_id, task_id)
    cur = conn.execute(
        "UPDATE tasks SET status = 'cancelled', lease_until = ?, error = ? "
        "WHERE id = ? AND (status = 'running' OR (status IN ('pending', 'waiting') "
        "AND (expires_at IS NULL OR expires_at > ?)))",
        (now, reason, task_id, now),
    )
    if cur.rowcount != 1:
        return False
    conn.execute("DELETE FROM task_deps WHERE task_id = ?", (task_id,))
    return True


def requeue(
    conn: sqlite3.Connection, serializer: SerializationManager, task_id: str
) -> Task | None:
    """Put an ended task back to PENDING (:func:`omniq.rules.requeued`), fenced on the
    status and attempt read in the same transaction; None when unknown or not final."""
    now = time.time()
    begin_immediate(conn)
    expand_range(conn, task_id, task_id)
    row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        return None
    task = task_from_row(serializer, row, now)
    if not task.status.is_final or task.metadata.get("corrupt"):
        return None
    fresh = rules.requeued(task, now)
    _, _, _, due, run_at, expires_at, _, data = task_row(serializer, fresh)
    cur = conn.execute(
        "UPDATE tasks SET status = 'pending', due = ?, run_at = ?, expires_at = ?, "
        "lease_until = NULL, worker_id = NULL, error = NULL, unreported = NULL, data = ? "
        "WHERE id = ? AND status = ? AND attempt = ?",
        (due, run_at, expires_at, data, task_id, row[2], fresh.attempt),
    )
    return fresh if cur.rowcount == 1 else None


#: Keeps the unexpired results in the rows of the tasks selected by a condition on
#: ``tasks`` (parameters: now, then the condition's), moving them to ``results``.
KEEP_RESULTS_SQL = (
    "INSERT INTO results (task_id, status, finished_at, expires_at, data) "
    "SELECT id, 'success', lease_until, result_expires, result FROM tasks "
    "WHERE result IS NOT NULL AND (result_expires IS NULL OR result_expires > ?) AND ({}) "
    "ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, "
    "finished_at = excluded.finished_at, expires_at = excluded.expires_at, data = excluded.data"
)


def purge(conn: sqlite3.Connection, queue: str | None) -> int:
    """Delete the tasks of one queue (or all) and their dependency rows; their results
    stay (those in task rows are moved to ``results``)."""
    begin_immediate(conn)
    now = time.time()
    if queue is None:
        conn.execute(KEEP_RESULTS_SQL.format("1"), (now,))
        staged = conn.execute("DELETE FROM task_batches RETURNING size").fetchall()
        n = sum(size for (size,) in staged) + conn.execute("DELETE FROM tasks").rowcount
        conn.execute("DELETE FROM task_deps")
    else:
        staged = conn.execute(
            "DELETE FROM task_batches WHERE queue = ? RETURNING size", (queue,)
        ).fetchall()
        expand(conn, "queue IS NULL")  # batches spanning queues: only their rows can tell
        conn.execute(KEEP_RESULTS_SQL.format("queue = ?"), (now, queue))
        n = sum(size for (size,) in staged)
        n += conn.execute("DELETE FROM tasks WHERE queue = ?", (queue,)).rowcount
        conn.execute("DELETE FROM task_deps WHERE task_id NOT IN (SELECT id FROM tasks)")
    return int(n)


def prune_finished(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` tasks that ended before ``before`` (and their dependency
    rows). A final row's ``lease_until`` is when it ended (see NOW_SQL); rows that
    ended without one (written before migration 4, or enqueued already cancelled)
    fall back to their creation time. A result in a deleted row that has not expired
    (its TTL outlives the task's retention) is moved to ``results``."""
    begin_immediate(conn)
    # a claimed batch lists the tasks of its that finished: they must not come back
    # RUNNING from it once their rows are gone
    expand(conn, "claim IS NOT NULL")
    ids: list[str] = []
    now = time.time()
    kept: list[tuple[Any, ...]] = []
    for status in sorted(FINAL_STATUSES):
        if len(ids) >= limit:
            break
        for tid, ended, result, expires in conn.execute(
            "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE status = ? "
            "AND (lease_until < ? OR (lease_until IS NULL AND created_at < ?)) LIMIT ?) "
            "RETURNING id, lease_until, result, result_expires",
            (status.value, before, before, limit - len(ids)),
        ):
            ids.append(tid)
            if result is not None and (expires is None or expires > now):
                kept.append((tid, "success", ended, expires, result))
    if kept:
        conn.executemany(
            "INSERT INTO results (task_id, status, finished_at, expires_at, data) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET status = "
            "excluded.status, finished_at = excluded.finished_at, "
            "expires_at = excluded.expires_at, data = excluded.data",
            kept,
        )
    if ids:
        conn.execute(
            "DELETE FROM task_deps WHERE task_id IN (SELECT value FROM json_each(?))",
            (_ids_param(ids),),
        )
    return len(ids)


def expire(conn: sqlite3.Connection, now: float) -> list[str]:
    """Mark pending/waiting tasks past their TTL EXPIRED; return them and the tasks found
    expired at claim time since the last call."""
    begin_immediate(conn)
    expand(conn, "claim IS NULL AND expires_min <= ?", (now,))
    seen = [
        r[0]
        for r in conn.execute(
            "UPDATE tasks SET unreported = NULL WHERE unreported IS NOT NULL RETURNING id"
        )
    ]
    new = [
        r[0]
        for r in conn.execute(
            "UPDATE tasks SET status = 'expired', error = ?, lease_until = ? "
            "WHERE status IN ('pending', 'waiting') AND lease_until IS NULL "
            "AND expires_at <= ? RETURNING id",
            (EXPIRED_MSG, now, now),
        )
    ]
    if new:
        conn.execute(
            "DELETE FROM task_deps WHERE task_id IN (SELECT value FROM json_each(?))",
            (_ids_param(new),),
        )
    return sorted(seen) + sorted(new)


# --- live workers --------------------------------------------------------------------------


def record_worker(conn: sqlite3.Connection, info: WorkerInfo) -> None:
    """Insert or replace a worker's heartbeat row."""
    conn.execute(
        "INSERT INTO workers (id, started_at, expires_at, info) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, "
        "expires_at = excluded.expires_at, info = excluded.info",
        (info.id, info.started_at, info.expires_at, encode_worker(info)),
    )


def remove_worker(conn: sqlite3.Connection, worker_id: str) -> None:
    """Delete a worker's heartbeat row."""
    conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))


def list_workers(conn: sqlite3.Connection) -> list[WorkerInfo]:
    """Live workers oldest first; rows of workers gone silent are deleted."""
    now = time.time()
    conn.execute("DELETE FROM workers WHERE expires_at <= ?", (now,))
    rows = conn.execute("SELECT info FROM workers ORDER BY started_at, id").fetchall()
    return [info for (data,) in rows if (info := decode_worker(data)) is not None]


# --- paused queues -------------------------------------------------------------------------


def pause_queue(conn: sqlite3.Connection, queue: str) -> None:
    """Mark a queue paused."""
    conn.execute(
        "INSERT INTO paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (queue, time.time()),
    )


def resume_queue(conn: sqlite3.Connection, queue: str) -> None:
    """Unmark a paused queue."""
    conn.execute("DELETE FROM paused_queues WHERE queue = ?", (queue,))


def paused_queues(conn: sqlite3.Connection) -> set[str]:
    """The paused queues."""
    return {q for (q,) in conn.execute("SELECT queue FROM paused_queues")}
