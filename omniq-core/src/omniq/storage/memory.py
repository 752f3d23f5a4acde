"""The in-process memory backend: all four components, thread- and loop-safe.

State lives in plain Python structures under one lock per store; waiting coroutines are
woken through :class:`~omniq.storage.notify.Notifier`, so any event loop in the process
(the caller's, or the sync wrappers' loop thread) can share a store. ``memory://`` makes
a private store; ``memory://NAME`` shares the store NAME across the process.
Tasks and results make the same serializer round trip as in every other backend
(DESIGN §13), so code that works on memory works everywhere: arguments and results
arrive as the wire format gives them, and a value that needs dill without a signing key
is refused here too.
"""

from __future__ import annotations

import builtins
import heapq
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from omniq import rules
from omniq.errors import ConfigurationError
from omniq.models import EventQuery, Schedule, Task, TaskEvent, TaskQuery, TaskResult, WorkerInfo
from omniq.models.enums import ScheduleState, TaskStatus
from omniq.serialization import default_manager
from omniq.storage.base import (
    BaseEventStorage,
    BaseResultStorage,
    BaseScheduleStorage,
    BaseTaskQueue,
    Released,
)
from omniq.storage.notify import Notifier
from omniq.sync import SyncWrapper

_STORES: dict[str, dict[str, Any]] = {}
_STORES_LOCK = threading.Lock()


