"""AsyncPostgresQueue: the task queue in PostgreSQL, shared by any number of workers."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.errors import BackendError, BackendUnavailableError
from omniq.models import Task, TaskQuery, TaskResult, TaskStatus, WorkerInfo
from omniq.storage.base import BaseResultStorage, BaseTaskQueue, Released
from omniq.storage.columns import task_row
from omniq_postgres import _task_sql as sql
from omniq_postgres._component import PostgresComponent
from omniq_postgres._results import AsyncPostgresResultStorage

#: Shortest pause of an idle waiter that found due work it could not take (all locked).
_MIN_PAUSE = 0.02
#: Longest use of claim hints (see :func:`omniq_postgres._task_sql.claim`) before a claim
#: from the start: a bound on how late a notification lost with a dropped listener, or a
#: claim rolled back elsewhere, can make a ready task.
_HINT_TTL = 1.0
#: Most tasks written by one COPY of :meth:`AsyncPostgresQueue._copy`, and most COPYs
#: running at once (each on a connection of its own). Two: the server's share of a
#: bulk enqueue (rows, index entries, WAL: more CPU than the client's) then runs in two
#: backends while this process builds the next batches.
_COPY_MAX = 10_000
_COPY_WRITERS = 2

#: A bulk enqueue waiting for its COPY: tasks, their encoded bytes, its outcome.
_Copy = tuple[Sequence[Task], builtins.list[bytes], "asyncio.Future[bool]"]


def _settle(
    group: Sequence[_Copy], *, value: bool = False, error: BaseException | None = None
) -> None:
    for _, _, done in group:
        if done.done():
            continue
        if error is None:
            done.set_result(value)
        else:
            done.set_exception(error)


#: Hand-backs running in the background (referenced so they are not collected early).
_BACKGROUND: set[asyncio.Future[None]] = set()


class AsyncPostgresQueue(PostgresComponent, BaseTaskQueue):
    """Task queue with priorities, delays, TTL, leases with fencing, and dependencies.

    Claims are one ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)``
    per queue; a RUNNING task whose lease lapsed is claimable again with
    ``attempt + 1``. ``dequeue(wait=...)`` is woken by LISTEN/NOTIFY (enqueues of any
    process), sleeps until the next delayed task or lease end, and polls every
    ``poll_interval`` seconds as a fallback.
    """

    blocking_dequeue: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True
    supports_pruning: ClassVar[bool] = True

    def __init__(self, url: str | None = None, *, default_lease: float = 30.0, **kw: Any) -> None:
        super().__init__(url, **kw)  # serializer, database, backend options
        self.default_lease = default_lease
        self._hints: dict[str, sql.Hint] = {}
        self._hints_event: asyncio.Event | None = None
        self._hints_since = 0.0
        self._listen_tried = -_HINT_TTL
        self._copies: builtins.list[_Copy] = []
        self._copying: builtins.set[asyncio.Future[None]] = set()
        #: Ids the last :meth:`complete_with_results` completed, when no stored task
        #: depends on any of them (its release walk then needs no probe).
        self._without_dependents: builtins.set[str] = set()

    @property
    def _channel(self) -> str:
        return self._db.channels["tasks"]

    # --- enqueue -------------------------------------------------------------------------

    async def enqueue(self, task: Task) -> TaskStatus:
        """Store a task; idempotent by id (see :meth:`BaseTaskQueue.enqueue`)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[TaskStatus]:
        """Store several tasks: one ``COPY`` (or, for a few, one multi-row INSERT) when
        none has dependencies; idle workers are woken at commit (by trigger). Ids stored
        already are left unchanged and reported with their stored status. Every task is
        encoded first: a SerializationError leaves nothing written."""
        if not tasks:
            return []
        serializer = self.serializer
        if any(t.depends_on for t in tasks):
            rows = [task_row(serializer, t) for t in tasks]
            items = builtins.list(zip(tasks, rows, strict=True))
            return await self._run(lambda conn: sql.enqueue_general(conn, items))
        if len(tasks) >= sql.COPY_MIN and len({t.id for t in tasks}) == len(tasks):
            encode = serializer.encode_task
            if await self._copy(tasks, [encode(t) for t in tasks]):
                return [TaskStatus.PENDING] * len(tasks)

        async def plain(conn: Any) -> builtins.list[TaskStatus]:
            rows = [task_row(serializer, t) for t in tasks]
            inserted = await sql.insert_new(conn, rows)
            if len(inserted) == len({r[0] for r in rows}):
                return [TaskStatus.PENDING] * len(rows)
            # some ids existed already: report their stored statuses, unchanged
            known = await sql.statuses_of(
                conn, [r[0] for r in rows if r[0] not in inserted], time.time()
            )
            out, seen = [], set()
            for r in rows:
                if r[0] in inserted and r[0] not in seen:
                    out.append(TaskStatus.PENDING)
                    seen.add(r[0])
                else:
                    out.append(known.get(r[0], TaskStatus.PENDING))
            return out

        return await self._run(plain)

    async def _copy(self, tasks: Sequence[Task], data: builtins.list[bytes]) -> bool:
        """Store new tasks with COPY, in one statement with the other bulk enqueues of
        this process waiting meanwhile (``map()`` sends its batches at once): fewer,
        larger COPYs on at most ``_COPY_WRITERS`` connections. True once stored
        (committed); False when one of the ids is stored already, and then nothing of
        ``tasks`` was written."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._copies.append((tasks, data, done))
        if len(self._copying) < _COPY_WRITERS:
            writer = asyncio.ensure_future(self._write_copies())
            self._copying.add(writer)
            writer.add_done_callback(self._copying.discard)
        # a cancelled caller leaves its batch to the writer (enqueue is idempotent by id)
        return await asyncio.shield(done)

    async def _write_copies(self) -> None:
        """Write the waiting bulk enqueues, up to ``_COPY_MAX`` tasks per COPY, until none
        is left. When a joint COPY fails (an id stored already, or a bad row), each batch
        is written alone, so that each caller gets its own outcome."""
        schema = self.schema
        group: builtins.list[_Copy] = []
        try:
            while self._copies:
                group, size = [], 0
                while self._copies and (not group or size + len(self._copies[0][0]) <= _COPY_MAX):
                    group.append(self._copies.pop(0))
                    size += len(group[-1][0])
                if len(group) > 1:
                    tasks = [t for batch, _, _ in group for t in batch]
                    data = [d for _, batch_data, _ in group for d in batch_data]
                    if len({t.id for t in tasks}) == len(tasks):
                        try:
                            ok = await self._run(
                                lambda c: sql.copy_new(c, schema, tasks, data)  # noqa: B023
                            )
                        except BackendUnavailableError as e:
                            _settle(group, error=e)
                            continue
                        except Exception:
                            ok = False  # written alone below, each with its own outcome
                        if ok:
                            _settle(group, value=True)
                            continue
                for batch, batch_data, done in group:
                    try:
                        ok = await self._run(
                            lambda c: sql.copy_new(c, schema, batch, batch_data)  # noqa: B023
                        )
                    except Exception as e:
                        _settle([(batch, batch_data, done)], error=e)
                    else:
                        _settle([(batch, batch_data, done)], value=ok)
        except BaseException:
            left, self._copies = [*group, *self._copies], []
            _settle(left, error=BackendError("bulk enqueue stopped (the event loop is closing)"))
            raise

    # --- claim ---------------------------------------------------------------------------

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks in claim order, waiting up to ``wait`` s."""
        db = self._db
        deadline = time.monotonic() + wait
        signal = db.signals["tasks"]
        while True:
            event = signal.current()
            claimed = await self._claim(queues, limit, worker_id, lease)
            if claimed:
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if event.is_set():
                continue  # notified during the claim: claim again at once
            pause = min(remaining, db.options.poll_interval)
            due = await self._run(lambda conn: sql.next_due(conn, queues))
            if due is not None:
                pause = min(pause, max(due - time.time() + 0.001, _MIN_PAUSE))
            await db.wait("tasks", event, pause)

    async def _claim(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float
    ) -> builtins.list[Task]:
        serializer = self.serializer
        hints = await self._claim_hints()
        job = asyncio.ensure_future(
            self._run(
                lambda conn: sql.claim(conn, serializer, queues, limit, worker_id, lease, hints)
            )
        )
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # the claim may still commit: hand those tasks back at once instead of
            # leaving them to lease expiry
            job.add_done_callback(self._unclaim_lost)
            raise

    async def _claim_hints(self) -> dict[str, sql.Hint] | None:
        """The claim hints to use, or None without a LISTEN connection: hints are valid
        only while no tasks notification (an enqueue, a retry, a hand-back) came since
        they were taken, and for at most ``_HINT_TTL`` seconds."""
        db = self._db
        now = time.monotonic()
        if not db.listening:
            if now - self._listen_tried < _HINT_TTL:
                return None
            self._listen_tried = now
            await db.listen()
            if not db.listening:
                return None
        event = db.signals["tasks"].current()  # taken before the claim is sent
        if event is not self._hints_event or now - self._hints_since > _HINT_TTL:
            self._hints = {}
            self._hints_event, self._hints_since = event, now
        return self._hints

    def _unclaim_lost(self, job: asyncio.Future[builtins.list[Task]]) -> None:
        if job.cancelled() or job.exception() is not None or not job.result():
            return
        claims = [(t.id, t.attempt) for t in job.result()]
        channel = self._channel

        async def handback_all(conn: Any) -> None:
            await sql.unclaim_many(conn, claims)
            # ready again, before where claims resume: drop every process's hints
            await conn.execute("SELECT pg_notify($1, '')", channel)

        handback = asyncio.ensure_future(self._run(handback_all))
        _BACKGROUND.add(handback)
        handback.add_done_callback(_BACKGROUND.discard)

    # --- fenced updates -----------------------------------------------------------------

    async def complete(self, task: Task) -> bool:
        """Mark a claimed task SUCCESS; False for a stale claim."""
        return (await self.complete_many([task]))[0]

    async def complete_many(self, tasks: Sequence[Task]) -> builtins.list[bool]:
        """Complete several claimed tasks in one statement (one bool per task)."""
        if not tasks:
            return []
        self._without_dependents = set()  # only a finish says which have no dependents
        claims = [(t.id, t.attempt) for t in tasks]
        return await self._run(lambda conn: sql.complete_many(conn, claims))

    async def complete_with_results(
        self, finished: Sequence[tuple[Task, TaskResult]], results: BaseResultStorage
    ) -> builtins.list[bool]:
        """Complete the tasks and store the results of the current claims in one
        statement (one transaction) when ``results`` lives in this queue's schema; else
        as the base class does. Every result is encoded first: a SerializationError
        leaves nothing written."""
        if not (isinstance(results, AsyncPostgresResultStorage) and self.same_store(results)):
            return await super().complete_with_results(finished, results)
        if not finished:
            return []
        serializer = results.serializer
        encoded: dict[str, Any] = {}
        # every result is encoded (raising before anything is written); a task given
        # twice keeps its first result
        for _, result in finished:
            encoded.setdefault(result.task_id, results.encode(result, serializer))
        claims = [(t.id, t.attempt) for t, _ in finished]
        cols = [builtins.list(c) for c in zip(*encoded.values(), strict=True)]
        channel = self._db.channels["results"]

        async def run(conn: Any) -> builtins.list[bool]:
            rows = await conn.fetch(
                sql.FINISH_SQL,
                [c[0] for c in claims], [c[1] for c in claims], time.time(), *cols, channel,
            )  # fmt: skip
            done = {r[0] for r in rows}
            # no stored task depends on these: the release walk that follows needs no probe
            self._without_dependents = done if rows and not rows[0][1] else set()
            return sql.accepted(claims, set(done))

        return await self._run(run)

    async def fail(
        self, task: Task, retry_at: float | None = None, *, error: str | None = None
    ) -> bool:
        """PENDING again at ``retry_at``, or FAILED when None; False for a stale claim."""
        ok = await self._run(lambda c: sql.fail(c, task.id, task.attempt, retry_at, error))
        if ok and retry_at is not None:
            await self._notify(task.queue)
        return ok

    async def unclaim(self, task: Task) -> bool:
        """PENDING again at once without counting the claim; False for a stale claim."""
        ok = await self._run(lambda c: sql.unclaim(c, task.id, task.attempt))
        if ok:
            await self._notify(task.queue)
        return ok

    async def heartbeat(self, task: Task, lease: float | None = None) -> bool:
        """Extend the lease; False when the claim is no longer current."""
        seconds = lease or self.default_lease
        return await self._run(lambda c: sql.heartbeat(c, task.id, task.attempt, seconds))

    async def _notify(self, queue: str) -> None:
        channel = self._channel
        await self._run(lambda c: c.execute("SELECT pg_notify($1, $2)", channel, queue))

    # --- reads and maintenance -------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The stored task with its effective status, or None."""
        serializer = self.serializer
        return await self._run(lambda c: sql.get_task(c, serializer, task_id))

    async def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a pending, waiting or running task; False when unknown or final."""
        return await self._run(lambda c: sql.cancel(c, task_id, reason or "cancelled"))

    async def requeue(self, task_id: str) -> Task | None:
        """Put an ended task back to PENDING with a fresh retry budget."""
        serializer, channel = self.serializer, self._channel
        return await self._run(lambda c: sql.requeue(c, serializer, task_id, channel))

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue``."""
        await self._run(lambda c: sql.pause_queue(c, queue))

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        channel = self._channel
        await self._run(lambda c: sql.resume_queue(c, queue, channel))

    async def paused_queues(self) -> builtins.set[str]:
        """The paused queues."""
        return await self._run(sql.paused_queues)

    async def record_worker(self, info: WorkerInfo) -> None:
        """Store a worker's heartbeat."""
        await self._run(lambda c: sql.record_worker(c, info))

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        await self._run(lambda c: sql.remove_worker(c, worker_id))

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Live workers, oldest first."""
        return await self._run(sql.list_workers)

    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        """Number of tasks, optionally of one queue and/or effective status."""
        return await self._run(lambda c: sql.count_tasks(c, queue, status))

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        """Tasks, oldest first, optionally filtered."""
        queue, status, limit = query.queue, query.status, query.limit
        serializer = self.serializer
        newest, offset = query.newest_first, query.offset
        return await self._run(
            lambda c: sql.select_tasks(c, serializer, queue, status, limit, newest, offset)
        )

    async def purge(self, queue: str | None = None) -> int:
        """Delete every task (of one queue, or all); returns how many."""
        return await self._run(lambda c: sql.purge(c, queue))

    async def cleanup_expired(self, now: float | None = None) -> builtins.list[str]:
        """Mark tasks past their TTL EXPIRED; return them (and those expired at claim).
        Also folds the rows of the task counts when many have piled up (the workers'
        maintenance runs this every few seconds, whether or not anyone counts)."""
        at = now or time.time()

        async def sweep(conn: Any) -> builtins.list[str]:
            expired = await sql.expire(conn, at)
            await sql.fold_counts(conn)
            return expired

        return await self._run(sweep)

    async def prune_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` tasks that ended before ``before``; returns how many."""
        return await self._run(lambda c: sql.prune_finished(c, before, limit))

    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        """Make waiting dependents ready, or cancel them (transitively) on failure."""
        return await self.release_dependents_many([task_id], succeeded)

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        """:meth:`release_dependents` for several tasks in one transaction (a read-only
        probe first: most finished tasks have no dependents)."""
        ids = builtins.list(task_ids)
        known, self._without_dependents = self._without_dependents, set()
        if ids and known.issuperset(ids):
            # completed just now by :meth:`complete_with_results`, which found that no
            # stored task depends on them (a dependent enqueued since sees them ended
            # and is not WAITING on them)
            return Released(ready=[], cancelled=[])
        ready, cancelled = await self._run(lambda c: sql.release_many(c, ids, succeeded))
        if ready:
            await self._notify("")
        return Released(ready=ready, cancelled=cancelled)
