"""The hook specifications of OmniQ's plugin API (pluggy project ``omniq``).

Hooks are synchronous, as pluggy's are; an implementation of an observer or middleware
hook may return an awaitable, which the async core awaits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from omniq.models import Task, TaskEvent
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
def omniq_task_started(task: Task) -> Any:
    """Called in the worker right before a task runs."""


@hookspec
def omniq_task_finished(task: Task, result: Any, error: BaseException | None) -> Any:
    """Called in the worker right after a task ran (``error`` is None on success)."""


@hookspec
def omniq_worker_startup(worker: Any) -> Any:
    """Called once when a worker starts (open per-process resources)."""


@hookspec
def omniq_worker_shutdown(worker: Any) -> Any:
    """Called once when a worker stops (release per-process resources)."""
