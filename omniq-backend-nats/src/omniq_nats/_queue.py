"""AsyncNATSQueue: JetStream work queue for delivery, a KV bucket for task state.

Layout (names get ``{name_prefix}_`` / ``{name_prefix}.`` in front when set):

* stream ``OMNIQ_TASKS`` (WorkQueue retention) on ``omniq.tasks.{queue}.p{priority}``
  (one message per task: its id and record, ``Nats-Msg-Id`` = ``{id}:{revision}``) and
  ``omniq.dead.{queue}`` (dead letters, kept until someone consumes them);
* KV bucket ``omniq_tasks``: ``t.{id}`` the task record (status, attempt = fencing token,
  lease, run_at, TTL, ``dependents`` flag, body);
* KV bucket ``omniq_tasks_index``: ``d.{dependency}.{id}`` the dependents index and
  ``x.{id}`` the tasks with a TTL. It is a stream of its own because nats-server 2.9
  lists a stream's subjects (``keys``) by walking all of them: listing the index must
  cost the size of the index, not the number of tasks.

Order: the stream's order is the claim order within a (queue, priority) consumer, so
concurrent enqueues (``map()`` sends its batches overlapping) hand their messages to
the connection in the order the calls were made (:class:`~omniq_nats._publish.Turnstile`),
whatever their records' writes took.

Delays: a delayed task is published at once; a worker that fetches it early NAKs it with
``delay = run_at - now`` (2.9 has no scheduled messages), so it comes back when due.
Retries the same way. Cancel: the record turns CANCELLED; its message is dropped when next
fetched, and a running worker learns it from its next heartbeat (False).

Retention: ``prune_finished`` reads the tasks bucket's stream from the front (a record's
message is rewritten on every change, so the records that finished long ago come first)
and purges the final ones, a bounded batch per call (see there).

Parts: the queue owns a :class:`~omniq_nats._claim.Claims` (consumers, tickets, claim
passes, lease timers) and a :class:`~omniq_nats._deps.Dependencies` (WAITING records, the
dependents index, the release walk); both work on the per-connection
:class:`~omniq_nats._claim.QueueState` the queue passes them.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from nats.js import api

from omniq import rules
from omniq.errors import PayloadTooLargeError, SerializationError
from omniq.models import (
    Task,
    TaskQuery,
    TaskResult,
    TaskStatus,
    WorkerInfo,
    decode_worker,
    encode_worker,
)
from omniq.storage.base import BaseResultStorage, BaseTaskQueue, Released
from omniq_nats._base import NATSComponent
from omniq_nats._claim import Claims, Held, QueueState, task_key, ttl_key
from omniq_nats._cluster import placement, replicas_for
from omniq_nats._config import decode_token, encode_token
from omniq_nats._connection import Connection
from omniq_nats._deps import Dependencies, decode_entry
from omniq_nats._fetch import ack_info, stream_time
from omniq_nats._kv import KV_OP, Bucket, Entry, StreamReader, ensure_stream, stream_state
from omniq_nats._publish import Turnstile
from omniq_nats._records import (
    Record,
    decode_record,
    encode_record,
    record_for,
    task_from,
)
from omniq_nats._results import AsyncNATSResultStorage

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["AsyncNATSQueue"]

#: The queue a task goes to unless it names one (``Task.queue``'s default).
DEFAULT_QUEUE: str = next(f.default for f in msgspec.structs.fields(Task) if f.name == "queue")
#: Bytes reserved for the record's fields and the message headers next to the body.
OVERHEAD = 1024
#: Records a ``prune_finished`` call may read past without deleting them (not final).
PRUNE_SKIP = 10_000
#: Records a ``prune_finished`` call asks for per pull request (at most, at least).
PRUNE_READ = 500
PRUNE_READ_MIN = 64


class AsyncNATSQueue(NATSComponent, BaseTaskQueue):
    """Task queue on NATS JetStream (server 2.9+): see the module docs for the layout."""

    blocking_dequeue: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True
    supports_pruning: ClassVar[bool] = True
    #: Seconds a claim may take beyond its wait before a worker gives up on it: above a
    #: JetStream election (5-10 s measured with R3), during which requests stall.
    claim_grace: ClassVar[float] = 12.0

    def __init__(
        self, url: str | None = None, *, default_lease: float | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        self.default_lease = default_lease or self.settings.ack_wait
        self._states: dict[int, QueueState] = {}
        self._claims = Claims(self.settings, lambda: self.serializer)
        self._deps = Dependencies(self._claims, self._existing)
        #: per event loop: enqueue calls publish their messages in the order they came
        self._order: dict[int, Turnstile] = {}

    # --- connection ----------------------------------------------------------------

    async def _setup(self, conn: Connection) -> None:
        s = self.settings
        tasks, dead = s.tasks_subject_prefix, s.dead_letter_prefix
        if dead == tasks or dead.startswith(tasks + ".") or tasks.startswith(dead + "."):
            from omniq.errors import ConfigurationError

            raise ConfigurationError(
                f"dead_letter_subject {dead!r} must not overlap tasks_subject {tasks!r}"
            )
        storage = api.StorageType.MEMORY if s.storage == "memory" else api.StorageType.FILE
        # concurrently: on a cluster each new stream waits for an election of its own
        info, bucket, index = await asyncio.gather(
            ensure_stream(
                conn,
                api.StreamConfig(
                    name=s.tasks_stream_name,
                    subjects=[f"{tasks}.>", f"{dead}.>"],
                    retention=api.RetentionPolicy.WORK_QUEUE,
                    storage=storage,
                    num_replicas=replicas_for(s, conn),
                    placement=placement(s),
                    duplicate_window=s.duplicate_window,
                    discard=api.DiscardPolicy.OLD,
                ),
                s,
            ),
            Bucket.ensure(conn, s.tasks_bucket_name, settings=s),
            Bucket.ensure(conn, s.index_bucket_name, settings=s),
        )
        # consumers get the stream's replica count: an R1 consumer on an R3 work queue
        # would remove acknowledged messages on its own node only
        replicas = info.config.num_replicas or 1
        st = QueueState(conn=conn, bucket=bucket, index=index, replicas=replicas)
        if replicas > 1:
            # a replicated consumer takes an election to create (0.2-0.7 s measured on
            # loopback): the default queue's is made now rather than in the first enqueue
            await self._claims.ensure_consumer(st, DEFAULT_QUEUE, 0)
        await self._claims.start_advisories(st)
        self._states[id(conn.loop)] = st

    async def _teardown(self, conn: Connection) -> None:
        st = self._states.pop(id(conn.loop), None)
        if st is not None:
            await self._claims.drop_ahead(st)
        if st is not None and st.advisory is not None:
            try:
                await st.advisory.unsubscribe()
            except Exception:  # pragma: no cover - connection already closed
                pass

    async def _state(self) -> QueueState:
        conn = await self._conn()
        return self._states[id(conn.loop)]

    # --- enqueue -------------------------------------------------------------------

    async def enqueue(self, task: Task) -> TaskStatus:
        """Store a task (idempotent by id); returns its stored status."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[TaskStatus]:
        """Store many tasks: records and messages each in one pipelined round trip.

        Concurrent calls overlap, but each publishes its messages only after every
        earlier call has (or has failed): tasks are claimed in the order they were
        enqueued, within a queue and priority."""
        order = self._order.setdefault(id(asyncio.get_running_loop()), Turnstile())
        ticket = order.ticket()  # before any await: the place of this call
        try:
            return await self._enqueue_many(tasks, order, ticket)
        finally:
            order.done(ticket)

    async def _enqueue_many(
        self, tasks: Sequence[Task], order: Turnstile, ticket: int
    ) -> builtins.list[TaskStatus]:
        st = await self._state()
        limit = st.conn.max_payload - OVERHEAD
        bodies: list[bytes] = []
        for t in tasks:
            # state fields in the body are ignored: the record's win (see task_from)
            body = self.serializer.encode_task(t)
            if len(body) > limit:
                raise PayloadTooLargeError(
                    f"task {t.id} ({t.func}) encodes to {len(body)} bytes, over the NATS "
                    f"server's max_payload of {st.conn.max_payload} bytes (less {OVERHEAD} "
                    "for headers): raise max_payload in the nats-server config (at most 64 MB) "
                    "or pass large data by reference (a path or object-store URL)"
                )
            bodies.append(body)
        first: dict[str, int] = {}
        simple: list[int] = []
        dependent: list[int] = []
        for i, t in enumerate(tasks):
            if t.id not in first:
                first[t.id] = i
                (dependent if t.depends_on else simple).append(i)
        statuses: list[TaskStatus | None] = [None] * len(tasks)
        for queue, priority in {(tasks[i].queue, tasks[i].priority) for i in simple}:
            await self._claims.ensure_consumer(st, queue, priority)
        await st.index.put_many(
            [(ttl_key(t.id), b"") for i, t in enumerate(tasks) if t.expires_at and first[t.id] == i]
        )
        records = {
            i: encode_record(record_for(tasks[i], TaskStatus.PENDING, bodies[i])) for i in simple
        }
        revs = await st.bucket.create_many([(task_key(tasks[i].id), records[i]) for i in simple])
        created = [(i, rev) for i, rev in zip(simple, revs, strict=True) if rev is not None]
        await order.turn(ticket)
        await self._claims.publish(
            st,
            [
                (tasks[i].queue, tasks[i].priority, tasks[i].id, rev, records[i])
                for i, rev in created
            ],
            sent=functools.partial(order.done, ticket),  # later calls may go on
        )
        for i, _ in created:
            statuses[i] = TaskStatus.PENDING
        for i, rev in zip(simple, revs, strict=True):
            if rev is None:
                statuses[i] = await self._existing(st, tasks[i])
        for i in _dependencies_first(tasks, dependent):
            statuses[i] = await self._deps.enqueue_dependent(st, tasks[i], bodies[i])
        out: builtins.list[TaskStatus] = []
        for status, t in zip(statuses, tasks, strict=True):
            status = status or statuses[first[t.id]]
            assert status is not None
            out.append(status)
        return out

    async def _existing(self, st: QueueState, task: Task) -> TaskStatus:
        """Status of an already stored task; re-publishes a PENDING one's message (a
        producer that crashed between record and message re-sends: nothing is lost, and
        ``Nats-Msg-Id`` keeps it from being doubled)."""
        entry = await st.bucket.get(task_key(task.id))
        rec = decode_entry(entry)
        if rec is None or entry is None or entry.value is None:
            return TaskStatus.FAILED
        status = rec.effective_status()
        if status is TaskStatus.PENDING:
            await self._claims.ensure_consumer(st, rec.queue, rec.priority)
            await self._claims.publish(
                st, [(rec.queue, rec.priority, task.id, entry.revision, entry.value)]
            )
        return status

    # --- dependencies --------------------------------------------------------------

    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        """Make waiting dependents of ``task_id`` ready, or cancel them (transitively)."""
        return await self._deps.release(await self._state(), task_id, succeeded)

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        """:meth:`release_dependents` for a batch. Tasks finished through this component
        are looked up in what their final writes said (no request; nothing to do for
        those without dependents); the rest in one listing of the dependents index."""
        if not task_ids:
            return Released()
        return await self._deps.release_many(await self._state(), task_ids, succeeded)

    # --- claiming ------------------------------------------------------------------

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks: queues in the order given, then higher
        priority, then FIFO (``fetch(batch=N)`` per priority level). Waits up to ``wait``
        seconds (a long poll, woken by the server) when nothing is ready."""
        st = await self._state()
        return await self._claims.dequeue(st, queues, limit, worker_id, lease, wait)

    # --- finishing a claim ---------------------------------------------------------

    async def _transition(
        self, task: Task, change: dict[str, Any]
    ) -> tuple[QueueState, Record | None, int]:
        """Apply ``change`` to the current claim's record (CAS): the new record and its
        revision, or None for a stale claim."""
        st = await self._state()
        key = task_key(task.id)
        held = st.held.get(task.id)
        rec: Record | None = None
        rev = 0
        if held is not None and held.attempt == task.attempt:
            rec, rev = held.record, held.revision
        for _ in range(20):
            if rec is None:
                entry = await st.bucket.get(key)
                rec = decode_entry(entry)
                if rec is None or entry is None:
                    return st, None, 0
                rev = entry.revision
            if rec.status is not TaskStatus.RUNNING or rec.attempt != task.attempt:
                if held is not None and held.attempt == task.attempt:
                    st.held.pop(task.id, None)
                return st, None, 0
            new = rec.but(**change)
            new_rev = await st.bucket.cas(key, encode_record(new), rev)
            if new_rev is not None:
                if held is not None and held.attempt == task.attempt:
                    held.revision, held.record = new_rev, new
                return st, new, new_rev
            rec = None
        return st, None, 0  # pragma: no cover - endless contention

    async def complete(self, task: Task) -> bool:
        """Mark the claim SUCCESS and acknowledge its message; False if stale."""
        st, rec, _ = await self._transition(
            task, {"status": TaskStatus.SUCCESS, "lease_until": None, "error": None}
        )
        if rec is None:
            return False
        st.note_finished(task.id, rec)
        await self._drop_held(st, task.id)
        return True

    async def complete_many(self, tasks: Sequence[Task]) -> builtins.list[bool]:
        """Complete several claims: one pipelined round trip for those claimed through
        this component, one by one for the rest."""
        st = await self._state()
        results = [False] * len(tasks)
        fast: builtins.list[tuple[int, Task, Held]] = []
        for i, t in enumerate(tasks):
            held = st.held.get(t.id)
            if held is not None and held.attempt == t.attempt:
                fast.append((i, t, held))
        done = {
            "status": TaskStatus.SUCCESS,
            "lease_until": None,
            "error": None,
        }
        revs = await st.bucket.cas_many(
            [(task_key(t.id), encode_record(h.record.but(**done)), h.revision) for _, t, h in fast]
        )
        for (i, t, held), rev in zip(fast, revs, strict=True):
            if rev is not None:
                results[i] = True
                st.note_finished(t.id, held.record)
                if st.held.get(t.id) is held:
                    del st.held[t.id]
                await st.conn.nc.publish(held.reply, b"+ACK")
        settled = {i for i, _, _ in fast if results[i]}
        for i, t in enumerate(tasks):
            if i not in settled:
                results[i] = await self.complete(t)
        return results

    async def complete_with_results(
        self, finished: Sequence[tuple[Task, TaskResult]], results: BaseResultStorage
    ) -> builtins.list[bool]:
        """Write the results, then complete the claims (fenced CAS on each task record).

        JetStream 2.9 cannot write two buckets in one step, so the order keeps both
        promises: a result is written first, and only if no result of the same or a
        newer attempt is stored (so a stale attempt never replaces a newer result, nor
        a cancellation's); a completed task therefore always has its result, even when
        the worker is killed between the two steps (the task then runs again and its
        newer result replaces this one). A result whose claim turns out stale is
        deleted again. Results are encoded (and size-checked) before anything is
        written."""
        if not isinstance(results, AsyncNATSResultStorage):
            return await super().complete_with_results(finished, results)
        encoded = await results.encode_many([r for _, r in finished])
        revs = await results.put_fenced(
            [(e, task.attempt) for e, (task, _) in zip(encoded, finished, strict=True)]
        )
        accepted = await self.complete_many([t for t, _ in finished])
        await results.unwrite(
            [
                (key, rev)
                for (key, _), rev, ok in zip(encoded, revs, accepted, strict=True)
                if rev is not None and not ok
            ]
        )
        return accepted

    async def fail(
        self, task: Task, retry_at: float | None = None, *, error: str | None = None
    ) -> bool:
        """FAILED (message acked), or PENDING again at ``retry_at``; False if stale."""
        if retry_at is None:
            st, rec, _ = await self._transition(
                task, {"status": TaskStatus.FAILED, "lease_until": None, "error": error}
            )
            if rec is not None:
                st.note_finished(task.id, rec)
                await self._drop_held(st, task.id)
            return rec is not None
        change = {
            "status": TaskStatus.PENDING,
            "lease_until": None,
            "error": error,
            "run_at": retry_at,
            "lapses": 0,
        }
        return await self._requeue(task, change, retry_at)

    async def unclaim(self, task: Task) -> bool:
        """PENDING again at once without counting the claim; False if stale."""
        change = {"status": TaskStatus.PENDING, "lease_until": None, "attempt": task.attempt - 1}
        return await self._requeue(task, change, time.time())

    async def _requeue(self, task: Task, change: dict[str, Any], retry_at: float) -> bool:
        """Apply ``change`` (back to PENDING) to the claim and make the task claimable
        again at ``retry_at``; False if the claim is stale."""
        st, rec, rev = await self._transition(task, change)
        if rec is None:
            return False
        held = st.held.pop(task.id, None)
        delay = retry_at - time.time()
        if held is not None and delay > 0:  # our message becomes the retry: NAK it until then
            await self._claims.reset_timer(st, held.reply, delay)
            return True
        # due now (claimable by the very next fetch, which a NAK, processed by the server
        # in the background, does not promise) or claimed elsewhere: a fresh message
        await self._claims.ensure_consumer(st, rec.queue, rec.priority)
        await self._claims.publish(
            st, [(rec.queue, rec.priority, task.id, rev, encode_record(rec))]
        )
        if held is not None:
            await st.conn.nc.publish(held.reply, b"+ACK")
        return True

    async def heartbeat(self, task: Task, lease: float | None = None) -> bool:
        """Extend the lease (record and message timer); False if the claim is stale."""
        lease = lease or self.default_lease
        st, rec, _ = await self._transition(task, {"lease_until": time.time() + lease})
        if rec is None:
            return False
        held = st.held.get(task.id)
        if held is not None:
            held.lease = lease
            await self._claims.reset_timer(st, held.reply, lease)
        return True

    async def _drop_held(self, st: QueueState, task_id: str) -> None:
        held = st.held.pop(task_id, None)
        if held is not None:
            await st.conn.nc.publish(held.reply, b"+ACK")

    # --- inspection ----------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The stored task (TTL reflected in its status), or None."""
        st = await self._state()
        entry = await st.bucket.get(task_key(task_id))
        if entry is None or entry.value is None:
            return None
        try:
            rec = decode_record(entry.value)
        except SerializationError as e:
            return Task(func="<corrupt>", id=task_id, status=TaskStatus.FAILED, error=str(e))
        return task_from(task_id, rec, self.serializer)

    async def _records(
        self, st: QueueState, status: TaskStatus | None = None
    ) -> builtins.list[tuple[str, Entry, Record]]:
        """Task records, oldest first. WAITING ones are found through the dependents
        index instead of a scan of every record."""
        if status is TaskStatus.WAITING:
            ids = sorted({decode_token(k.split(".")[2]) for k in await st.index.keys("d.*.*")})
            entries = [e for e in await st.bucket.get_many([task_key(i) for i in ids]) if e]
        else:
            entries = await st.bucket.scan("t.*")
        out = []
        for e in entries:
            rec = decode_entry(e)
            if rec is not None:
                out.append((decode_token(e.key[2:]), e, rec))
        out.sort(key=lambda x: (x[2].created_at, x[0]))
        return out

    async def depth(self, queue: str | None = None) -> int:
        """Tasks not finished yet (waiting, delayed or running) of one queue or all,
        from the work-queue consumers (``num_pending + num_ack_pending``): one request
        per 256 (queue, priority) levels, whatever the number of tasks. An upper bound
        of ``count(queue, PENDING) + count(queue, RUNNING)``: a task cancelled while
        queued counts until a worker fetches and drops its message. WAITING tasks
        (dependencies) are not included. On a cluster the consumers' counts follow an
        enqueue or a completion a moment later."""
        counts = await self._claims.outstanding(await self._state())
        return counts.get(queue, 0) if queue is not None else sum(counts.values())

    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        """Number of tasks, optionally of one queue and/or status.

        PENDING and RUNNING counts first ask the consumers (:meth:`depth`): when they
        hold nothing, the answer is 0 without reading the records (a burst worker's
        idle check); otherwise, and for other statuses, the records are counted. On a
        replicated stream the stream leader must agree (a consumer learns of a message
        a moment after its publish was acknowledged)."""
        st = await self._state()
        if status in (TaskStatus.PENDING, TaskStatus.RUNNING) and await self._idle(st, queue):
            return 0
        now = time.time()
        return sum(
            1
            for _, _, r in await self._records(st, status)
            if (queue is None or r.queue == queue)
            and (status is None or r.effective_status(now) is status)
        )

    async def _idle(self, st: QueueState, queue: str | None) -> bool:
        """True when no message of the queue (or any) is waiting or held."""
        if await self.depth(queue):
            return False
        return st.replicas == 1 or await self._claims.stream_holds(st, queue) == 0

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        """Tasks, oldest first, optionally filtered (the first ``offset`` matches
        skipped)."""
        queue, status, limit = query.queue, query.status, query.limit
        skip = query.offset
        st = await self._state()
        now = time.time()
        out: builtins.list[Task] = []
        records = await self._records(st, status)
        for tid, _, r in reversed(records) if query.newest_first else records:
            if (queue is None or r.queue == queue) and (
                status is None or r.effective_status(now) is status
            ):
                if skip:
                    skip -= 1
                    continue
                out.append(task_from(tid, r, self.serializer, now))
                if len(out) >= limit:
                    break
        return out

    async def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a PENDING, WAITING or RUNNING task; False if unknown or final."""
        st = await self._state()
        key = task_key(task_id)
        for _ in range(20):
            entry = await st.bucket.get(key)
            rec = decode_entry(entry)
            if rec is None or entry is None or rules.is_final(rec.effective_status()):
                return False
            new = rec.but(
                status=TaskStatus.CANCELLED, lease_until=None, error=reason or "cancelled"
            )
            if await st.bucket.cas(key, encode_record(new), entry.revision) is not None:
                await self._drop_held(st, task_id)
                return True
        return False  # pragma: no cover

    async def requeue(self, task_id: str) -> Task | None:
        """Put an ended task back to PENDING with a fresh retry budget
        (:func:`omniq.rules.requeued`): a compare-and-set of its record, then a new
        work-queue message."""
        st = await self._state()
        key = task_key(task_id)
        entry = await st.bucket.get(key)
        rec = decode_entry(entry)
        if rec is None or entry is None or not rules.is_final(rec.effective_status()):
            return None
        task = task_from(task_id, rec, self.serializer)
        if task.func == "<undecodable>":
            return None
        fresh = rules.requeued(task, time.time())
        new = rec.but(
            status=TaskStatus.PENDING, body=self.serializer.encode_task(fresh), run_at=None,
            expires_at=fresh.expires_at, lease_until=None, worker_id=None, error=None,
            lapses=0, reported=True,
        )  # fmt: skip
        data = encode_record(new)
        rev = await st.bucket.cas(key, data, entry.revision)
        if rev is None:
            return None
        await self._claims.ensure_consumer(st, new.queue, new.priority)
        await self._claims.publish(st, [(new.queue, new.priority, task_id, rev, data)])
        return fresh

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue`` (key ``p.<queue>`` of the index bucket)."""
        st = await self._state()
        await st.index.put(f"p.{encode_token(queue)}", b"1")

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        st = await self._state()
        await st.index.purge_key(f"p.{encode_token(queue)}")

    async def paused_queues(self) -> builtins.set[str]:
        """The paused queues."""
        st = await self._state()
        return {decode_token(k.split(".", 1)[1]) for k in await st.index.keys("p.*")}

    async def record_worker(self, info: WorkerInfo) -> None:
        """Store a worker's heartbeat (key ``w.<id>`` of the index bucket)."""
        st = await self._state()
        await st.index.put(f"w.{encode_token(info.id)}", encode_worker(info))

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        st = await self._state()
        await st.index.purge_key(f"w.{encode_token(worker_id)}")

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Live workers, oldest first (records of silent workers are purged)."""
        st = await self._state()
        now = time.time()
        live: builtins.list[WorkerInfo] = []
        gone: builtins.list[str] = []
        for entry in await st.index.scan("w.*"):
            info = None if entry.value is None else decode_worker(entry.value)
            if info is None or not info.is_live(now):
                gone.append(entry.key)
            else:
                live.append(info)
        if gone:
            await st.index.purge_keys(gone)
        return sorted(live, key=lambda w: (w.started_at, w.id))

    async def purge(self, queue: str | None = None) -> int:
        """Delete every task (of one queue, or all) with its messages."""
        st = await self._state()
        s = self.settings
        await self._claims.drop_ahead(st)
        if queue is None:
            count = len(await st.bucket.keys("t.*"))
            await st.conn.call(
                "purging tasks", lambda: st.conn.js.purge_stream(s.tasks_stream_name)
            )
            await st.bucket.purge_all()
            for kind in ("x", "d"):  # TTL and dependency index keys; worker and pause keys stay
                await st.index.purge_subjects(f"{st.index.pre}{kind}.>")
            st.held.clear()
            st.finished.clear()
            return count
        ids = [tid for tid, _, r in await self._records(st) if r.queue == queue]
        await st.conn.call(
            "purging tasks",
            lambda: st.conn.js.purge_stream(
                s.tasks_stream_name, subject=f"{s.tasks_subject_prefix}.{encode_token(queue)}.>"
            ),
        )
        await st.bucket.purge_keys([task_key(t) for t in ids])
        await st.index.purge_keys([ttl_key(t) for t in ids])
        for tid in ids:
            st.held.pop(tid, None)
        return len(ids)

    async def cleanup_expired(self, now: float | None = None) -> builtins.list[str]:
        """Mark PENDING/WAITING tasks past their TTL EXPIRED; also report (once) those
        found expired when claimed. Returns their ids.

        Only tasks with a TTL are looked at, through the index ``x.{id}`` written at
        enqueue (an entry leaves the index once its task is final and reported), so
        the sweep every worker runs each second does not read every record.
        """
        st = await self._state()
        now = now or time.time()
        ids = [decode_token(k[2:]) for k in await st.index.keys("x.*")]
        entries = await st.bucket.get_many([task_key(i) for i in ids])
        todo: builtins.list[tuple[str, Entry, Record]] = []
        done: builtins.list[str] = []
        for tid, e in zip(ids, entries, strict=True):
            r = decode_entry(e)
            if r is None or e is None:
                done.append(tid)
            elif r.status is TaskStatus.EXPIRED and not r.reported:
                todo.append((tid, e, r.but(reported=True)))
            elif r.effective_status(now) is TaskStatus.EXPIRED and not rules.is_final(r.status):
                expired = r.but(
                    status=TaskStatus.EXPIRED, reported=True, error=rules.EXPIRED_MESSAGE
                )
                todo.append((tid, e, expired))
            elif rules.is_final(r.status):
                done.append(tid)
        todo.sort(key=lambda x: (x[2].created_at, x[0]))
        revs = await st.bucket.cas_many(
            [(task_key(tid), encode_record(r), e.revision) for tid, e, r in todo]
        )
        reported = [tid for (tid, _, _), rev in zip(todo, revs, strict=True) if rev is not None]
        await st.index.purge_keys([ttl_key(t) for t in done + reported])
        return reported

    async def prune_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` task records that reached a final status before
        ``before`` (and their index keys); returns how many.

        Bounded, without a listing of the bucket: a record's message is rewritten on
        every change (history 1), so a final record's message was stored when the task
        finished (or later), and the records that finished before ``before`` are among
        the messages stored before it, at the front of the stream. One ephemeral
        consumer reads from the front (from the last call's cursor, see below) and stops
        at the first message stored at or after ``before``, at ``limit`` final records,
        or after ``PRUNE_SKIP`` records that may not be pruned (PENDING, WAITING,
        RUNNING, or EXPIRED and not yet reported). Each final record is purged only if
        it is still the key's latest message.

        The cursor: a message the read passed over cannot become prunable while it
        stays (any change to a record is a new message at the end of the stream), so
        the next call starts after the last message this one examined; it is kept per
        connection and starts over when the stream was re-created.
        """
        if limit <= 0:
            return 0
        st = await self._state()
        conn, bucket = st.conn, st.bucket
        info = await stream_state(conn, bucket.stream)
        state = info.get("state") or {}
        if info.get("created") != st.prune_stream:
            st.prune_stream, st.prune_cursor = str(info.get("created")), 0
        start = max(st.prune_cursor + 1, int(state.get("first_seq", 0)))
        if not state.get("messages") or start > int(state.get("last_seq", 0)):
            return 0
        before_ns = int(before * 1e9)
        budget = limit + PRUNE_SKIP
        found: builtins.list[tuple[str, int, Record]] = []
        cursor = start - 1
        async with StreamReader.open(conn, bucket.stream, start_seq=start) as reader:
            while len(found) < limit and budget > 0:
                need = max(limit - len(found), PRUNE_READ_MIN)  # no more read than used
                msgs = await reader.read(min(PRUNE_READ, budget, need))
                if not msgs:
                    break
                for m in msgs:
                    if stream_time(m) >= before_ns:
                        budget = 0  # stored since: so is every message after it
                        break
                    budget -= 1
                    seq = ack_info(m)[0]
                    rec = _prunable(m, bucket.pre)
                    if rec is not None:
                        found.append((decode_token(m.subject[len(bucket.pre) + 2 :]), seq, rec))
                    cursor = seq
                    if len(found) >= limit:
                        break
        purged = await bucket.purge_revisions([(task_key(tid), seq) for tid, seq, _ in found])
        gone = [(tid, rec) for (tid, _, rec), ok in zip(found, purged, strict=True) if ok]
        await self._drop_index_keys(st, gone)
        st.prune_cursor = max(st.prune_cursor, cursor)
        return len(gone)

    async def _drop_index_keys(self, st: QueueState, gone: Sequence[tuple[str, Record]]) -> None:
        """Remove the index keys of pruned tasks: their TTL key, their keys as a
        dependent (``d.{dependency}.{id}``, stale once they are final) and their keys as
        a dependency (``d.{id}.{dependent}``, left when a release never ran) except
        those of a dependent still WAITING, which the index must go on listing."""
        keys = [ttl_key(tid) for tid, rec in gone if rec.expires_at is not None]
        with_deps = [(tid, rec) for tid, rec in gone if rec.depends_on or rec.dependents]
        if with_deps:
            ids = {encode_token(tid) for tid, _ in with_deps}
            found = [k.split(".") for k in await st.index.keys("d.*.*")]
            keys += [".".join(k) for k in found if k[2] in ids]  # as a dependent
            as_dependency = [k for k in found if k[1] in ids and k[2] not in ids]
            entries = await st.bucket.get_many(
                [task_key(decode_token(k[2])) for k in as_dependency]
            )
            for k, e in zip(as_dependency, entries, strict=True):
                rec = decode_entry(e)
                if rec is None or rec.status is not TaskStatus.WAITING:
                    keys.append(".".join(k))
        await st.index.purge_keys(keys)

    # --- administration ------------------------------------------------------------

    async def drop(self) -> None:
        """Delete this queue's stream and buckets (all tasks, consumers, dead letters)."""
        st = await self._state()
        s = self.settings
        await self._claims.drop_ahead(st)
        for stream in (s.tasks_stream_name, st.bucket.stream, st.index.stream):
            try:
                await st.conn.call(
                    f"deleting {stream}", functools.partial(st.conn.js.delete_stream, stream)
                )
            except Exception:
                pass
        st.held.clear()
        st.finished.clear()
        st.ensured.clear()
        st.levels.clear()
        st.consumers.clear()
        st.prune_cursor, st.prune_stream = 0, ""


def _dependencies_first(tasks: Sequence[Task], indices: Sequence[int]) -> builtins.list[int]:
    """``indices`` ordered so that a task comes after those of them it depends on: each
    then finds its dependencies' records stored and can flag them (see ``_deps``)."""
    where = {tasks[i].id: i for i in indices}
    deps = {i: [where[d] for d in tasks[i].depends_on if d in where] for i in indices}
    order: builtins.list[int] = []
    seen: set[int] = set()
    for root in indices:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(deps[root]))]
        while stack:
            i, pending = stack[-1]
            nxt = next((j for j in pending if j not in seen), None)
            if nxt is None:
                stack.pop()
                order.append(i)
            else:
                seen.add(nxt)
                stack.append((nxt, iter(deps[nxt])))
    return order


def _prunable(msg: Msg, pre: str) -> Record | None:
    """The record in a task bucket message if it may be pruned: final, and reported when
    EXPIRED (``cleanup_expired`` reports it first); else None."""
    if not msg.subject.startswith(pre + "t.") or (msg.headers or {}).get(KV_OP):
        return None
    try:
        rec = decode_record(msg.data)
    except SerializationError:
        return None  # left for an operator to look at
    if not rules.is_final(rec.status):
        return None
    if rec.status is TaskStatus.EXPIRED and not rec.reported:
        return None
    return rec
