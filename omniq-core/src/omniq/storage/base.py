"""The storage interfaces every backend implements (DESIGN §6).

Four components, each an ABC with async methods; the generic wrappers in
:mod:`omniq.sync` give each a blocking twin. A backend declares what it can do with
capability flags, which the conformance suite (:mod:`omniq.testing`) reads to gate tests.

Claims and fencing: ``dequeue`` returns a task with ``status=RUNNING``, ``attempt``
incremented and ``lease_until`` set. ``complete``/``fail``/``heartbeat`` take that task
back and succeed only if the stored task is still RUNNING *with the same attempt*; they
return False otherwise (the lease lapsed and the task was claimed again, or it was
cancelled), so a stale worker never overwrites a newer attempt.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, ClassVar, Self

import anyio
import msgspec

from omniq import rules
from omniq.models import (
    EventQuery,
    Schedule,
    Task,
    TaskEvent,
    TaskQuery,
    TaskResult,
    WorkerInfo,
)
from omniq.models.enums import EventType, ScheduleState, TaskStatus
from omniq.sync import AsyncResource, BlockingResource

log = logging.getLogger("omniq.storage")


def default_worker_id() -> str:
    """``host:pid``: the worker id of a claim made without one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_encodable(results: Any, values: Sequence[TaskResult]) -> None:
    """Raise SerializationError for the first result that ``results`` (its
    ``serializer`` when it has one) cannot encode."""
    from omniq.serialization import default_manager

    ser = getattr(results, "serializer", None) or default_manager()
    for r in values:
        ser.encode_result(r)


class Released(msgspec.Struct, frozen=True):
    """Outcome of :meth:`BaseTaskQueue.release_dependents`."""

    ready: builtins.list[str] = msgspec.field(default_factory=builtins.list)
    """Waiting tasks whose dependencies all succeeded: now PENDING."""
    cancelled: builtins.list[str] = msgspec.field(default_factory=builtins.list)
    """Waiting tasks cancelled because a dependency failed (transitively)."""


class StorageComponent(AsyncResource, ABC):
    """Lifecycle shared by every component: ``from_url``, connect/close, ``async with``."""

    #: URL schemes this component understands (informational; plugins declare them too).
    schemes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build the component from a URL and backend options (no I/O yet)."""
        return cls(url, **options)  # type: ignore[call-arg]

    async def connect(self) -> None:
        """Open connections / create schema. Idempotent. Called by ``async with``."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    @property
    def store_key(self) -> Hashable | None:
        """Where this component keeps its data (server and namespace, file, bucket
        prefix), as a value equal for components of the same store; None (the default)
        when it cannot tell. A backend's queue uses :meth:`same_store` to write a
        result in the same atomic step as the completion it belongs to."""
        return None

    def same_store(self, other: object) -> bool:
        """True when ``other`` is a component of the same backend family keeping its
        data in the same place (equal :attr:`store_key`, not None)."""
        key = self.store_key
        return key is not None and isinstance(other, StorageComponent) and other.store_key == key


