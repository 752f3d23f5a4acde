"""Data models: Task, TaskResult, TaskEvent, Schedule and their enums."""

from omniq.models.enums import CatchUp, EventType, ScheduleState, TaskStatus
from omniq.models.event import EventQuery, TaskEvent
from omniq.models.ids import new_id, new_ids
from omniq.models.result import TaskResult
from omniq.models.schedule import Schedule
from omniq.models.task import Task

__all__ = [
    "CatchUp",
    "EventQuery",
    "EventType",
    "Schedule",
    "ScheduleState",
    "Task",
    "TaskEvent",
    "TaskResult",
    "TaskStatus",
    "new_id",
    "new_ids",
]
