"""OmniQ: an async-first task queue with pluggable storage backends."""

from omniq.core import AsyncOmniQ, OmniQ
from omniq.errors import (
    BackendError,
    BackendNotFoundError,
    ConfigurationError,
    OmniQError,
    SerializationError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
)
from omniq.models import (
    CatchUp,
    EventType,
    Schedule,
    ScheduleState,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
)
from omniq.tasks import TaskFunction, TaskHandle

__version__ = "0.1.0"

__all__ = [
    "AsyncOmniQ",
    "BackendError",
    "BackendNotFoundError",
    "CatchUp",
    "ConfigurationError",
    "EventType",
    "OmniQ",
    "OmniQError",
    "Schedule",
    "ScheduleState",
    "SerializationError",
    "Task",
    "TaskCancelledError",
    "TaskEvent",
    "TaskFailedError",
    "TaskFunction",
    "TaskHandle",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "__version__",
]