class BackendBundle(BlockingResource):
    """Base of a backend's ``{Name}Backend``: the four components over one connection.

    Subclasses build the four component attributes in ``__init__`` (sharing one
    connection or pool); this gives them ``from_url``, ``connect``/``close`` of every
    component, ``async with`` and a blocking ``with``. A bundle that owns something the
    components share (a pool) closes it in :meth:`close_shared`.
    """

    task_queue: Any
    result_storage: Any
    event_storage: Any
    schedule_storage: Any

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> Self:
        """Build the bundle from a URL and backend options (no I/O yet)."""
        return cls(url, **options)  # type: ignore[call-arg]

    @property
    def components(self) -> tuple[Any, Any, Any, Any]:
        """The four async components, in COMPONENTS order."""
        return (self.task_queue, self.result_storage, self.event_storage, self.schedule_storage)

    async def connect(self) -> None:
        """Connect every component (they share one connection)."""
        for c in self.components:
            await c.connect()

    async def close(self) -> None:
        """Close every component, then what they share."""
        for c in self.components:
            await c.close()
        await self.close_shared()

    async def close_shared(self) -> None:
        """Close the connection the components share, if the bundle owns it."""

    def async_context(self) -> Self:
        """``async with backend.async_context():`` (same as ``async with backend:``)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'url', '')!r})"


class BaseTaskQueue(StorageComponent):
    """Stores tasks and hands each ready one to exactly one worker at a time."""

    supports_priority: ClassVar[bool] = True
    supports_delay: ClassVar[bool] = True
    supports_ttl: ClassVar[bool] = True
    supports_dependencies: ClassVar[bool] = True
    supports_cancel_running: ClassVar[bool] = True
    #: True when ``dequeue(wait=...)`` is woken by an enqueue rather than by polling.
    blocking_dequeue: ClassVar[bool] = False
    #: True when several processes may share the queue (false for in-process memory).
    cross_process: ClassVar[bool] = True
    #: True when ``prune_finished`` deletes old finished tasks.
    supports_pruning: ClassVar[bool] = False

    #: Lease used by ``heartbeat`` when none is given (seconds).
    default_lease: float = 30.0
    #: Seconds a claim may take beyond its own wait before the worker stops waiting for
    #: it (the tasks a cut-off claim took come back when their leases lapse). A backend
    #: whose claims can stall longer without failing (a cluster's leader election)
    #: raises it.
    claim_grace: ClassVar[float] = 5.0

    @abstractmethod
    async def enqueue(self, task: Task) -> TaskStatus:
        """Store a task; idempotent by ``task.id``.

        Returns the stored status: PENDING, WAITING (a dependency has not succeeded yet),
        CANCELLED (a dependency already failed) — or, when a task with this id exists
        already, that task's status, unchanged.
        """

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[TaskStatus]:
        """Store several tasks (fast backends override this with one round trip)."""
        return [await self.enqueue(t) for t in tasks]

    async def dequeue(
        self,
        queues: Sequence[str] = ("default",),
        *,
        worker_id: str | None = None,
        lease: float = 30.0,
        wait: float = 0.0,
    ) -> Task | None:
        """Claim the next ready task: queues in the order given, then higher priority,
        then oldest. Waits up to ``wait`` seconds for one. Lapsed leases are re-claimed.
        ``worker_id`` defaults to ``host:pid`` (it only labels the claim)."""
        tasks = await self.dequeue_many(
            queues, 1, worker_id=worker_id or default_worker_id(), lease=lease, wait=wait
        )
        return tasks[0] if tasks else None

    async def dequeue_many(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        worker_id: str,
        lease: float = 30.0,
        wait: float = 0.0,
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks in claim order (see :meth:`dequeue`)."""
        if limit <= 0 or not queues:
            return []
        return await self.claim_ready(builtins.list(queues), limit, worker_id, lease, wait)

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        """What a backend implements for :meth:`dequeue_many` (or it overrides that):
        claim up to ``limit`` (> 0) ready tasks of ``queues`` (not empty) in claim order,
        each RUNNING under a ``lease`` with ``attempt`` + 1, waiting up to ``wait`` s."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither claim_ready() nor dequeue_many()"
        )

    @abstractmethod
    async def complete(self, task: Task) -> bool:
        """Mark a claimed task SUCCESS. False (nothing changed) for a stale claim."""

    async def complete_many(self, tasks: Sequence[Task]) -> builtins.list[bool]:
        """Complete several claimed tasks (fast backends override this with one round
        trip). One bool per task, as :meth:`complete` returns. This default issues the
        calls concurrently, so backends that group concurrent writes commit once."""
        return list(await asyncio.gather(*(self.complete(t) for t in tasks)))

    async def complete_with_results(
        self, finished: Sequence[tuple[Task, TaskResult]], results: BaseResultStorage
    ) -> builtins.list[bool]:
        """Complete finished tasks and store their results, fenced like :meth:`complete`:
        a result is written only for a claim that is still current, so a stale attempt
        can never replace a newer attempt's result. One bool per task.

        Every result is encoded first, so a value that cannot be stored raises
        SerializationError before anything is written (the worker then fails that task
        alone). This default then completes the tasks and writes the accepted results;
        a process killed between the two leaves a completed task without its result.
        Backends whose results live in the same store override this to do both in one
        atomic step (the conformance suite checks the fencing either way).
        """
        check_encodable(results, [r for _, r in finished])
        accepted = await self.complete_many([t for t, _ in finished])
        await results.set_many([r for (_, r), ok in zip(finished, accepted, strict=True) if ok])
        return accepted

    @abstractmethod
    async def fail(
        self, task: Task, retry_at: float | None = None, *, error: str | None = None
    ) -> bool:
        """Record a failed run: PENDING again at ``retry_at``, or FAILED when None.
        False (nothing changed) for a stale claim."""

    async def unclaim(self, task: Task) -> bool:
        """Give back a claim whose task has not started (a stopping worker's prefetched
        tasks): PENDING again at once, and the claim does not count -- ``attempt`` goes
        back, so the task keeps every retry. False (nothing changed) for a stale claim.

        This default calls ``fail(task, now)``, which counts the claim; backends
        override it to restore the attempt (the conformance suite checks that they do).
        """
        return await self.fail(task, time.time(), error=rules.HANDED_BACK)

    @abstractmethod
    async def heartbeat(self, task: Task, lease: float | None = None) -> bool:
        """Extend a claim's lease. False when the claim is no longer current (lease lost
        to another worker, or the task was cancelled): the worker should stop the task."""

    @abstractmethod
    async def get(self, task_id: str) -> Task | None:
        """The stored task (its ``effective_status`` reflects TTL), or None."""

    @abstractmethod
    async def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a PENDING, WAITING or RUNNING task (a running one is told through its
        next heartbeat). False when the task is unknown or already final."""

    async def requeue(self, task_id: str) -> Task | None:
        """Put a task that ended (any final status) back to PENDING as
        :func:`omniq.rules.requeued` says, in one atomic step that checks the task is
        still final. Returns the stored task, or None (nothing changed) when it is unknown
        or not final. Dependents it cancelled stay cancelled."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement requeue(task_id): re-queueing "
            "ended tasks needs an atomic 'replace if final' in this backend"
        )

    # --- paused queues (workers do not claim from them) -----------------------------------

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue`` (tasks already claimed run on; new tasks
        are still accepted). Idempotent."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement pause_queue(): queues cannot be "
            "paused on this backend"
        )

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again. Idempotent."""
        raise NotImplementedError(f"{type(self).__name__} does not implement resume_queue()")

    async def paused_queues(self) -> set[str]:
        """The queues paused now (workers read this about once a second)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement paused_queues()")

    # --- live workers (heartbeats in the store, for ``omniq workers``) -------------------

    async def record_worker(self, info: WorkerInfo) -> None:
        """Store (or replace) a worker's heartbeat; it counts as live until
        ``info.expires_at``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement record_worker(): "
            "live workers cannot be listed on this backend"
        )

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (it stopped cleanly). Unknown ids are ignored."""
        raise NotImplementedError(f"{type(self).__name__} does not implement remove_worker()")

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Live workers (records past ``expires_at`` left out, and deleted when cheap),
        oldest first by ``started_at``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement list_workers()")

    @abstractmethod
    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        """Number of tasks, optionally in one queue and/or one status."""

    async def list(
        self,
        queue: str | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        *,
        newest_first: bool = False,
        offset: int = 0,
    ) -> builtins.list[Task]:
        """Tasks, oldest first (or the newest ``limit``, newest first), optionally
        filtered (see :class:`TaskQuery`). ``offset`` skips that many matching tasks in
        the requested order first, so page ``n`` of size ``limit`` is
        ``list(..., limit, offset=n * limit)``. Raises ValueError for a negative
        ``offset``."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        return await self.select_tasks(TaskQuery(queue, status, limit, newest_first, offset))

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        """The tasks ``query`` selects, oldest first (what backends implement, unless
        they override :meth:`list`)."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither select_tasks() nor list()"
        )

    async def list_tasks(self, *args: Any, **kwargs: Any) -> builtins.list[Task]:
        """Seed-compatible alias of :meth:`list` (docs: migration table)."""
        return await self.list(*args, **kwargs)

    @abstractmethod
    async def purge(self, queue: str | None = None) -> int:
        """Delete every task (of one queue, or all). Returns how many were deleted."""

    @abstractmethod
    async def cleanup_expired(self, now: float | None = None) -> builtins.list[str]:
        """Mark PENDING/WAITING tasks past their TTL as EXPIRED; return their ids
        (including tasks found expired at claim time since the last call)."""

    async def prune_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` tasks that reached a final status (SUCCESS, FAILED,
        CANCELLED, EXPIRED) before ``before``; return how many. The retention sweep
        calls it until it returns less than ``limit``, so each call should be one short
        write. This default deletes nothing (``supports_pruning`` is False)."""
        return 0

    @abstractmethod
    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        """After ``task_id`` ended: make waiting dependents ready when all their
        dependencies succeeded, or cancel them (transitively) when it did not."""

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        """:meth:`release_dependents` for several finished tasks (workers call this once
        per batch; fast backends override it with one round trip)."""
        ready: builtins.list[str] = []
        cancelled: builtins.list[str] = []
        for task_id in task_ids:
            r = await self.release_dependents(task_id, succeeded)
            ready.extend(r.ready)
            cancelled.extend(r.cancelled)
        return Released(ready=ready, cancelled=cancelled)


