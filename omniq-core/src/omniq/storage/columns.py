"""Models as plain columns, for backends that store rows (SQL databases).

A task row keeps the fields that change (status, attempt, lease, ...) in columns and the
task as enqueued in ``data`` (serializer bytes); an event row keeps every field in a
column with the metadata as JSON (events are never pickled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from omniq import rules
from omniq.errors import SerializationError
from omniq.models import EventType, Task, TaskEvent, TaskStatus
from omniq.serialization.manager import SerializationManager

#: Columns of an event row, in the order of :func:`event_row`.
EVENT_COLUMNS = (
    "id", "event_type", "task_id", "timestamp", "queue", "func", "worker_id", "schedule_id",
    "attempt", "message", "metadata",
)  # fmt: skip

#: Columns a task row is read back from, in the order :func:`task_from_row` takes them.
TASK_COLUMNS = (
    "id, queue, status, priority, created_at, run_at, expires_at, attempt, lease_until, "
    "worker_id, error, data"
)


#: A new task's row: id, queue, priority, due, run_at, expires_at, created_at, data.
TaskRow = tuple[str, str, int, float, float | None, float | None, float, bytes]


def task_row(serializer: SerializationManager, task: Task) -> TaskRow:
    """The stored form of a new task (``due``: when it may run, for claim order)."""
    due = task.run_at if task.run_at is not None else task.created_at
    return (task.id, task.queue, task.priority, due, task.run_at, task.expires_at,
            task.created_at, serializer.encode_task(task))  # fmt: skip


def as_claimed(
    task: Task,
    task_id: str,
    attempt: int,
    lease_until: float,
    worker_id: str,
    error: str | None,
    run_at: float | None,
) -> Task:
    """A task just decoded from its stored bytes, given the columns of its claim (set in
    place on the fresh object: cheaper than a copy on the claim path)."""
    task.id, task.status, task.attempt = task_id, TaskStatus.RUNNING, attempt
    task.lease_until, task.worker_id, task.error = lease_until, worker_id, error
    task.run_at = run_at
    return task


def event_row(event: TaskEvent) -> tuple[Any, ...]:
    """An event as EVENT_COLUMNS values (metadata as JSON text, or None)."""
    try:
        metadata = msgspec.json.encode(event.metadata).decode() if event.metadata else None
    except (TypeError, ValueError) as e:
        raise SerializationError(
            f"event metadata must be JSON-compatible (events are never pickled): {e}"
        ) from e
    return (
        event.id, event.event_type.value, event.task_id, event.timestamp, event.queue,
        event.func, event.worker_id, event.schedule_id, event.attempt, event.message, metadata,
    )  # fmt: skip


def event_from_row(row: Sequence[Any]) -> TaskEvent:
    """Inverse of :func:`event_row`."""
    (eid, etype, task_id, ts, queue, func, worker_id, schedule_id, attempt, message,
     metadata) = tuple(row)  # fmt: skip
    return TaskEvent(
        event_type=EventType(etype), id=eid, task_id=task_id, timestamp=ts, queue=queue,
        func=func, worker_id=worker_id, schedule_id=schedule_id, attempt=attempt,
        message=message, metadata=msgspec.json.decode(metadata) if metadata else {},
    )  # fmt: skip


def task_from_row(serializer: SerializationManager, row: Sequence[Any], now: float) -> Task:
    """Rebuild a task from a row in TASK_COLUMNS order (the columns win over the bytes).

    A payload that cannot be decoded yields a placeholder task (``func`` is
    ``"<undecodable>"``, ``metadata["corrupt"]`` is True) so listing never fails.
    """
    (tid, queue, status, priority, created_at, run_at, expires_at, attempt, lease_until,
     worker_id, error, data) = tuple(row)[:12]  # fmt: skip
    st = rules.effective_status(TaskStatus(status), expires_at, now)
    if rules.is_final(status):
        lease_until = None  # a backend may keep when the task ended in this column
    try:
        task = serializer.decode_task(bytes(data))
    except SerializationError as e:
        return Task(
            func="<undecodable>", id=tid, queue=queue, priority=priority, status=st,
            created_at=created_at, run_at=run_at, expires_at=expires_at, attempt=attempt,
            lease_until=lease_until, worker_id=worker_id,
            error=error or f"stored payload cannot be decoded: {e}", metadata={"corrupt": True},
        )  # fmt: skip
    return msgspec.structs.replace(
        task, id=tid, status=st, attempt=attempt, lease_until=lease_until,
        worker_id=worker_id, error=error, run_at=run_at,
    )  # fmt: skip


__all__ = [
    "EVENT_COLUMNS",
    "TASK_COLUMNS",
    "TaskRow",
    "as_claimed",
    "event_from_row",
    "event_row",
    "task_from_row",
    "task_row",
]
