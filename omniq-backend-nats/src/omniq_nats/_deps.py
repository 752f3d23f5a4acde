"""Task dependencies: WAITING records in KV, a dependents index, release or cancel.

A task with unfinished ``depends_on`` is stored WAITING (record only, no message) after
an index key ``d.{dependency}.{task}`` per unfinished dependency; the enqueue checks the
dependencies again afterwards, so a dependency finishing in between is not missed.
``release_dependents`` lists the index of the finished task and flips each dependent
whose dependencies all succeeded to PENDING, publishing its message first (a worker that
fetches it before the flip looks again shortly), or cancels it, transitively.
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
from omniq_nats._records import Record, decode_record, encode_record, record_for

__all__ = ["DependencyMixin", "decode_entry"]


def decode_entry(entry: Entry | None) -> Record | None:
    """The record in a KV entry, or None (missing, deleted or corrupt)."""
    if entry is None or entry.value is None:
        return None
    try:
        return decode_record(entry.value)
    except Exception:
        return None


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

    async def _dependency_status(
        self, st: QueueState, depends_on: Sequence[str]
    ) -> tuple[TaskStatus, str | None]:
        entries = await st.bucket.get_many([task_key(d) for d in depends_on])
        statuses = []
        for e in entries:
            rec = decode_entry(e)
            statuses.append(rec.effective_status() if rec is not None else None)
        for dep, status in zip(depends_on, statuses, strict=True):
            if status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED):
                return TaskStatus.CANCELLED, f"dependency {dep} ended {status.value}"  # type: ignore[union-attr]
        if all(s is TaskStatus.SUCCESS for s in statuses):
            return TaskStatus.PENDING, None
        return TaskStatus.WAITING, None

    async def _enqueue_dependent(self, st: QueueState, task: Task, body: bytes) -> TaskStatus:
        status, reason = await self._dependency_status(st, task.depends_on)
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
        # WAITING: index first, so a release running meanwhile finds this task
        entries = await st.bucket.get_many([task_key(d) for d in task.depends_on])
        unfinished = [
            d
            for d, e in zip(task.depends_on, entries, strict=True)
            if (r := decode_entry(e)) is None or r.effective_status() is not TaskStatus.SUCCESS
        ]
        await asyncio.gather(
            *(
                st.bucket.put(f"d.{encode_token(d)}.{encode_token(task.id)}", b"")
                for d in unfinished
            )
        )
        if await st.bucket.create(key, encode_record(record_for(task, status, body))) is None:
            return await self._existing(st, task)
        again, reason = await self._dependency_status(st, task.depends_on)
        if again is TaskStatus.PENDING and await self._release_one(st, task.id):
            return TaskStatus.PENDING
        if again is TaskStatus.CANCELLED and await self._cancel_waiting(st, task.id, reason or ""):
            return TaskStatus.CANCELLED
        return TaskStatus.WAITING

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
        """:meth:`release_dependents` for a batch: one listing of the dependency index
        (usually empty) instead of one per finished task."""
        if not task_ids:
            return Released()
        st = await self._state()
        index = await st.bucket.keys("d.>")
        if not index:
            return Released()
        with_dependents = {decode_token(k.split(".", 2)[1]) for k in index if k.count(".") >= 2}
        ready: builtins.list[str] = []
        cancelled: builtins.list[str] = []
        for task_id in task_ids:
            if task_id in with_dependents:
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
            index = await st.bucket.keys(prefix + "*")
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
                await st.bucket.purge_subjects(st.bucket.pre + prefix + "*")
        return Released(ready=ready, cancelled=cancelled)