class BaseResultStorage(StorageComponent):
    """Stores task results, optionally with a TTL (``TaskResult.expires_at``)."""

    #: True when ``wait`` is woken by a notification rather than by polling.
    blocking_wait: ClassVar[bool] = False
    cross_process: ClassVar[bool] = True

    @abstractmethod
    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id``."""

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results (fast backends override this with one round trip).
        This default issues the calls concurrently (see :meth:`BaseTaskQueue.complete_many`)."""
        await asyncio.gather(*(self.set(r) for r in results))

    @abstractmethod
    async def get(self, task_id: str) -> TaskResult | None:
        """The result, or None when absent or expired."""

    #: The default ``wait``'s first poll interval and its cap (it doubles in between).
    WAIT_POLL_FIRST: ClassVar[float] = 0.005
    WAIT_POLL_MAX: ClassVar[float] = 0.25

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait up to ``timeout`` seconds (None: forever) for the result; None on timeout.

        This default polls, from ``WAIT_POLL_FIRST`` seconds doubling up to
        ``WAIT_POLL_MAX``; backends with notifications override it.
        """
        return await self._poll_wait(task_id, timeout, self.WAIT_POLL_FIRST, self.WAIT_POLL_MAX)

    async def _poll_wait(
        self, task_id: str, timeout: float | None, poll_first: float, poll_max: float
    ) -> TaskResult | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll_first
        while True:
            result = await self.get(task_id)
            if result is not None:
                return result
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                delay = min(delay, remaining)
            await anyio.sleep(delay)
            delay = min(delay * 2, poll_max)

    @abstractmethod
    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""

    @abstractmethod
    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Results, optionally of one status."""

    @abstractmethod
    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete results past their TTL; returns how many."""

    async def list_results(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Seed-compatible alias of :meth:`list` (docs: migration table)."""
        return await self.list(status, limit)


