"""The schema as an ordered list of versioned migrations, applied on connect.

``schema_version`` holds one row per applied migration. :func:`migrate` reads the
version without a write lock (the common case: nothing to do), and otherwise applies the
missing migrations in one ``BEGIN IMMEDIATE`` transaction, so several processes starting
at once apply each migration exactly once. New migrations are appended, never edited.
"""

from __future__ import annotations

import sqlite3
import time

import msgspec

from omniq.errors import BackendError


class Migration(msgspec.Struct, frozen=True):
    """One schema step: its version number, a description and its statements."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tasks, task dependencies, results, events and schedules",
        (
            """CREATE TABLE tasks (
                id TEXT PRIMARY KEY,
                queue TEXT NOT NULL,
                status TEXT NOT NULL,
                priority INTEGER NOT NULL DEFAULT 0,
                due REAL NOT NULL,
                run_at REAL,
                expires_at REAL,
                attempt INTEGER NOT NULL DEFAULT 0,
                lease_until REAL,
                worker_id TEXT,
                error TEXT,
                unreported INTEGER,
                created_at REAL NOT NULL,
                data BLOB NOT NULL
            )""",
            # claim order: queue, then priority (high first), then due time, then id
            "CREATE INDEX tasks_claim ON tasks (queue, status, priority DESC, due, id, run_at)",
            # one index for: counts by status; lapsed leases (status = 'running' AND
            # lease_until < now); the TTL sweep (pending/waiting rows have no lease, so
            # status IN (...) AND lease_until IS NULL AND expires_at <= now is a range)
            "CREATE INDEX tasks_state ON tasks (status, lease_until, expires_at)",
            "CREATE INDEX tasks_unreported ON tasks (unreported) WHERE unreported IS NOT NULL",
            """CREATE TABLE task_deps (
                depends_on TEXT NOT NULL,
                task_id TEXT NOT NULL,
                PRIMARY KEY (depends_on, task_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX task_deps_task ON task_deps (task_id)",
            """CREATE TABLE results (
                task_id TEXT PRIMARY KEY,
                status TEXT NOT NULL,
                finished_at REAL,
                expires_at REAL,
                data BLOB NOT NULL
            )""",
            "CREATE INDEX results_expiry ON results (expires_at) WHERE expires_at IS NOT NULL",
            """CREATE TABLE events (
                seq INTEGER PRIMARY KEY,
                id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                task_id TEXT,
                timestamp REAL NOT NULL,
                queue TEXT,
                func TEXT,
                worker_id TEXT,
                schedule_id TEXT,
                attempt INTEGER,
                message TEXT,
                metadata TEXT
            )""",
            "CREATE INDEX events_task ON events (task_id, timestamp)",
            "CREATE INDEX events_time ON events (timestamp)",
            "CREATE INDEX events_type ON events (event_type, timestamp)",
            """CREATE TABLE schedules (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                next_run_at REAL,
                data BLOB NOT NULL
            )""",
            "CREATE INDEX schedules_due ON schedules (state, next_run_at)",
        ),
    ),
    Migration(
        2,
        "partial task indexes: a status change touches only the indexes of its states",
        (
            # Indexes holding `status` moved their entry at every claim and completion;
            # these hold only the rows of the states they serve, so completing a task
            # touches tasks_running alone and finished tasks leave every index but the
            # primary key. Claim order: priority (high first), due time, id.
            "DROP INDEX tasks_claim",
            "DROP INDEX tasks_state",
            "CREATE INDEX tasks_ready ON tasks (queue, priority DESC, due, id, run_at, "
            "expires_at) WHERE status = 'pending'",
            # lapsed leases (lease_until < now) and running tasks of a queue
            "CREATE INDEX tasks_running ON tasks (lease_until, queue) WHERE status = 'running'",
            # tasks waiting on dependencies (core's periodic sweep lists them)
            "CREATE INDEX tasks_waiting ON tasks (queue) WHERE status = 'waiting'",
            # the TTL sweep
            "CREATE INDEX tasks_ttl ON tasks (expires_at) "
            "WHERE status IN ('pending', 'waiting') AND expires_at IS NOT NULL",
        ),
    ),
    Migration(
        3,
        "staged bulk enqueues: one row per batch of new tasks, expanded by the next reader",
        (
            # A bulk enqueue of new tasks without dependencies writes its task rows as one
            # blob here (one B-tree insert instead of three per task); the claims, reads
            # and enqueues that need them move them into `tasks` (see _staging.py).
            # first_id/last_id bound the batch's ids, which are strictly increasing, so
            # an id conflict is found with one range probe. `queue` (NULL when the
            # batch spans queues) and `expires_min` (the earliest TTL, NULL for none) let
            # count() include staged tasks without expanding them; `prio_max` and
            # `due_min` bound the claim order of its tasks, so a claim expands only the
            # batches that may hold one of the next tasks. `error` marks a blob that
            # could not be decoded: it is kept for inspection and never retried.
            """CREATE TABLE task_batches (
                seq INTEGER PRIMARY KEY,
                first_id TEXT NOT NULL,
                last_id TEXT NOT NULL,
                size INTEGER NOT NULL,
                queue TEXT,
                expires_min REAL,
                prio_max INTEGER NOT NULL,
                due_min REAL NOT NULL,
                rows BLOB NOT NULL,  -- zlib-compressed msgpack list of task rows
                error TEXT
            )""",
            "CREATE INDEX task_batches_range ON task_batches (first_id)",
        ),
    ),
    Migration(
        4,
        "live workers (one heartbeat row per worker) and paused queues",
        (
            """CREATE TABLE workers (
                id TEXT PRIMARY KEY,
                started_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                info BLOB NOT NULL  -- WorkerInfo as JSON
            ) WITHOUT ROWID""",
            """CREATE TABLE paused_queues (
                queue TEXT PRIMARY KEY,
                paused_at REAL NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        5,
        "results written with their task's completion; staged batches claimed in place",
        (
            # A worker's completion stores the result in the task's row, in the same
            # UPDATE that fences and finishes it (one B-tree write per task instead of an
            # UPDATE and an insert into `results` and its two indexes). A result in the
            # task row is the task's newest: storing one in `results` clears it (see
            # _results.py). result_expires: the result's TTL.
            "ALTER TABLE tasks ADD COLUMN result BLOB",
            "ALTER TABLE tasks ADD COLUMN result_expires REAL",
            # A batch's tasks are the rows [taken, stop) of its blob (stop NULL: to the
            # end): a claim taking the next rows in claim order advances `taken` instead
            # of writing (and compressing) what is left of the batch again.
            "ALTER TABLE task_batches ADD COLUMN taken INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE task_batches ADD COLUMN stop INTEGER",
            # A claimed batch: tasks claimed straight out of a staged one (attempt 1),
            # RUNNING for `worker_id` until `lease_until`; `claim` (random) tells it from
            # a later batch that reuses its seq. Its tasks get their row when they
            # finish (one insert each, result included), or RUNNING rows when anything
            # else needs them (expand); `size` counts the ones not finished.
            "ALTER TABLE task_batches ADD COLUMN claim INTEGER",
            "ALTER TABLE task_batches ADD COLUMN worker_id TEXT",
            "ALTER TABLE task_batches ADD COLUMN lease_until REAL",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration (0 for a new database)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(version)


def _check_not_newer(version: int, path: str) -> None:
    if version > LATEST_VERSION:
        raise BackendError(
            f"SQLite database {path} has schema version {version}, newer than this "
            f"omniq-backend-sqlite supports ({LATEST_VERSION}). Upgrade omniq-backend-sqlite "
            "in this environment, or point it at another file."
        )


def migrate(conn: sqlite3.Connection, path: str) -> list[int]:
    """Apply missing migrations; return the versions applied (empty when up to date).

    Runs on the connection's thread, outside any transaction.
    """
    current = schema_version(conn)
    _check_not_newer(current, path)
    if current == LATEST_VERSION:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = schema_version(conn)  # another process may have migrated meanwhile
        _check_not_newer(current, path)
        applied: list[int] = []
        for m in MIGRATIONS:
            if m.version <= current:
                continue
            for statement in m.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (m.version, m.description, time.time()),
            )
            applied.append(m.version)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied
