"""OmniQ: an async-first task queue with pluggable storage backends.

Where things live (one concern per module):

* ``core`` -- ``AsyncOmniQ``/``OmniQ``, the public front: tasks, enqueue, results,
  schedules, workers. ``tasks`` -- ``@oq.task`` functions and result handles.
* ``options`` -- task options and their defaults; ``conversion`` -- arguments back to
  their annotated types; ``rules`` -- the life of a task (final statuses, TTL,
  dependency outcomes, release of dependents, messages), pure.
* ``lifecycle`` -- what happens around a task's end, and the periodic sweeps;
  ``components`` -- building the four storage components from settings.
* ``workers`` -- the claim loop (``worker``), executors, the trust boundary
  (``resolve``), rate limits, heartbeats in the store (``presence``); ``queue`` --
  retry maths, dependency checks, scheduler.
* ``storage`` -- the interfaces every backend implements (``base``), what backends
  share (``shared``: components on one reference-counted handle; ``columns``: models as
  SQL row columns) and the memory backend; ``testing`` -- the conformance suite for
  backend authors; ``plugins.lazy`` -- lazy exports of a backend package.
* ``models`` -- Task, TaskResult, TaskEvent, Schedule, WorkerInfo; ``serialization`` -- msgspec
  first, signed dill; ``events`` -- batched event logging.
* ``config`` -- settings and their loading; ``plugins`` -- hooks and discovery;
  ``sync`` -- the blocking twins; ``errors`` -- one exception hierarchy; ``cli`` --
  the ``omniq`` command.
"""

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
