"""Versioned schema migrations, applied once under a transaction-level advisory lock.

Each migration is SQL run with ``search_path`` set to the backend's schema. Many
workers starting at once all call :func:`migrate`; the first takes
``pg_advisory_xact_lock`` for the schema, applies what is missing and commits; the
others wait on the lock, then find nothing left to do. ``@tasks_channel@`` in a
migration's SQL stands for the schema's tasks NOTIFY channel (a quoted literal).
"""

from __future__ import annotations

import hashlib
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
    Migration(
        2,
        "leaner task indexes; claims by a function with a fixed plan",
        """
-- A status change cannot be a HOT update (status is in the partial indexes'
-- predicates), so every index without a predicate got a new entry at each claim and
-- each completion. What is left: the primary key, and partial indexes each of which a
-- task enters at most once (pending: claims; running: leases; settled: counts).
DROP INDEX IF EXISTS tasks_queue_status;
DROP INDEX IF EXISTS tasks_status_seq;
DROP INDEX IF EXISTS tasks_seq;
-- counts of waiting and finished tasks by queue and status (pending tasks are counted
-- on tasks_claim, running ones on tasks_lease)
CREATE INDEX tasks_settled ON tasks (queue, status) WHERE status NOT IN ('pending', 'running');

-- The claim of one queue as a function, so that its plan is always the ordered walk of
-- tasks_claim that stops after $3 rows. A queue table's statistics are rarely right
-- (new, just filled, just drained), and with too few rows estimated the planner picks
-- a bitmap scan of every pending task plus a sort: a claim then costs O(queue depth).
-- $1 queue, $2 now, $3 limit, $4 worker id, $5 lease end, $6 error of expired tasks.
CREATE FUNCTION omniq_claim(text, float8, integer, text, float8, text)
RETURNS TABLE (c_id text, c_status text, c_priority integer, c_due float8, c_seq bigint,
    c_run_at float8, c_attempt integer, c_lease_until float8, c_worker_id text,
    c_error text, c_data bytea)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET search_path FROM CURRENT
AS $claim$
BEGIN
    RETURN QUERY
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
        lease_until = CASE WHEN t.expires_at <= $2 THEN NULL ELSE $5 END,
        finished_at = CASE WHEN t.expires_at <= $2 THEN $2 END,
        error = CASE WHEN t.expires_at <= $2 THEN $6 ELSE t.error END,
        unreported = CASE WHEN t.expires_at <= $2 THEN true ELSE t.unreported END
    FROM chosen WHERE t.id = chosen.id
    RETURNING t.id, t.status, t.priority, t.due, t.seq, t.run_at, t.attempt,
        t.lease_until, t.worker_id, t.error, t.data;
END
$claim$;

-- Completions as functions for the same reason: with a hash join only, a batch costs
-- O(batch) (primary key) instead of O(running x batch) in a nested loop.
-- $1 ids, $2 attempts (the fence), $3 now.
CREATE FUNCTION omniq_complete(text[], integer[], float8) RETURNS SETOF text
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_nestloop = off
SET search_path FROM CURRENT
AS $complete$
BEGIN
    RETURN QUERY
    UPDATE tasks AS t SET status = 'success', finished_at = $3, lease_until = NULL,
        error = NULL
    FROM unnest($1, $2) AS c(id, attempt)
    WHERE t.id = ANY($1) AND t.id = c.id AND t.status = 'running' AND t.attempt = c.attempt
    RETURNING t.id;
END
$complete$;

-- Complete the current claims and write their results in one statement: the fence
-- decides which results are written. $4..$8 the results' columns, $9 the channel
-- notified once when a result was stored. Returns the completed ids.
CREATE FUNCTION omniq_complete_with_results(text[], integer[], float8, text[], text[],
    float8[], float8[], bytea[], text) RETURNS SETOF text
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_nestloop = off
SET search_path FROM CURRENT
AS $complete$
BEGIN
    RETURN QUERY
    WITH done AS (
        UPDATE tasks AS t SET status = 'success', finished_at = $3, lease_until = NULL,
            error = NULL
        FROM unnest($1, $2) AS c(id, attempt)
        WHERE t.id = ANY($1) AND t.id = c.id AND t.status = 'running'
            AND t.attempt = c.attempt
        RETURNING t.id
    ), stored AS (
        INSERT INTO results (task_id, status, finished_at, expires_at, data)
        SELECT r.task_id, r.status, r.finished_at, r.expires_at, r.data
        FROM unnest($4, $5, $6, $7, $8) AS r(task_id, status, finished_at, expires_at, data)
        JOIN done ON done.id = r.task_id
        ON CONFLICT (task_id) DO UPDATE SET status = excluded.status,
            finished_at = excluded.finished_at, expires_at = excluded.expires_at,
            data = excluded.data
        RETURNING task_id
    ), woke AS (
        SELECT pg_notify($9, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
    )
    SELECT done.id FROM done WHERE (SELECT count(*) FROM woke) >= 0;
END
$complete$;
""",
    ),
    Migration(
        3,
        "live workers (one heartbeat row per worker) and paused queues",
        """
CREATE TABLE workers (
    id          text PRIMARY KEY,
    started_at  double precision NOT NULL,
    expires_at  double precision NOT NULL,
    info        jsonb NOT NULL
);
CREATE TABLE paused_queues (
    queue       text PRIMARY KEY,
    paused_at   double precision NOT NULL
);
""",
    ),
    Migration(
        4,
        "a new task's status by default; inserts wake workers by trigger; resumed claims",
        """
-- A bulk enqueue COPYs only the columns its tasks set: a new task is pending.
ALTER TABLE tasks ALTER COLUMN status SET DEFAULT 'pending';

-- Wake idle workers when tasks are added, inside the adding statement's transaction
-- (delivered at its commit), so that a COPY needs no second statement to notify. One
-- notification per statement, not per row; TG_ARGV[0] is the schema's tasks channel.
CREATE FUNCTION omniq_tasks_added() RETURNS trigger
LANGUAGE plpgsql
AS $added$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$added$;
CREATE TRIGGER tasks_added AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE PROCEDURE omniq_tasks_added(@tasks_channel@);

-- omniq_claim resumed after the last task a claim took ($7 priority, $8 due, $9 seq):
-- the scan seeks past the index entries of the tasks claimed since the last VACUUM
-- (dead for this index, but still walked by a scan from the start, so a claim from
-- the start costs O(tasks claimed since the last VACUUM) in a long drain).
CREATE FUNCTION omniq_claim_after(text, float8, integer, text, float8, text, integer,
    float8, bigint)
RETURNS TABLE (c_id text, c_status text, c_priority integer, c_due float8, c_seq bigint,
    c_run_at float8, c_attempt integer, c_lease_until float8, c_worker_id text,
    c_error text, c_data bytea)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET search_path FROM CURRENT
AS $claim$
BEGIN
    RETURN QUERY
    WITH ready AS (
        SELECT id, priority, due, seq FROM tasks
        WHERE queue = $1 AND status = 'pending' AND priority = $7
            AND (due, seq) > ($8, $9) AND (run_at IS NULL OR run_at <= $2)
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
        lease_until = CASE WHEN t.expires_at <= $2 THEN NULL ELSE $5 END,
        finished_at = CASE WHEN t.expires_at <= $2 THEN $2 END,
        error = CASE WHEN t.expires_at <= $2 THEN $6 ELSE t.error END,
        unreported = CASE WHEN t.expires_at <= $2 THEN true ELSE t.unreported END
    FROM chosen WHERE t.id = chosen.id
    RETURNING t.id, t.status, t.priority, t.due, t.seq, t.run_at, t.attempt,
        t.lease_until, t.worker_id, t.error, t.data;
END
$claim$;
""",
    ),
    Migration(
        5,
        "claims update by ctid, completions by primary key, a finish that reports "
        "dependents; task counts kept by triggers",
        """
-- Claims (the functions of migrations 2 and 4) update the rows they locked by their
-- ctid: the locked version cannot change before the update of the same statement,
-- and a TID scan replaces a primary-key descent per claimed task. A row whose newest
-- version was committed after the statement began is left unclaimed this time (the
-- update does not see it); the next claim takes it.
-- No JIT compilation in the hot functions: a plan step the settings disable costs
-- 1e10, far above jit_above_cost, and compiling then takes ~100 ms per call.
CREATE OR REPLACE FUNCTION omniq_claim(text, float8, integer, text, float8, text)
RETURNS TABLE (c_id text, c_status text, c_priority integer, c_due float8, c_seq bigint,
    c_run_at float8, c_attempt integer, c_lease_until float8, c_worker_id text,
    c_error text, c_data bytea)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET search_path FROM CURRENT
AS $claim$
BEGIN
    RETURN QUERY
    WITH ready AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE queue = $1 AND status = 'pending' AND (run_at IS NULL OR run_at <= $2)
        ORDER BY priority DESC, due, seq LIMIT $3 FOR UPDATE SKIP LOCKED
    ), lapsed AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE queue = $1 AND status = 'running' AND lease_until < $2
        ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT * FROM ready UNION ALL SELECT * FROM lapsed
    ), chosen AS (
        SELECT tid FROM picked ORDER BY priority DESC, due, seq LIMIT $3
    )
    UPDATE tasks AS t SET
        status = CASE WHEN t.expires_at <= $2 THEN 'expired' ELSE 'running' END,
        attempt = CASE WHEN t.expires_at <= $2 THEN t.attempt ELSE t.attempt + 1 END,
        worker_id = CASE WHEN t.expires_at <= $2 THEN t.worker_id ELSE $4 END,
        lease_until = CASE WHEN t.expires_at <= $2 THEN NULL ELSE $5 END,
        finished_at = CASE WHEN t.expires_at <= $2 THEN $2 END,
        error = CASE WHEN t.expires_at <= $2 THEN $6 ELSE t.error END,
        unreported = CASE WHEN t.expires_at <= $2 THEN true ELSE t.unreported END
    FROM chosen WHERE t.ctid = chosen.tid
    RETURNING t.id, t.status, t.priority, t.due, t.seq, t.run_at, t.attempt,
        t.lease_until, t.worker_id, t.error, t.data;
END
$claim$;

CREATE OR REPLACE FUNCTION omniq_claim_after(text, float8, integer, text, float8, text,
    integer, float8, bigint)
RETURNS TABLE (c_id text, c_status text, c_priority integer, c_due float8, c_seq bigint,
    c_run_at float8, c_attempt integer, c_lease_until float8, c_worker_id text,
    c_error text, c_data bytea)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET search_path FROM CURRENT
AS $claim$
BEGIN
    RETURN QUERY
    WITH ready AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE queue = $1 AND status = 'pending' AND priority = $7
            AND (due, seq) > ($8, $9) AND (run_at IS NULL OR run_at <= $2)
        ORDER BY priority DESC, due, seq LIMIT $3 FOR UPDATE SKIP LOCKED
    ), lapsed AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE queue = $1 AND status = 'running' AND lease_until < $2
        ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT * FROM ready UNION ALL SELECT * FROM lapsed
    ), chosen AS (
        SELECT tid FROM picked ORDER BY priority DESC, due, seq LIMIT $3
    )
    UPDATE tasks AS t SET
        status = CASE WHEN t.expires_at <= $2 THEN 'expired' ELSE 'running' END,
        attempt = CASE WHEN t.expires_at <= $2 THEN t.attempt ELSE t.attempt + 1 END,
        worker_id = CASE WHEN t.expires_at <= $2 THEN t.worker_id ELSE $4 END,
        lease_until = CASE WHEN t.expires_at <= $2 THEN NULL ELSE $5 END,
        finished_at = CASE WHEN t.expires_at <= $2 THEN $2 END,
        error = CASE WHEN t.expires_at <= $2 THEN $6 ELSE t.error END,
        unreported = CASE WHEN t.expires_at <= $2 THEN true ELSE t.unreported END
    FROM chosen WHERE t.ctid = chosen.tid
    RETURNING t.id, t.status, t.priority, t.due, t.seq, t.run_at, t.attempt,
        t.lease_until, t.worker_id, t.error, t.data;
END
$claim$;

-- Completions as a nested loop over the given claims, each row found by the primary
-- key: O(batch). The plans of migration 2 let the planner pick a walk of tasks_lease
-- (every running task, and the dead entries of every task claimed since the last
-- VACUUM) filtered against the batch: O(running x batch), chosen whenever the table's
-- statistics are missing or stale. ``(status = 'running') IS TRUE`` is the fence
-- written so that no partial index (whose predicate is ``status = ...``) matches it:
-- only the primary key reaches a row.
CREATE OR REPLACE FUNCTION omniq_complete(text[], integer[], float8) RETURNS SETOF text
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_nestloop = on
SET jit = off
SET search_path FROM CURRENT
AS $complete$
BEGIN
    RETURN QUERY
    UPDATE tasks AS t SET status = 'success', finished_at = $3, lease_until = NULL,
        error = NULL
    FROM unnest($1, $2) AS c(id, attempt)
    WHERE t.id = c.id AND t.attempt = c.attempt AND (t.status = 'running') IS TRUE
    RETURNING t.id;
END
$complete$;

-- omniq_complete_with_results, and whether some stored task depends on one of the
-- completed ones (c_dependents, the same on every row): the worker then skips the
-- release walk's separate probe. The completion is omniq_complete above (its own
-- plan settings); the results are joined to what it completed by a hash join. The
-- probe is a statement of its own, so it sees dependents committed while the update
-- waited for their FOR SHARE locks.
CREATE FUNCTION omniq_finish(text[], integer[], float8, text[], text[], float8[],
    float8[], bytea[], text)
RETURNS TABLE (c_id text, c_dependents boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_nestloop = off
SET jit = off
SET search_path FROM CURRENT
AS $finish$
DECLARE
    done text[];
BEGIN
    WITH d AS (
        SELECT x.id FROM omniq_complete($1, $2, $3) AS x(id)
    ), stored AS (
        INSERT INTO results (task_id, status, finished_at, expires_at, data)
        SELECT r.task_id, r.status, r.finished_at, r.expires_at, r.data
        FROM unnest($4, $5, $6, $7, $8) AS r(task_id, status, finished_at, expires_at, data)
        JOIN d ON d.id = r.task_id
        ON CONFLICT (task_id) DO UPDATE SET status = excluded.status,
            finished_at = excluded.finished_at, expires_at = excluded.expires_at,
            data = excluded.data
        RETURNING task_id
    ), woke AS (
        SELECT pg_notify($9, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
    )
    SELECT array_agg(d.id) INTO done FROM d WHERE (SELECT count(*) FROM woke) >= 0;
    IF done IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT u.id, EXISTS (SELECT 1 FROM task_deps WHERE depends_on = ANY (done))
    FROM unnest(done) AS u(id);
END
$finish$;

-- Task counts by queue and stored status, kept by statement-level triggers: every
-- statement that adds, changes or removes tasks appends one row per (queue, status)
-- whose number changed, with the change. A count sums a few such rows instead of
-- visiting every pending task (a count of 100,000 pending tasks walked 100,000 index
-- entries and heap rows). Rows are only ever inserted by writers (no hot row, no lock
-- between them); a count folds them into one row per (queue, status) now and then.
-- The table has no index, so a page read prunes the folded rows' dead versions.
CREATE TABLE task_counts (
    queue  text NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL
);
CREATE FUNCTION omniq_count_changes() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $counts$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_counts (queue, status, n)
        SELECT queue, status, count(*) FROM added GROUP BY queue, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_counts (queue, status, n)
        SELECT queue, status, -count(*) FROM removed GROUP BY queue, status;
    ELSE
        INSERT INTO task_counts (queue, status, n)
        SELECT queue, status, sum(d) FROM (
            SELECT queue, status, -1 AS d FROM removed
            UNION ALL
            SELECT queue, status, 1 AS d FROM added
        ) AS c GROUP BY queue, status HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END
$counts$;
-- (a trigger with transition tables serves one event)
CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE PROCEDURE omniq_count_changes();
CREATE TRIGGER tasks_counted_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE PROCEDURE omniq_count_changes();
CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE PROCEDURE omniq_count_changes();
-- the tasks stored already (CREATE TRIGGER waited for the writers in flight and holds
-- off new ones until this migration commits)
INSERT INTO task_counts (queue, status, n)
SELECT queue, status, count(*) FROM tasks GROUP BY queue, status;

-- What clients before migration 5 call: omniq_finish without the dependents flag.
CREATE OR REPLACE FUNCTION omniq_complete_with_results(text[], integer[], float8, text[],
    text[], float8[], float8[], bytea[], text) RETURNS SETOF text
LANGUAGE sql
AS $complete$
    SELECT c_id FROM omniq_finish($1, $2, $3, $4, $5, $6, $7, $8, $9);
$complete$;
""",
    ),
    Migration(
        6,
        "task ids compared bytewise; the claim index keyed by the queue's hash; a bulk "
        "enqueue counts its tasks itself",
        """
-- Ids are compared bytewise (COLLATE "C"): a step of the primary key (at every
-- enqueue, claim and completion: a claim or a completion is not a HOT update) is a
-- memcmp instead of a locale comparison. Equality is the same under any deterministic
-- collation; only the order of ids may change (the ids OmniQ makes are ASCII, sorted
-- alike). The indexes on the column are rebuilt; the rows are not rewritten.
ALTER TABLE tasks ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE results ALTER COLUMN task_id TYPE text COLLATE "C";

-- The claim index keyed by the queue's hash instead of its name: every key column
-- then has a fixed width (an index tuple's later columns are found at fixed offsets,
-- not by walking past the name) and compares as an integer. Each enqueued task adds
-- an entry, compared with about ten others on its way in: with the name first, this
-- index took about a third of a COPY's server time. The claims seek the hash and
-- check the name on the row (two queues whose names share a hash are walked together
-- and told apart there). Building the index reads the table once, under the lock.
CREATE INDEX tasks_claim_by_hash ON tasks (hashtext(queue), priority DESC, due, seq)
    WHERE status = 'pending';
DROP INDEX tasks_claim;
ALTER INDEX tasks_claim_by_hash RENAME TO tasks_claim;

CREATE OR REPLACE FUNCTION omniq_claim(text, float8, integer, text, float8, text)
RETURNS TABLE (c_id text, c_status text, c_priority integer, c_due float8, c_seq bigint,
    c_run_at float8, c_attempt integer, c_lease_until float8, c_worker_id text,
    c_error text, c_data bytea)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET search_path FROM CURRENT
AS $claim$
BEGIN
    RETURN QUERY
    WITH ready AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE hashtext(queue) = hashtext($1) AND queue = $1 AND status = 'pending'
            AND (run_at IS NULL OR run_at <= $2)
        ORDER BY priority DESC, due, seq LIMIT $3 FOR UPDATE SKIP LOCKED
    ), lapsed AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE queue = $1 AND status = 'running' AND lease_until < $2
        ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT * FROM ready UNION ALL SELECT * FROM lapsed
    ), chosen AS (
        SELECT tid FROM picked ORDER BY priority DESC, due, seq LIMIT $3
    )
    UPDATE tasks AS t SET
        status = CASE WHEN t.expires_at <= $2 THEN 'expired' ELSE 'running' END,
        attempt = CASE WHEN t.expires_at <= $2 THEN t.attempt ELSE t.attempt + 1 END,
        worker_id = CASE WHEN t.expires_at <= $2 THEN t.worker_id ELSE $4 END,
        lease_until = CASE WHEN t.expires_at <= $2 THEN NULL ELSE $5 END,
        finished_at = CASE WHEN t.expires_at <= $2 THEN $2 END,
        error = CASE WHEN t.expires_at <= $2 THEN $6 ELSE t.error END,
        unreported = CASE WHEN t.expires_at <= $2 THEN true ELSE t.unreported END
    FROM chosen WHERE t.ctid = chosen.tid
    RETURNING t.id, t.status, t.priority, t.due, t.seq, t.run_at, t.attempt,
        t.lease_until, t.worker_id, t.error, t.data;
END
$claim$;

CREATE OR REPLACE FUNCTION omniq_claim_after(text, float8, integer, text, float8, text,
    integer, float8, bigint)
RETURNS TABLE (c_id text, c_status text, c_priority integer, c_due float8, c_seq bigint,
    c_run_at float8, c_attempt integer, c_lease_until float8, c_worker_id text,
    c_error text, c_data bytea)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
SET search_path FROM CURRENT
AS $claim$
BEGIN
    RETURN QUERY
    WITH ready AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE hashtext(queue) = hashtext($1) AND queue = $1 AND status = 'pending'
            AND priority = $7
            AND (due, seq) > ($8, $9) AND (run_at IS NULL OR run_at <= $2)
        ORDER BY priority DESC, due, seq LIMIT $3 FOR UPDATE SKIP LOCKED
    ), lapsed AS (
        SELECT ctid AS tid, priority, due, seq FROM tasks
        WHERE queue = $1 AND status = 'running' AND lease_until < $2
        ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT * FROM ready UNION ALL SELECT * FROM lapsed
    ), chosen AS (
        SELECT tid FROM picked ORDER BY priority DESC, due, seq LIMIT $3
    )
    UPDATE tasks AS t SET
        status = CASE WHEN t.expires_at <= $2 THEN 'expired' ELSE 'running' END,
        attempt = CASE WHEN t.expires_at <= $2 THEN t.attempt ELSE t.attempt + 1 END,
        worker_id = CASE WHEN t.expires_at <= $2 THEN t.worker_id ELSE $4 END,
        lease_until = CASE WHEN t.expires_at <= $2 THEN NULL ELSE $5 END,
        finished_at = CASE WHEN t.expires_at <= $2 THEN $2 END,
        error = CASE WHEN t.expires_at <= $2 THEN $6 ELSE t.error END,
        unreported = CASE WHEN t.expires_at <= $2 THEN true ELSE t.unreported END
    FROM chosen WHERE t.ctid = chosen.tid
    RETURNING t.id, t.status, t.priority, t.due, t.seq, t.run_at, t.attempt,
        t.lease_until, t.worker_id, t.error, t.data;
END
$claim$;

-- Inserts are counted row by row, unless the inserting transaction counts them
-- itself: a bulk enqueue (COPY) sets omniq.counted for its transaction and adds one
-- task_counts row per queue. The statement-level trigger of migration 5 kept a copy
-- of every inserted row (its transition table, the task's bytes included) to group
-- them afterwards: a third of the server's work of a COPY beyond the rows and their
-- index entries. A row trigger whose WHEN is false queues nothing and keeps nothing.
-- Clients of migration 5 never set omniq.counted: their inserts are counted here.
DROP TRIGGER tasks_counted_insert ON tasks;
CREATE FUNCTION omniq_count_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $counts$
BEGIN
    INSERT INTO task_counts (queue, status, n) VALUES (NEW.queue, NEW.status, 1);
    RETURN NULL;
END
$counts$;
CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks
    FOR EACH ROW WHEN (current_setting('omniq.counted', true) IS DISTINCT FROM 'on')
    EXECUTE PROCEDURE omniq_count_insert();
""",
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def channel(schema: str, kind: str) -> str:
    """The NOTIFY channel of ``kind`` (``tasks`` or ``results``) in ``schema``."""
    name = f"omniq_{schema}_{kind}"
    if len(name) > 60:
        name = f"omniq_{hashlib.sha1(schema.encode()).hexdigest()[:20]}_{kind}"
    return name


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
            await conn.execute(m.sql.replace("@tasks_channel@", _literal(channel(schema, "tasks"))))
            await conn.execute(
                "INSERT INTO omniq_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
            done.append(m.version)
    return done