def _store_name(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("memory", ""):
        raise ConfigurationError(
            f"memory backend URL must start with memory://, got {url!r} "
            "(use memory:// for a private store or memory://NAME for a shared one)"
        )
    return (parts.netloc + parts.path).strip("/") or None


def _shared(name: str | None, component: str, factory: type) -> Any:
    """The state object of ``component`` in store ``name`` (a fresh one when unnamed)."""
    if name is None:
        return factory()
    with _STORES_LOCK:
        store = _STORES.setdefault(name, {})
        if component not in store:
            store[component] = factory()
        return store[component]


def reset_memory_stores() -> None:
    """Forget every named memory store (for tests)."""
    with _STORES_LOCK:
        _STORES.clear()


# --- task queue -------------------------------------------------------------------------


def _round_trip_task(task: Task) -> Task:
    """The task as a durable backend would store and return it."""
    ser = default_manager()
    return ser.decode_task(ser.encode_task(task))


class _QueueState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tasks: dict[str, Task] = {}
        # per queue: heap of (-priority, due, id) for PENDING tasks (lazy deletion)
        self.ready: dict[str, list[tuple[int, float, str]]] = {}
        self.delayed: list[tuple[float, str]] = []  # (run_at, id)
        self.leases: list[tuple[float, str, int]] = []  # (lease_until, id, attempt)
        self.dependents: dict[str, set[str]] = {}
        self.newly_expired: list[str] = []
        self.finished_at: dict[str, float] = {}  # id -> when the task reached a final status
        self.notifier = Notifier()
        self.workers: dict[str, WorkerInfo] = {}  # live workers' heartbeats by id
        self.paused: set[str] = set()  # queues workers do not claim from


class AsyncMemoryQueue(BaseTaskQueue):
    """In-process task queue with priorities, delays, leases, TTL and dependencies."""

    schemes = ("memory",)
    blocking_dequeue: ClassVar[bool] = True
    cross_process: ClassVar[bool] = False
    supports_pruning: ClassVar[bool] = True

    def __init__(self, url: str | None = None, *, default_lease: float = 30.0) -> None:
        self.url = url or "memory://"
        self.default_lease = default_lease
        self._s: _QueueState = _shared(_store_name(url), "queue", _QueueState)

    def __repr__(self) -> str:
        return f"AsyncMemoryQueue({self.url!r})"

    # -- internal helpers (call with the lock held) --

    def _push_pending(self, t: Task, now: float) -> None:
        if t.run_at is not None and t.run_at > now:
            heapq.heappush(self._s.delayed, (t.run_at, t.id))
        else:
            heap = self._s.ready.setdefault(t.queue, [])
            heapq.heappush(heap, (-t.priority, t.run_at or t.created_at, t.id))

    def _promote(self, now: float) -> None:
        s = self._s
        while s.delayed and s.delayed[0][0] <= now:
            _, tid = heapq.heappop(s.delayed)
            t = s.tasks.get(tid)
            if t is not None and t.status is TaskStatus.PENDING:
                heap = s.ready.setdefault(t.queue, [])
                heapq.heappush(heap, (-t.priority, t.run_at or t.created_at, t.id))
        while s.leases and s.leases[0][0] < now:
            _, tid, attempt = heapq.heappop(s.leases)
            t = s.tasks.get(tid)
            if t is not None and t.attempt == attempt and t.lease_lapsed(now):
                t.status = TaskStatus.PENDING  # lease lapsed: claimable again
                t.lease_until = None
                heapq.heappush(
                    s.ready.setdefault(t.queue, []), (-t.priority, t.run_at or t.created_at, t.id)
                )

    def _claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float) -> list[Task]:
        s = self._s
        now = time.time()
        self._promote(now)
        claimed: list[Task] = []
        for q in queues:
            heap = s.ready.get(q)
            while heap and len(claimed) < limit:
                _, _, tid = heapq.heappop(heap)
                t = s.tasks.get(tid)
                if t is None or t.status is not TaskStatus.PENDING:
                    continue  # stale heap entry
                if t.run_at is not None and t.run_at > now:
                    heapq.heappush(s.delayed, (t.run_at, t.id))
                    continue
                if t.is_expired(now):
                    t.status = TaskStatus.EXPIRED
                    t.error = rules.EXPIRED_MESSAGE
                    s.finished_at[t.id] = now
                    s.newly_expired.append(t.id)
                    continue
                t.status = TaskStatus.RUNNING
                t.attempt += 1
                t.worker_id = worker_id
                t.lease_until = now + lease
                heapq.heappush(s.leases, (t.lease_until, t.id, t.attempt))
                claimed.append(t.copy())
            if len(claimed) >= limit:
                break
        return claimed

    def _current(self, task: Task) -> Task | None:
        t = self._s.tasks.get(task.id)
        if t is None or t.status is not TaskStatus.RUNNING or t.attempt != task.attempt:
            return None
        return t

    def _dependency_status(self, t: Task) -> tuple[TaskStatus, str | None]:
        statuses = [self._status_of(dep) for dep in t.depends_on]
        outcome, failed = rules.dependency_outcome(statuses)
        reason = None if failed is None else rules.dependency_failed(t.depends_on[failed])
        return outcome, reason

    def _status_of(self, task_id: str) -> TaskStatus | None:
        d = self._s.tasks.get(task_id)
        return d.effective_status() if d else None

    def _insert(self, task: Task, now: float) -> TaskStatus:
        s = self._s
        existing = s.tasks.get(task.id)
        if existing is not None:
            return existing.effective_status(now)
        t = task  # a fresh copy: see _round_trip_task
        t.attempt, t.lease_until, t.worker_id = 0, None, None
        status, reason = self._dependency_status(t) if t.depends_on else (TaskStatus.PENDING, None)
        t.status, t.error = status, reason
        s.tasks[t.id] = t
        if status.is_final:
            s.finished_at[t.id] = now
        if status is TaskStatus.WAITING:
            for dep in t.depends_on:
                s.dependents.setdefault(dep, set()).add(t.id)
        elif status is TaskStatus.PENDING:
            self._push_pending(t, now)
        return status

    # -- interface --

    async def enqueue(self, task: Task) -> TaskStatus:
        task = _round_trip_task(task)
        with self._s.lock:
            status = self._insert(task, time.time())
        self._s.notifier.notify_all()
        return status

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[TaskStatus]:
        copies = [_round_trip_task(t) for t in tasks]  # all encode, or none is stored
        now = time.time()
        with self._s.lock:
            statuses = [self._insert(t, now) for t in copies]
        self._s.notifier.notify_all()
        return statuses

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        deadline = time.monotonic() + wait
        while True:
            with self._s.lock:
                claimed = self._claim(queues, limit, worker_id, lease)
                next_due = self._next_wakeup()
            if claimed:
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if next_due is not None:
                remaining = min(remaining, max(next_due - time.time(), 0.001))
            await self._s.notifier.wait(remaining)

    def _next_wakeup(self) -> float | None:
        s = self._s
        times = [h[0][0] for h in (s.delayed, s.leases) if h]
        return min(times) if times else None

    async def complete(self, task: Task) -> bool:
        with self._s.lock:
            return self._complete(task)

    async def complete_many(self, tasks: Sequence[Task]) -> builtins.list[bool]:
        with self._s.lock:
            return [self._complete(t) for t in tasks]

    def _complete(self, task: Task) -> bool:
        t = self._current(task)
        if t is None:
            return False
        t.status, t.lease_until, t.error = TaskStatus.SUCCESS, None, None
        self._s.finished_at[t.id] = time.time()
        return True

    async def fail(
        self, task: Task, retry_at: float | None = None, *, error: str | None = None
    ) -> bool:
        with self._s.lock:
            t = self._current(task)
            if t is None:
                return False
            t.lease_until, t.error = None, error
            if retry_at is None:
                t.status = TaskStatus.FAILED
                self._s.finished_at[t.id] = time.time()
            else:
                t.status, t.run_at = TaskStatus.PENDING, retry_at
                self._push_pending(t, time.time())
        self._s.notifier.notify_all()
        return True

    async def unclaim(self, task: Task) -> bool:
        with self._s.lock:
            t = self._current(task)
            if t is None:
                return False
            t.status, t.lease_until = TaskStatus.PENDING, None
            t.attempt -= 1
            self._push_pending(t, time.time())
        self._s.notifier.notify_all()
        return True

    async def heartbeat(self, task: Task, lease: float | None = None) -> bool:
        with self._s.lock:
            t = self._current(task)
            if t is None:
                return False
            t.lease_until = time.time() + (lease or self.default_lease)
            heapq.heappush(self._s.leases, (t.lease_until, t.id, t.attempt))
            return True

    async def get(self, task_id: str) -> Task | None:
        with self._s.lock:
            t = self._s.tasks.get(task_id)
            if t is None:
                return None
            return t.copy(status=t.effective_status())

    async def cancel(self, task_id: str, reason: str | None = None) -> bool:
        with self._s.lock:
            t = self._s.tasks.get(task_id)
            if t is None or t.effective_status().is_final:
                return False
            t.status, t.lease_until = TaskStatus.CANCELLED, None
            t.error = reason or "cancelled"
            self._s.finished_at[t.id] = time.time()
            return True

    async def requeue(self, task_id: str) -> Task | None:
        now = time.time()
        with self._s.lock:
            t = self._s.tasks.get(task_id)
            if t is None or not t.effective_status(now).is_final:
                return None
            fresh = rules.requeued(t, now)
            self._s.tasks[task_id] = fresh
            self._s.finished_at.pop(task_id, None)
            self._push_pending(fresh, now)
            out = fresh.copy()
        self._s.notifier.notify_all()
        return out

    async def pause_queue(self, queue: str) -> None:
        with self._s.lock:
            self._s.paused.add(queue)

    async def resume_queue(self, queue: str) -> None:
        with self._s.lock:
            self._s.paused.discard(queue)
        self._s.notifier.notify_all()

    async def paused_queues(self) -> set[str]:
        with self._s.lock:
            return set(self._s.paused)

    async def record_worker(self, info: WorkerInfo) -> None:
        with self._s.lock:
            self._s.workers[info.id] = info

    async def remove_worker(self, worker_id: str) -> None:
        with self._s.lock:
            self._s.workers.pop(worker_id, None)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        now = time.time()
        with self._s.lock:
            for wid in [w.id for w in self._s.workers.values() if not w.is_live(now)]:
                del self._s.workers[wid]
            return sorted(self._s.workers.values(), key=lambda w: w.started_at)

    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        return len(await self.list(queue, status, limit=2**62))

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        queue, status, limit = query.queue, query.status, query.limit
        skip = query.offset
        now = time.time()
        out: builtins.list[Task] = []
        with self._s.lock:
            tasks = self._s.tasks.values()  # insertion order = oldest first
            for t in reversed(tasks) if query.newest_first else tasks:
                st = t.effective_status(now)
                if (queue is None or t.queue == queue) and (status is None or st is status):
                    if skip:
                        skip -= 1
                        continue
                    out.append(t.copy(status=st))
                    if len(out) >= limit:
                        break
        return out

    async def purge(self, queue: str | None = None) -> int:
        s = self._s
        with s.lock:
            ids = [tid for tid, t in s.tasks.items() if queue is None or t.queue == queue]
            for tid in ids:
                del s.tasks[tid]
                s.finished_at.pop(tid, None)
            if queue is None:
                s.ready.clear()
                s.delayed.clear()
                s.leases.clear()
                s.dependents.clear()
            else:
                s.ready.pop(queue, None)
            return len(ids)

    async def cleanup_expired(self, now: float | None = None) -> builtins.list[str]:
        now = time.time() if now is None else now
        with self._s.lock:
            expired, self._s.newly_expired = self._s.newly_expired, []
            for t in self._s.tasks.values():
                if t.status in (TaskStatus.PENDING, TaskStatus.WAITING) and t.is_expired(now):
                    t.status, t.error = TaskStatus.EXPIRED, rules.EXPIRED_MESSAGE
                    self._s.finished_at[t.id] = now
                    expired.append(t.id)
        return expired

    async def prune_finished(self, before: float, limit: int = 1000) -> int:
        s = self._s
        with s.lock:
            old = [tid for tid, at in s.finished_at.items() if at < before][:limit]
            for tid in old:
                del s.finished_at[tid]
                s.tasks.pop(tid, None)
        return len(old)

    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        return await self.release_dependents_many([task_id], succeeded)

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        s = self._s
        out = Released()
        now = time.time()
        with s.lock:
            ended = [(tid, succeeded) for tid in task_ids]
            while ended:  # the release walk of omniq.rules
                step = rules.release_step(ended, self._waiting_dependents(ended))
                for dep_id in step.ready:
                    d = s.tasks[dep_id]
                    d.status = TaskStatus.PENDING
                    self._push_pending(d, now)
                for dep_id, reason in step.cancelled:
                    d = s.tasks[dep_id]
                    d.status, d.error = TaskStatus.CANCELLED, reason
                    s.finished_at[dep_id] = now
                out.ready.extend(step.ready)
                out.cancelled.extend(dep_id for dep_id, _ in step.cancelled)
                ended = step.next_ended
        if out.ready:
            s.notifier.notify_all()
        return out

    def _waiting_dependents(
        self, ended: Sequence[tuple[str, bool]]
    ) -> builtins.list[rules.WaitingDependent]:
        s = self._s
        found = []
        for tid, _ in ended:
            for dep_id in sorted(s.dependents.pop(tid, set())):
                d = s.tasks.get(dep_id)
                if d is None or d.status is not TaskStatus.WAITING:
                    continue
                statuses = [self._status_of(x) for x in d.depends_on]
                found.append(rules.WaitingDependent(dep_id, tid, d.depends_on, statuses))
        return found


