"""Status and type enumerations shared by every model and backend."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """Lifecycle state of a task as stored by a task queue."""

    PENDING = "pending"  # ready (or delayed until ``run_at``), claimable
    WAITING = "waiting"  # held until every ``depends_on`` task succeeded
    RUNNING = "running"  # claimed by a worker under a lease
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """True for states a task never leaves."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
)


class EventType(StrEnum):
    """Kinds of lifecycle events written to event storage."""

    ENQUEUED = "enqueued"
    EXECUTING = "executing"
    COMPLETE = "complete"
    ERROR = "error"
    RETRY = "retry"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REQUEUED = "requeued"
    SCHEDULE_PAUSED = "schedule_paused"
    SCHEDULE_RESUMED = "schedule_resumed"
    SCHEDULE_DELETED = "schedule_deleted"
    QUEUE_PAUSED = "queue_paused"
    QUEUE_RESUMED = "queue_resumed"


class ScheduleState(StrEnum):
    """Whether a schedule fires."""

    ACTIVE = "active"
    PAUSED = "paused"


class CatchUp(StrEnum):
    """What a schedule does with due times missed while paused or while no scheduler ran."""

    COALESCE = "coalesce"  # one run for all missed times
    ALL = "all"  # one run per missed time
    SKIP = "skip"  # no run for missed times; wait for the next one
