"""Versioned schema migrations, applied once under a transaction-level advisory lock.

Each migration is SQL run with ``search_path`` set to the backend's schema. Many
workers starting at once all call :func:`migrate`; the first takes
``pg_advisory_xact_lock`` for the schema, applies what is missing and commits; the
others wait on the lock, then find nothing left to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from omniq.errors import ConfigurationError

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Migration:
    """One step of the schema."""

    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tasks, results, events, schedules",
        """
CREATE TABLE tasks (
    seq         bigserial NOT NULL,
    id          text PRIMARY KEY,
    queue       text NOT NULL,
    status      text NOT NULL,
    priority    integer NOT NULL DEFAULT 0,
    due         double precision NOT NULL,
    run_at      double precision,
    expires_at  double precision,
    attempt     integer NOT NULL DEFAULT 0,
    lease_until double precision,
    worker_id   text,
    error       text,
    created_at  double precision NOT NULL,
    finished_at double precision,
    unreported  boolean,
    data        bytea NOT NULL
) WITH (fillfactor = 80);
-- claims: ready tasks of a queue in claim order (HOT updates keep it small)
CREATE INDEX tasks_claim ON tasks (queue, priority DESC, due, seq) WHERE status = 'pending';
-- delayed tasks (the next due time of an idle waiter)
CREATE INDEX tasks_delayed ON tasks (queue, run_at)
    WHERE status = 'pending' AND run_at IS NOT NULL;
-- lapsed leases, per queue
CREATE INDEX tasks_lease ON tasks (queue, lease_until) WHERE status = 'running';
-- counts by queue and status, listings in insertion order
CREATE INDEX tasks_queue_status ON tasks (queue, status);
CREATE INDEX tasks_status_seq ON tasks (status, seq);
CREATE INDEX tasks_seq ON tasks (seq);
-- pruning finished tasks by when they ended
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
-- TTL sweep and expired-at-claim reports
CREATE INDEX tasks_expiry ON tasks (expires_at)
    WHERE status IN ('pending', 'waiting') AND expires_at IS NOT NULL;
CREATE INDEX tasks_unreported ON tasks (id) WHERE unreported;

CREATE TABLE task_deps (
    depends_on text NOT NULL,
    task_id    text NOT NULL,
    pos        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (depends_on, task_id)
);
CREATE INDEX task_deps_task ON task_deps (task_id);

CREATE TABLE results (
    seq         bigserial NOT NULL,
    task_id     text PRIMARY KEY,
    status      text NOT NULL,
    finished_at double precision,
    expires_at  double precision,
    data        bytea NOT NULL
);
CREATE INDEX results_seq ON results (seq);
CREATE INDEX results_status ON results (status, seq);
CREATE INDEX results_expiry ON results (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE events (
    seq         bigserial PRIMARY KEY,
    id          text NOT NULL,
    event_type  text NOT NULL,
    task_id     text,
    timestamp   double precision NOT NULL,
    queue       text,
    func        text,
    worker_id   text,
    schedule_id text,
    attempt     integer,
    message     text,
    metadata    jsonb
);
CREATE INDEX events_task ON events (task_id, timestamp);
CREATE INDEX events_type ON events (event_type, timestamp);
CREATE INDEX events_time ON events (timestamp);
CREATE INDEX events_queue ON events (queue, timestamp);
CREATE INDEX events_schedule ON events (schedule_id, timestamp) WHERE schedule_id IS NOT NULL;

CREATE TABLE schedules (
    seq         bigserial NOT NULL,
    id          text PRIMARY KEY,
    state       text NOT NULL,
    next_run_at double precision,
    data        bytea NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE state = 'active';
CREATE INDEX schedules_seq ON schedules (seq);
""",
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def _refuse_newer(schema: str, have: set[int]) -> None:
    if have and max(have) > LATEST_VERSION:
        raise ConfigurationError(
            f"PostgreSQL schema {schema!r} was migrated to version {max(have)} by a newer "
            f"omniq-backend-postgres; this one knows up to {LATEST_VERSION}. Upgrade "
            "omniq-backend-postgres (or use another schema)."
        )


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


async def applied_versions(conn: asyncpg.Connection, schema: str) -> list[int]:
    """The versions applied to ``schema`` (empty when it has no OmniQ tables)."""
    exists = await conn.fetchval(
        "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'omniq_migrations'",
        schema,
    )
    if not exists:
        return []
    rows = await conn.fetch(f"SELECT version FROM {_quote(schema)}.omniq_migrations ORDER BY 1")
    return [int(r[0]) for r in rows]


async def migrate(conn: asyncpg.Connection, schema: str) -> list[int]:
    """Apply the missing migrations to ``schema``; return the versions applied now."""
    s = _quote(schema)
    have = set(await applied_versions(conn, schema))
    _refuse_newer(schema, have)
    if have >= {m.version for m in MIGRATIONS}:
        return []  # the common case: no lock taken
    done: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"omniq:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.omniq_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        have = set(await applied_versions(conn, schema))
        _refuse_newer(schema, have)
        await conn.execute(f"SET LOCAL search_path TO {s}")
        for m in MIGRATIONS:
            if m.version in have:
                continue
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO omniq_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
            done.append(m.version)
    return done
