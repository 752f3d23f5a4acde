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
record says so, without a request. For the others it lists their index keys and flips
each dependent whose dependencies all succeeded to PENDING, publishing its message first
(a worker that fetches it before the flip looks again shortly), or cancels it,
transitively. A dependent enqueued before its dependency existed is released by the
periodic ``sweep_waiting`` of workers (its dependency carries no flag).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omniq.models import Task, TaskStatus
from omniq.storage.base import Released
from omniq_nats._claim import QueueState, task_key
from omniq_nats._config import decode_token, encode_token
from omniq_nats._kv import Entry
from omniq_nats._records import FINAL, Record, decode_record, encode_record, record_for

__all__ = ["DependencyMixin", "decode_entry", "dependent_key"]


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


def _status_of(
    depends_on: Sequence[str], records: Sequence[Record | None]
) -> tuple[TaskStatus, str | None]:
    statuses = [r.effective_status() if r is not None else None for r in records]
    for dep, status in zip(depends_on, statuses, strict=True):
        if status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED):
            return TaskStatus.CANCELLED, f"dependency {dep} ended {status.value}"
    if all(s is TaskStatus.SUCCESS for s in statuses):
        return TaskStatus.PENDING, None
    return TaskStatus.WAITING, None


class DependencyMixin:
    """Dependency handling of :class:`~omniq_nats.AsyncNATSQueue`."""

    if TYPE_CHECKING:  # provided by the queue class and ClaimMixin

        async def _state(self) -> QueueState: ...

        async def _ensure_consumer(self, st: QueueState, queue: str, priority: int) -> None: ...

        async def _existing(self, st: QueueState, task: Task) -> TaskStatus: ...

        async def _publish(
            self,
            st: QueueState,
            tickets: Sequence[tuple[str, int, str, int, bytes]],
            msg_id: str = "{id}:{rev}",
        ) -> None: ...

    async def _dependency_records(
        self, st: QueueState, depends_on: Sequence[str]
    ) -> builtins.list[Record | None]:
        entries = await st.bucket.get_many([task_key(d) for d in depends_on])
        return [decode_entry(e) for e in entries]

    async def _dependency_status(
        self, st: QueueState, depends_on: Sequence[str]
    ) -> tuple[TaskStatus, str | None]:
        return _status_of(depends_on, await self._dependency_records(st, depends_on))

    async def _enqueue_dependent(self, st: QueueState, task: Task, body: bytes) -> TaskStatus:
        records = await self._dependency_records(st, task.depends_on)
        status, reason = _status_of(task.depends_on, records)
        key = task_key(task.id)
        if status is TaskStatus.PENDING:
            await self._ensure_consumer(st, task.queue, task.priority)
            data = encode_record(record_for(task, status, body))
            rev = await st.bucket.create(key, data)
            if rev is None:
                return await self._existing(st, task)
            await self._publish(st, [(task.queue, task.priority, task.id, rev, data)])
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
            if rec is None or entry is None or rec.dependents or rec.status in FINAL:
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
                await self._ensure_consumer(st, rec.queue, rec.priority)
                await self._publish(
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

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        """:meth:`release_dependents` for a batch. Tasks finished through this component
        are looked up in what their final writes said (no request; nothing to do for
        those without dependents); the rest in one listing of the dependents index."""
        if not task_ids:
            return Released()
        st = await self._state()
        todo: builtins.list[str] = []
        unknown: builtins.list[str] = []
        for task_id in task_ids:
            flagged = st.finished.pop(task_id, None)
            if flagged is None:
                unknown.append(task_id)
            elif flagged:
                todo.append(task_id)
        if unknown:
            index = await st.index.keys("d.>")
            listed = {decode_token(k.split(".", 2)[1]) for k in index if k.count(".") >= 2}
            todo += [t for t in unknown if t in listed]
        ready: builtins.list[str] = []
        cancelled: builtins.list[str] = []
        for task_id in todo:
            released = await self.release_dependents(task_id, succeeded)
            ready.extend(released.ready)
            cancelled.extend(released.cancelled)
        return Released(ready=ready, cancelled=cancelled)

    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        """Make waiting dependents of ``task_id`` ready, or cancel them (transitively)."""
        st = await self._state()
        ready: builtins.list[str] = []
        cancelled: builtins.list[str] = []
        todo = [(task_id, succeeded)]
        while todo:
            tid, ok = todo.pop()
            prefix = f"d.{encode_token(tid)}."
            index = await st.index.keys(prefix + "*")
            for dep_id in sorted(decode_token(k[len(prefix) :]) for k in index):
                rec = decode_entry(await st.bucket.get(task_key(dep_id)))
                if rec is None or rec.status is not TaskStatus.WAITING:
                    continue
                release = ok
                if ok:
                    status, _ = await self._dependency_status(st, rec.depends_on)
                    if status is TaskStatus.PENDING:
                        if await self._release_one(st, dep_id):
                            ready.append(dep_id)
                        continue
                    if status is TaskStatus.WAITING:
                        continue
                    release = False
                if not release and await self._cancel_waiting(
                    st, dep_id, f"dependency {tid} did not succeed"
                ):
                    cancelled.append(dep_id)
                    todo.append((dep_id, False))
            if index:
                await st.index.purge_subjects(st.index.pre + prefix + "*")
        return Released(ready=ready, cancelled=cancelled)