# --- results ----------------------------------------------------------------------------


class _ResultState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: dict[str, TaskResult] = {}
        self.notifier = Notifier()


class AsyncMemoryResultStorage(BaseResultStorage):
    """In-process result storage with TTL and notified waits."""

    schemes = ("memory",)
    blocking_wait: ClassVar[bool] = True
    cross_process: ClassVar[bool] = False

    def __init__(self, url: str | None = None) -> None:
        self.url = url or "memory://"
        self._s: _ResultState = _shared(_store_name(url), "results", _ResultState)

    def __repr__(self) -> str:
        return f"AsyncMemoryResultStorage({self.url!r})"

    async def set(self, result: TaskResult) -> None:
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        ser = default_manager()
        stored = [ser.decode_result(ser.encode_result(r)) for r in results]
        with self._s.lock:
            for result in stored:
                self._s.results[result.task_id] = result
        self._s.notifier.notify_all()

    async def get(self, task_id: str) -> TaskResult | None:
        with self._s.lock:
            r = self._s.results.get(task_id)
        return None if r is None or r.is_expired() else r

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            r = await self.get(task_id)
            if r is not None:
                return r
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            await self._s.notifier.wait(min(remaining, 1.0))

    async def delete(self, task_id: str) -> bool:
        with self._s.lock:
            return self._s.results.pop(task_id, None) is not None

    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        with self._s.lock:
            rs = [r for r in self._s.results.values() if not r.is_expired()]
        return [r for r in rs if status is None or r.status is status][:limit]

    async def cleanup_expired(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._s.lock:
            gone = [k for k, r in self._s.results.items() if r.is_expired(now)]
            for k in gone:
                del self._s.results[k]
        return len(gone)


# --- events -----------------------------------------------------------------------------


class _EventState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[TaskEvent] = []


class AsyncMemoryEventStorage(BaseEventStorage):
    """In-process event log."""

    schemes = ("memory",)
    cross_process: ClassVar[bool] = False

    def __init__(self, url: str | None = None) -> None:
        self.url = url or "memory://"
        self._s: _EventState = _shared(_store_name(url), "events", _EventState)

    def __repr__(self) -> str:
        return f"AsyncMemoryEventStorage({self.url!r})"

    async def log(self, event: TaskEvent) -> None:
        with self._s.lock:
            self._s.events.append(event)

    async def log_many(self, events: Sequence[TaskEvent]) -> None:
        with self._s.lock:
            self._s.events.extend(events)

    async def select(self, query: EventQuery) -> builtins.list[TaskEvent]:
        with self._s.lock:
            events = builtins.list(self._s.events)
        return query.apply(events)

    async def cleanup(self, older_than: float) -> int:
        with self._s.lock:
            before = len(self._s.events)
            self._s.events = [e for e in self._s.events if e.timestamp >= older_than]
            return before - len(self._s.events)


# --- schedules --------------------------------------------------------------------------


class _ScheduleState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schedules: dict[str, Schedule] = {}


class AsyncMemoryScheduleStorage(BaseScheduleStorage):
    """In-process schedule storage; ``claim_due`` is atomic under the store's lock."""

    schemes = ("memory",)
    cross_process: ClassVar[bool] = False

    def __init__(self, url: str | None = None) -> None:
        self.url = url or "memory://"
        self._s: _ScheduleState = _shared(_store_name(url), "schedules", _ScheduleState)

    def __repr__(self) -> str:
        return f"AsyncMemoryScheduleStorage({self.url!r})"

    async def save(self, schedule: Schedule) -> None:
        with self._s.lock:
            self._s.schedules[schedule.id] = schedule

    async def get(self, schedule_id: str) -> Schedule | None:
        with self._s.lock:
            return self._s.schedules.get(schedule_id)

    async def update(self, schedule: Schedule) -> bool:
        with self._s.lock:
            if schedule.id not in self._s.schedules:
                return False
            self._s.schedules[schedule.id] = schedule
            return True

    async def delete(self, schedule_id: str) -> bool:
        with self._s.lock:
            return self._s.schedules.pop(schedule_id, None) is not None

    async def list(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        with self._s.lock:
            return [s for s in self._s.schedules.values() if state is None or s.state is state]

    async def claim_due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        claimed: builtins.list[Schedule] = []
        with self._s.lock:
            for s in sorted(self._s.schedules.values(), key=lambda s: s.next_run_at or 0):
                if len(claimed) >= limit:
                    break
                if s.is_due(now):
                    self._s.schedules[s.id] = s.advanced(now)
                    claimed.append(s)
        return claimed


# --- blocking twins and the bundle -------------------------------------------------------


class MemoryQueue(SyncWrapper[AsyncMemoryQueue], async_class=AsyncMemoryQueue):
    """Blocking twin of :class:`AsyncMemoryQueue`."""


class MemoryResultStorage(
    SyncWrapper[AsyncMemoryResultStorage], async_class=AsyncMemoryResultStorage
):
    """Blocking twin of :class:`AsyncMemoryResultStorage`."""


class MemoryEventStorage(SyncWrapper[AsyncMemoryEventStorage], async_class=AsyncMemoryEventStorage):
    """Blocking twin of :class:`AsyncMemoryEventStorage`."""


class MemoryScheduleStorage(
    SyncWrapper[AsyncMemoryScheduleStorage], async_class=AsyncMemoryScheduleStorage
):
    """Blocking twin of :class:`AsyncMemoryScheduleStorage`."""


class MemoryBackend:
    """The four memory components over one store (``memory://NAME`` or a private one)."""

    def __init__(self, url: str | None = None) -> None:
        if url is None or _store_name(url) is None:
            url = f"memory://anon-{id(self):x}"
        self.url = url
        self.task_queue = AsyncMemoryQueue(url)
        self.result_storage = AsyncMemoryResultStorage(url)
        self.event_storage = AsyncMemoryEventStorage(url)
        self.schedule_storage = AsyncMemoryScheduleStorage(url)


__all__ = [
    "AsyncMemoryEventStorage",
    "AsyncMemoryQueue",
    "AsyncMemoryResultStorage",
    "AsyncMemoryScheduleStorage",
    "MemoryBackend",
    "MemoryEventStorage",
    "MemoryQueue",
    "MemoryResultStorage",
    "MemoryScheduleStorage",
    "reset_memory_stores",
]
