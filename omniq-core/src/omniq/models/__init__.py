"""Data models: Task, TaskResult, TaskEvent, Schedule, WorkerInfo and their enums."""

from omniq.models.enums import CatchUp, EventType, ScheduleState, TaskStatus
from omniq.models.event import EventQuery, TaskEvent
from omniq.models.ids import new_id, new_ids
from omniq.models.result import TaskResult
from omniq.models.schedule import Schedule
from omniq.models.task import Task, TaskQuery
from omniq.models.worker import WorkerInfo, decode_worker, encode_worker

__all__ = [
    "CatchUp",
    "EventQuery",
    "EventType",
    "Schedule",
    "ScheduleState",
    "Task",
    "TaskEvent",
    "TaskQuery",
    "TaskResult",
    "TaskStatus",
    "WorkerInfo",
    "decode_worker",
    "encode_worker",
    "new_id",
    "new_ids",
]
