"""The hook specifications of OmniQ's plugin API (pluggy project ``omniq``).

Hooks are synchronous, as pluggy's are; an implementation of an observer or middleware
hook may return an awaitable, which the async core awaits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from omniq.models import Task, TaskEvent, TaskStatus
    from omniq.plugins.specs import BackendSpec, WorkerSpec

PROJECT = "omniq"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def omniq_backends() -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the storage backends this plugin provides."""


@hookspec
def omniq_serializers() -> list[Any]:  # type: ignore[empty-body]
    """Return extra serializers (objects with ``name``, ``dumps``, ``loads``)."""


@hookspec
def omniq_worker_types() -> list[WorkerSpec]:  # type: ignore[empty-body]
    """Return extra executor types."""


@hookspec
def omniq_on_event(event: TaskEvent) -> Any:
    """Observe a lifecycle event (metrics, tracing, audit). Must not block."""


@hookspec
def omniq_before_enqueue(task: Task) -> Any:
    """Inspect or amend a task before it is stored (e.g. add trace context to metadata)."""


@hookspec
def omniq_after_enqueue(tasks: list[Task], statuses: list[TaskStatus]) -> Any:
    """Called once the store accepted ``tasks`` -- once per ``enqueue``, once per batch
    of ``enqueue_many``/``map`` -- with the status each was stored with (``statuses[i]``
    is ``tasks[i]``'s: ``PENDING``; ``WAITING`` on dependencies; ``CANCELLED`` when a
    dependency had already failed; the existing task's status when one with that id was
    stored already). Not called when the store write failed: the caller gets the error."""


@hookspec
def omniq_task_started(task: Task) -> Any:
    """Called in the worker right before a task runs."""


@hookspec
def omniq_task_finished(task: Task, result: Any, error: BaseException | None) -> Any:
    """Called in the worker right after a task ran (``error`` is None on success)."""


@hookspec
def omniq_task_interrupted(task: Task, reason: str) -> Any:
    """Called in the worker when a task it claimed ends without a result from this
    worker (no ``omniq_task_finished`` follows for that run). ``reason`` is one of:

    * ``"claim_lost"`` -- the claim is no longer this worker's: the task was cancelled,
      or its lease lapsed and another worker may run it. A running task is stopped, a
      claimed one dropped; a task that had finished has its result refused (then
      ``omniq_task_finished`` came first).
    * ``"handed_back"`` -- claimed, never started, given back when the worker stopped
      (or left to its lease, when giving it back failed).
    * ``"stopped"`` -- running when the shutdown grace period ended: stopped and handed
      back (or left to its lease, when handing it back failed).
    * ``"abandoned"`` -- a sync function still running in a thread when the worker
      stopped: it cannot be stopped, its lease lapses and another worker runs it again.
    """


@hookspec
def omniq_worker_startup(worker: Any) -> Any:
    """Called once when a worker starts (open per-process resources)."""


@hookspec
def omniq_worker_shutdown(worker: Any) -> Any:
    """Called once when a worker stops (release per-process resources)."""
