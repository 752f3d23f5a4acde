"""Task dependencies: WAITING records, a dependents index, release or cancel.

A task with unfinished ``depends_on`` is stored WAITING (record only, no message). Before
its record is written, each unfinished dependency gets an index key
``d.{dependency}.{task}`` (in the index bucket, a stream of its own, so listing it costs
the size of the index, not the number of tasks) and the flag ``dependents`` on its record
(a revision-checked update, given up once the dependency is final). The enqueue then
checks the dependencies again. A dependency finishing meanwhile is never missed: either
it was final before the flag could land, and the re-check sees that and releases (or
cancels) the task itself, or its final record carries the flag, since every write of a
record is a compare-and-set of the record it was derived from.

So a finished task without the flag has nothing to release, and
``release_dependents_many`` skips the tasks finished through this component whose final
record says so, without a request. For the others it runs the release walk of
:mod:`omniq.rules`, one step for all of them at once: their index keys, one batch read of
the waiting dependents and of their dependencies, :func:`omniq.rules.release_step`
decides, and pipelined writes flip each dependent it releases to PENDING, publishing its
message first (a worker that fetches it before the flip looks again shortly), or cancel
it; the cancelled ones are the next step's ended tasks. A dependent enqueued before its
dependency existed is released by the periodic ``sweep_waiting`` of workers (its
dependency carries no flag).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Awaitable, Callable, Sequence

from omniq import rules
from omniq.models import Task, TaskStatus
from omniq.storage.base import Released
from omniq_nats._claim import Claims, QueueState, task_key
from omniq_nats._config import decode_token, encode_token
from omniq_nats._kv import Entry
from omniq_nats._records import Record, decode_record, encode_record, record_for

__all__ = ["Dependencies", "decode_entry", "dependent_key"]


def decode_entry(entry: Entry | None) -> Record | None:
    """The record in a KV entry, or None (missing, deleted or corrupt)."""
    if entry is None or entry.value is None:
        return None
    try:
        return decode_record(entry.value)
    except Exception:
        return None


def dependent_key(dependency: str, task_id: str) -> str:
    """Index key: ``task_id`` waits for ``dependency``."""
    return f"d.{encode_token(dependency)}.{encode_token(task_id)}"


def _outcome(
    depends_on: Sequence[str], records: Sequence[Record | None], now: float | None = None
) -> tuple[TaskStatus, str | None]:
    """:func:`omniq.rules.dependency_outcome` of these dependency records, with the
    reason when it cancels."""
    now = time.time() if now is None else now
    statuses = [r.effective_status(now) if r is not None else None for r in records]
    outcome, failed = rules.dependency_outcome(statuses)
    return outcome, None if failed is None else rules.dependency_failed(depends_on[failed])


class Dependencies:
    """Dependency handling of :class:`~omniq_nats.AsyncNATSQueue`, which owns one: it
    publishes through the queue's :class:`~omniq_nats._claim.Claims`, and ``existing``
    is the queue's answer for a task stored already (its status; a PENDING one's
    message re-sent). Works on the per-connection :class:`QueueState` it is given."""

    def __init__(
        self, claims: Claims, existing: Callable[[QueueState, Task], Awaitable[TaskStatus]]
    ) -> None:
        self._claims = claims
        self._existing = existing

    async def _dependency_records(
        self, st: QueueState, depends_on: Sequence[str]
    ) -> builtins.list[Record | None]:
        entries = await st.bucket.get_many([task_key(d) for d in depends_on])
        return [decode_entry(e) for e in entries]

    async def _dependency_status(
        self, st: QueueState, depends_on: Sequence[str]
    ) -> tuple[TaskStatus, str | None]:
        return _outcome(depends_on, await self._dependency_records(st, depends_on))

    async def enqueue_dependent(self, st: QueueState, task: Task, body: bytes) -> TaskStatus:
        records = await self._dependency_records(st, task.depends_on)
        status, reason = _outcome(task.depends_on, records)
        key = task_key(task.id)
        if status is TaskStatus.PENDING:
            await self._claims.ensure_consumer(st, task.queue, task.priority)
            data = encode_record(record_for(task, status, body))
            rev = await st.bucket.create(key, data)
            if rev is None:
                return await self._existing(st, task)
            await self._claims.publish(st, [(task.queue, task.priority, task.id, rev, data)])
            return status
        if status is TaskStatus.CANCELLED:
            rec = record_for(task, status, body, error=reason)
            if await st.bucket.create(key, encode_record(rec)) is None:
                return await self._existing(st, task)
            return status
        # WAITING: index and flags first, so a release running meanwhile finds this task
        unfinished = list(
            dict.fromkeys(
                d
                for d, r in zip(task.depends_on, records, strict=True)
                if r is None or r.effective_status() is not TaskStatus.SUCCESS
            )
        )
        await st.index.put_many([(dependent_key(d, task.id), b"") for d in unfinished])
        await asyncio.gather(*(self._flag_dependents(st, d) for d in unfinished))
        if await st.bucket.create(key, encode_record(record_for(task, status, body))) is None:
            return await self._existing(st, task)
        again, reason = await self._dependency_status(st, task.depends_on)
        if again is TaskStatus.PENDING and await self._release_one(st, task.id):
            return TaskStatus.PENDING
        if again is TaskStatus.CANCELLED and await self._cancel_waiting(st, task.id, reason or ""):
            return TaskStatus.CANCELLED
        return TaskStatus.WAITING

    async def _flag_dependents(self, st: QueueState, dependency: str) -> None:
        """Set ``dependents`` on an unfinished dependency's record (see the module docs);
        nothing to do once it is final or missing."""
        key = task_key(dependency)
        for _ in range(20):
            entry = await st.bucket.get(key)
            rec = decode_entry(entry)
            if rec is None or entry is None or rec.dependents or rules.is_final(rec.status):
                return
            new = encode_record(rec.but(dependents=True))
            if await st.bucket.cas(key, new, entry.revision) is not None:
                return
        return  # pragma: no cover - endless contention: the periodic sweep releases it

    async def _release_one(self, st: QueueState, task_id: str) -> bool:
        """WAITING -> PENDING. The message goes out first (a worker fetching it before the
        record flips looks again shortly), so a crash in between loses nothing."""
        key = task_key(task_id)
        published = False
        for _ in range(20):
            entry = await st.bucket.get(key)
            rec = decode_entry(entry)
            if rec is None or entry is None or rec.status is not TaskStatus.WAITING:
                return False
            if not published:
                await self._claims.ensure_consumer(st, rec.queue, rec.priority)
                await self._claims.publish(
                    st,
                    [(rec.queue, rec.priority, task_id, 0, b"")],
                    f"{{id}}:release:{entry.revision}",
                )
                published = True
            new = rec.but(status=TaskStatus.PENDING, error=None)
            if await st.bucket.cas(key, encode_record(new), entry.revision) is not None:
                return True
        return False  # pragma: no cover

    async def _cancel_waiting(self, st: QueueState, task_id: str, reason: str) -> bool:
        key = task_key(task_id)
        for _ in range(20):
            entry = await st.bucket.get(key)
            rec = decode_entry(entry)
            if rec is None or entry is None or rec.status is not TaskStatus.WAITING:
                return False
            new = rec.but(status=TaskStatus.CANCELLED, error=reason)
            if await st.bucket.cas(key, encode_record(new), entry.revision) is not None:
                return True
        return False  # pragma: no cover

    async def release_many(
        self, st: QueueState, task_ids: Sequence[str], succeeded: bool
    ) -> Released:
        """:meth:`release` for a batch. Tasks finished through this component
        are looked up in what their final writes said (no request; nothing to do for
        those without dependents); the rest in one listing of the dependents index."""
        if not task_ids:
            return Released()
        todo: builtins.list[str] = []
        unknown: builtins.list[str] = []
        for task_id in task_ids:
            flagged = st.finished.pop(task_id, None)
            if flagged is None:
                unknown.append(task_id)
            elif flagged:
                todo.append(task_id)
        listed: dict[str, builtins.list[str]] = {}
        if unknown:
            for k in await st.index.keys("d.>"):
                parts = k.split(".")
                if len(parts) == 3:
                    listed.setdefault(decode_token(parts[1]), []).append(k)
            todo += [t for t in unknown if t in listed]
        return await self._release_walk(st, [(t, succeeded) for t in todo], listed)

    async def release(self, st: QueueState, task_id: str, succeeded: bool) -> Released:
        """Make waiting dependents of ``task_id`` ready, or cancel them (transitively)."""
        return await self._release_walk(st, [(task_id, succeeded)])

    async def _release_walk(
        self,
        st: QueueState,
        ended: builtins.list[tuple[str, bool]],
        listed: dict[str, builtins.list[str]] | None = None,
    ) -> Released:
        """The release walk of :mod:`omniq.rules`, a step for all the ended tasks at once:
        their dependents from the index (``listed`` has the keys of some already), one
        batch read of those and of their dependencies, :func:`omniq.rules.release_step`
        decides, pipelined writes carry it out. The dependents this walk cancelled are
        the next step's ended tasks (one cancelled meanwhile by someone else is theirs
        to follow), and each step's index keys are purged once it is written."""
        out = Released()
        known = dict(listed or {})
        while ended:
            keys = await self._dependent_keys(st, [t for t, _ in ended], known)
            known = {}
            waiting, entries = await self._waiting_dependents(st, ended, keys)
            step = rules.release_step(ended, waiting)
            ready = await self._release_many(st, step.ready, entries)
            cancelled = await self._cancel_many(st, step.cancelled, entries)
            await st.index.purge_keys(
                [f"d.{encode_token(t)}.*" for t in dict.fromkeys(t for t, _ in ended) if keys[t]]
            )
            out.ready.extend(ready)
            out.cancelled.extend(cancelled)
            ended = [(t, False) for t in cancelled]
        return out

    async def _dependent_keys(
        self, st: QueueState, ids: Sequence[str], known: dict[str, builtins.list[str]]
    ) -> dict[str, builtins.list[str]]:
        """Index keys ``d.{id}.*`` of each task (one listing each, concurrently, for those
        not ``known``)."""
        todo = [t for t in dict.fromkeys(ids) if t not in known]
        found = await asyncio.gather(*(st.index.keys(f"d.{encode_token(t)}.*") for t in todo))
        return {**known, **dict(zip(todo, found, strict=True))}

    async def _waiting_dependents(
        self,
        st: QueueState,
        ended: Sequence[tuple[str, bool]],
        keys: dict[str, builtins.list[str]],
    ) -> tuple[builtins.list[rules.WaitingDependent], dict[str, tuple[Entry, Record]]]:
        """The WAITING dependents of the ended tasks with their dependencies' statuses
        (for :func:`omniq.rules.release_step`), and their entries as read."""
        dependents = {
            tid: sorted(decode_token(k.split(".", 2)[2]) for k in keys[tid])
            for tid in dict.fromkeys(t for t, _ in ended)
        }
        ids = list(dict.fromkeys(d for ds in dependents.values() for d in ds))
        entries: dict[str, tuple[Entry, Record]] = {}
        for tid, e in zip(ids, await st.bucket.get_many([task_key(i) for i in ids]), strict=True):
            rec = decode_entry(e)
            if rec is not None and e is not None and rec.status is TaskStatus.WAITING:
                entries[tid] = (e, rec)
        deps = list(dict.fromkeys(d for _, r in entries.values() for d in r.depends_on))
        now = time.time()
        statuses = {
            d: None if r is None else r.effective_status(now)
            for d, r in zip(deps, await self._dependency_records(st, deps), strict=True)
        }
        found = [
            rules.WaitingDependent(
                task_id=dep_id,
                ended=tid,
                dependencies=entries[dep_id][1].depends_on,
                statuses=[statuses[d] for d in entries[dep_id][1].depends_on],
            )
            for tid, ds in dependents.items()
            for dep_id in ds
            if dep_id in entries
        ]
        return found, entries

    async def _release_many(
        self, st: QueueState, ids: Sequence[str], entries: dict[str, tuple[Entry, Record]]
    ) -> builtins.list[str]:
        """WAITING -> PENDING for each, as :meth:`_release_one` does, pipelined: the
        messages first, then the revision-checked flips; a conflict is settled alone."""
        if not ids:
            return []
        for queue, priority in dict.fromkeys(
            (entries[t][1].queue, entries[t][1].priority) for t in ids
        ):
            await self._claims.ensure_consumer(st, queue, priority)
        await self._claims.publish(
            st,
            [
                (entries[t][1].queue, entries[t][1].priority, t, entries[t][0].revision, b"")
                for t in ids
            ],
            "{id}:release:{rev}",
        )
        revs = await st.bucket.cas_many(
            [
                (
                    task_key(t),
                    encode_record(entries[t][1].but(status=TaskStatus.PENDING, error=None)),
                    entries[t][0].revision,
                )
                for t in ids
            ]
        )
        return [
            t
            for t, rev in zip(ids, revs, strict=True)
            if rev is not None or await self._release_one(st, t)
        ]

    async def _cancel_many(
        self,
        st: QueueState,
        cancelled: Sequence[tuple[str, str]],
        entries: dict[str, tuple[Entry, Record]],
    ) -> builtins.list[str]:
        """WAITING -> CANCELLED (with the reason) for each, pipelined; a conflict is
        settled alone."""
        revs = await st.bucket.cas_many(
            [
                (
                    task_key(t),
                    encode_record(entries[t][1].but(status=TaskStatus.CANCELLED, error=reason)),
                    entries[t][0].revision,
                )
                for t, reason in cancelled
            ]
        )
        return [
            t
            for (t, reason), rev in zip(cancelled, revs, strict=True)
            if rev is not None or await self._cancel_waiting(st, t, reason)
        ]
