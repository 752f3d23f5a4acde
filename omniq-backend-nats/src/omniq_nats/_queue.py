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
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from nats.js import api

from omniq.errors import PayloadTooLargeError, SerializationError
from omniq.models import Task, TaskResult, TaskStatus
from omniq.storage.base import BaseResultStorage, BaseTaskQueue
from omniq_nats._base import NATSComponent
from omniq_nats._claim import ClaimMixin, Held, QueueState, task_key, ttl_key
from omniq_nats._config import decode_token, encode_token
from omniq_nats._connection import Connection
from omniq_nats._deps import DependencyMixin, decode_entry
from omniq_nats._kv import Bucket, Entry, ensure_stream, publish_many
from omniq_nats._publish import Turnstile
from omniq_nats._records import (
    Record,
    decode_record,
    encode_record,
    encode_ticket,
    record_for,
    task_from,
)
from omniq_nats._results import AsyncNATSResultStorage

__all__ = ["AsyncNATSQueue"]

#: Bytes reserved for the record's fields and the message headers next to the body.
OVERHEAD = 1024


class AsyncNATSQueue(NATSComponent, DependencyMixin, ClaimMixin, BaseTaskQueue):
    """Task queue on NATS JetStream (server 2.9+): see the module docs for the layout."""

    blocking_dequeue: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True

    def __init__(
        self, url: str | None = None, *, default_lease: float | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        self.default_lease = default_lease or self.settings.ack_wait
        self._states: dict[int, QueueState] = {}
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
        await ensure_stream(
            conn,
            api.StreamConfig(
                name=s.tasks_stream_name,
                subjects=[f"{tasks}.>", f"{dead}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.MEMORY if s.storage == "memory" else api.StorageType.FILE,
                num_replicas=s.replicas,
                duplicate_window=s.duplicate_window,
                discard=api.DiscardPolicy.OLD,
            ),
        )
        bucket = await Bucket.ensure(conn, s.tasks_bucket_name)
        index = await Bucket.ensure(conn, s.index_bucket_name)
        st = QueueState(conn=conn, bucket=bucket, index=index)
        await self._start_advisories(st)
        self._states[id(conn.loop)] = st

    async def _teardown(self, conn: Connection) -> None:
        st = self._states.pop(id(conn.loop), None)
        if st is not None:
            await self._drop_ahead(st)
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
            await self._ensure_consumer(st, queue, priority)
        await st.index.put_many(
            [(ttl_key(t.id), b"") for i, t in enumerate(tasks) if t.expires_at and first[t.id] == i]
        )
        records = {
            i: encode_record(record_for(tasks[i], TaskStatus.PENDING, bodies[i])) for i in simple
        }
        revs = await st.bucket.create_many([(task_key(tasks[i].id), records[i]) for i in simple])
        created = [(i, rev) for i, rev in zip(simple, revs, strict=True) if rev is not None]
        await order.turn(ticket)
        await self._publish(
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
            statuses[i] = await self._enqueue_dependent(st, tasks[i], bodies[i])
        out: builtins.list[TaskStatus] = []
        for status, t in zip(statuses, tasks, strict=True):
            status = status or statuses[first[t.id]]
            assert status is not None
            out.append(status)
        return out

    async def _publish(
        self,
        st: QueueState,
        tickets: Sequence[tuple[str, int, str, int, bytes]],
        msg_id: str = "{id}:{rev}",
        sent: Callable[[], None] | None = None,
    ) -> None:
        """Publish work-queue messages ``(queue, priority, task id, revision, record)``.

        ``Nats-Msg-Id`` is the task id and the revision of the record the message stands
        for: a re-send of the same message (a producer retrying after a crash) is dropped
        by the stream within its duplicate window, while a message for a new record of
        the same id (re-enqueued after a purge) is never mistaken for a duplicate.
        """
        await publish_many(
            st.conn,
            [
                (
                    self._subject(queue, priority),
                    encode_ticket(task_id, rev, record),
                    {"Nats-Msg-Id": msg_id.format(id=task_id, rev=rev)},
                )
                for queue, priority, task_id, rev, record in tickets
            ],
            "enqueueing tasks",
            sent,
        )

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
            await self._ensure_consumer(st, rec.queue, rec.priority)
            await self._publish(
                st, [(rec.queue, rec.priority, task.id, entry.revision, entry.value)]
            )
        return status

    # --- claiming ------------------------------------------------------------------

    async def dequeue_many(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        worker_id: str,
        lease: float = 30.0,
        wait: float = 0.0,
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks: queues in the order given, then higher
        priority, then FIFO (``fetch(batch=N)`` per priority level). Waits up to ``wait``
        seconds (a long poll, woken by the server) when nothing is ready."""
        if limit <= 0 or not queues:
            return []
        st = await self._state()
        return await self._dequeue(st, list(queues), limit, worker_id, lease, wait)

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
            await self._reset_timer(st, held.reply, delay)
            return True
        # due now (claimable by the very next fetch, which a NAK, processed by the server
        # in the background, does not promise) or claimed elsewhere: a fresh message
        await self._ensure_consumer(st, rec.queue, rec.priority)
        await self._publish(st, [(rec.queue, rec.priority, task.id, rev, encode_record(rec))])
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
            await self._reset_timer(st, held.reply, lease)
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

    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        """Number of tasks, optionally of one queue and/or status."""
        st = await self._state()
        now = time.time()
        return sum(
            1
            for _, _, r in await self._records(st, status)
            if (queue is None or r.queue == queue)
            and (status is None or r.effective_status(now) is status)
        )

    async def list(
        self,
        queue: str | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
    ) -> builtins.list[Task]:
        """Tasks, oldest first, optionally filtered."""
        st = await self._state()
        now = time.time()
        out: builtins.list[Task] = []
        for tid, _, r in await self._records(st, status):
            if (queue is None or r.queue == queue) and (
                status is None or r.effective_status(now) is status
            ):
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
            if rec is None or entry is None or rec.effective_status().is_final:
                return False
            new = rec.but(
                status=TaskStatus.CANCELLED, lease_until=None, error=reason or "cancelled"
            )
            if await st.bucket.cas(key, encode_record(new), entry.revision) is not None:
                await self._drop_held(st, task_id)
                return True
        return False  # pragma: no cover

    async def purge(self, queue: str | None = None) -> int:
        """Delete every task (of one queue, or all) with its messages."""
        st = await self._state()
        s = self.settings
        await self._drop_ahead(st)
        if queue is None:
            count = len(await st.bucket.keys("t.*"))
            await st.conn.call(
                "purging tasks", lambda: st.conn.js.purge_stream(s.tasks_stream_name)
            )
            await st.bucket.purge_all()
            await st.index.purge_all()
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
            elif r.effective_status(now) is TaskStatus.EXPIRED and not r.status.is_final:
                expired = r.but(
                    status=TaskStatus.EXPIRED, reported=True, error="expired before it ran (TTL)"
                )
                todo.append((tid, e, expired))
            elif r.status.is_final:
                done.append(tid)
        todo.sort(key=lambda x: (x[2].created_at, x[0]))
        revs = await st.bucket.cas_many(
            [(task_key(tid), encode_record(r), e.revision) for tid, e, r in todo]
        )
        reported = [tid for (tid, _, _), rev in zip(todo, revs, strict=True) if rev is not None]
        await st.index.purge_keys([ttl_key(t) for t in done + reported])
        return reported

    # --- administration ------------------------------------------------------------

    async def drop(self) -> None:
        """Delete this queue's stream and buckets (all tasks, consumers, dead letters)."""
        st = await self._state()
        s = self.settings
        await self._drop_ahead(st)
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
