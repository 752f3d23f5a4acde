"""The Task model: what is enqueued, claimed and executed."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from omniq.models.enums import TaskStatus
from omniq.models.ids import new_id


class Task(msgspec.Struct, kw_only=True, eq=False, omit_defaults=True):
    """One unit of work.

    Times are Unix seconds (``float``). ``attempt`` counts claims: it is the fencing token
    a worker hands back with ``complete``/``fail``/``heartbeat``, so a worker whose lease
    lapsed and whose task was claimed again cannot overwrite the newer attempt.
    Tasks hash and compare by ``id``.
    """

    func: str
    """Registered task name, usually ``module:qualname``."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str = msgspec.field(default_factory=new_id)
    queue: str = "default"
    priority: int = 0
    """Higher runs first within a queue."""
    status: TaskStatus = TaskStatus.PENDING
    created_at: float = msgspec.field(default_factory=time.time)
    run_at: float | None = None
    """Not claimable before this time (delay / eta)."""
    expires_at: float | None = None
    """Never runs after this time; recorded as EXPIRED instead (TTL)."""
    timeout: float | None = None
    retries: int = 0
    """How many times a failed run is retried."""
    retry_delay: float = 1.0
    """Base delay of the exponential backoff between retries, in seconds."""
    attempt: int = 0
    """Number of times the task was claimed; the fencing token of the current claim."""
    lease_until: float | None = None
    worker_id: str | None = None
    depends_on: list[str] = msgspec.field(default_factory=list)
    on_success: str | None = None
    on_failure: str | None = None
    result_ttl: float | None = None
    schedule_id: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    serializer: str | None = None
    """Hint for the argument/result format (``"msgspec"`` or ``"dill"``); None = detect."""
    error: str | None = None
    """Last error message (failure, cancellation or expiry reason)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # --- derived state (pure, no I/O) -------------------------------------------------

    def is_expired(self, now: float | None = None) -> bool:
        """True when the task's TTL has passed."""
        now = time.time() if now is None else now
        return self.expires_at is not None and now >= self.expires_at

    def is_ready(self, now: float | None = None) -> bool:
        """True when a PENDING task may be claimed now (not delayed, not expired)."""
        now = time.time() if now is None else now
        return (
            self.status is TaskStatus.PENDING
            and (self.run_at is None or self.run_at <= now)
            and not self.is_expired(now)
        )

    def lease_lapsed(self, now: float | None = None) -> bool:
        """True for a RUNNING task whose worker stopped renewing its lease."""
        now = time.time() if now is None else now
        return (
            self.status is TaskStatus.RUNNING
            and self.lease_until is not None
            and self.lease_until < now
        )

    def effective_status(self, now: float | None = None) -> TaskStatus:
        """The status a reader should see: a waiting task past its TTL reads EXPIRED."""
        if self.status in (TaskStatus.PENDING, TaskStatus.WAITING) and self.is_expired(now):
            return TaskStatus.EXPIRED
        return self.status

    def sort_key(self) -> tuple[int, float, str]:
        """Claim order inside one queue: higher priority, then earlier due time, then id."""
        return (-self.priority, self.run_at or self.created_at, self.id)

    def copy(self, **changes: Any) -> Task:
        """Return a copy with ``changes`` applied (lists and dicts are copied too)."""
        clone = msgspec.structs.replace(self, **changes)
        if "kwargs" not in changes:
            clone.kwargs = dict(self.kwargs)
        if "depends_on" not in changes:
            clone.depends_on = list(self.depends_on)
        if "metadata" not in changes:
            clone.metadata = dict(self.metadata)
        return clone

    def __repr__(self) -> str:
        return (
            f"Task(id={self.id!r}, func={self.func!r}, queue={self.queue!r}, "
            f"status={self.status.value!r}, attempt={self.attempt})"
        )


class TaskQuery(msgspec.Struct, frozen=True):
    """The filters of ``BaseTaskQueue.list`` as one value: tasks of one queue and/or one
    (effective) status when given, at most ``limit``, oldest first (in the order they
    were stored) or, with ``newest_first``, the newest ``limit`` of them newest first.
    ``offset`` skips the first ``offset`` matching tasks in the requested order (paging:
    ``offset = page * limit``)."""

    queue: str | None = None
    status: TaskStatus | None = None
    limit: int = 100
    newest_first: bool = False
    offset: int = 0
