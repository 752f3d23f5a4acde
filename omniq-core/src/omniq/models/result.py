"""The TaskResult model: the outcome of a task."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from omniq.models.enums import TaskStatus


class TaskResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Outcome of one task: its value, or the error and traceback that ended it."""

    task_id: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    """``ExceptionType: message`` of the error that ended the task, if any."""
    traceback: str | None = None
    attempt: int = 0
    worker_id: str | None = None
    started_at: float | None = None
    finished_at: float = msgspec.field(default_factory=time.time)
    expires_at: float | None = None
    """Deleted by ``cleanup_expired`` (and hidden by ``get``) after this time."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return self.status is TaskStatus.SUCCESS

    @property
    def duration(self) -> float | None:
        """Run time in seconds, when the start is known."""
        return None if self.started_at is None else self.finished_at - self.started_at

    def is_expired(self, now: float | None = None) -> bool:
        """True when the result's TTL has passed."""
        now = time.time() if now is None else now
        return self.expires_at is not None and now >= self.expires_at