class BaseEventStorage(StorageComponent):
    """Stores lifecycle events as plain fields (never pickled)."""

    cross_process: ClassVar[bool] = True

    @abstractmethod
    async def log(self, event: TaskEvent) -> None:
        """Append one event."""

    async def log_many(self, events: Sequence[TaskEvent]) -> None:
        """Append several events (fast backends override this with one round trip)."""
        for e in events:
            await self.log(e)

    async def query(
        self,
        task_id: str | None = None,
        types: Iterable[EventType] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> builtins.list[TaskEvent]:
        """Events matching every given filter, oldest first (at most ``limit``)."""
        q = EventQuery.of(task_id, types, since, until, limit)
        return [] if q.matches_nothing else await self.select(q)

    @abstractmethod
    async def select(self, query: EventQuery) -> builtins.list[TaskEvent]:
        """What :meth:`query` returns, for its filters as one :class:`EventQuery`
        (``query.apply(events)`` filters, orders and cuts a list of candidates)."""

    @abstractmethod
    async def cleanup(self, older_than: float) -> int:
        """Delete events with ``timestamp < older_than``; returns how many."""

    async def log_event(self, event: TaskEvent) -> None:
        """Seed-compatible alias of :meth:`log` (docs: migration table)."""
        await self.log(event)


class BaseScheduleStorage(StorageComponent):
    """Stores schedules; ``claim_due`` makes each due time fire exactly once."""

    cross_process: ClassVar[bool] = True

    @abstractmethod
    async def save(self, schedule: Schedule) -> None:
        """Insert or replace a schedule."""

    @abstractmethod
    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""

    @abstractmethod
    async def update(self, schedule: Schedule) -> bool:
        """Replace an existing schedule; False when it does not exist."""

    @abstractmethod
    async def delete(self, schedule_id: str) -> bool:
        """Delete a schedule; False when it did not exist."""

    @abstractmethod
    async def list(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        """All schedules, optionally of one state."""

    async def save_schedule(self, schedule: Schedule) -> None:
        """Seed-compatible alias of :meth:`save` (docs: migration table)."""
        await self.save(schedule)

    async def update_schedule(self, schedule: Schedule) -> bool:
        """Seed-compatible alias of :meth:`update`."""
        return await self.update(schedule)

    async def list_schedules(self, state: ScheduleState | None = None) -> builtins.list[Schedule]:
        """Seed-compatible alias of :meth:`list`."""
        return await self.list(state)

    async def get_ready_schedules(self, now: float | None = None) -> builtins.list[Schedule]:
        """Active schedules due at ``now``, *without* claiming them (a read: to fire
        them exactly once, use :meth:`claim_due`, as the scheduler does)."""
        now = time.time() if now is None else now
        return [
            s
            for s in await self.list(ScheduleState.ACTIVE)
            if s.next_run_at is not None and s.next_run_at <= now
        ]

    @abstractmethod
    async def claim_due(self, now: float, limit: int = 100) -> builtins.list[Schedule]:
        """Claim schedules due at ``now``.

        For each ACTIVE schedule with ``next_run_at <= now``, atomically store
        ``schedule.advanced(now)`` (compare-and-set on the old ``next_run_at``) and return
        the schedule *as it was before*, so ``returned.fires(now)`` are the due times to
        enqueue. However many schedulers call this concurrently, each due time is
        returned to exactly one of them.
        """


__all__ = [
    "BackendBundle",
    "BaseEventStorage",
    "BaseResultStorage",
    "BaseScheduleStorage",
    "BaseTaskQueue",
    "Released",
    "StorageComponent",
    "check_encodable",
    "default_worker_id",
]
