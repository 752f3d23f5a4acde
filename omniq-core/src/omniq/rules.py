"""The life of a task, decided in one place (no I/O).

Every backend and the engine ask these functions instead of restating the rules: which
statuses are final, when a task is expired, what its dependencies' outcomes mean for
it, which waiting dependents a finished task releases or cancels (transitively), and
the messages that record why. A backend keeps only how it stores and claims; retry and
backoff maths live beside this in :mod:`omniq.queue.retry`.

The transitive release is a walk that alternates I/O and decisions: a backend loads the
waiting dependents of the tasks that ended (one step), :func:`release_step` decides, the
backend writes the decision, and the cancelled dependents are the next step's ended
tasks::

    ended = [(task_id, succeeded)]
    while ended:
        step = release_step(ended, load_waiting_dependents(ended))
        write(step.ready, step.cancelled)
        ended = step.next_ended
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from omniq.models.enums import FINAL_STATUSES, TaskStatus

if TYPE_CHECKING:
    from omniq.models.task import Task

__all__ = [
    "CANCELLED_BY_REQUEST",
    "DEPENDENCY_FAILED",
    "EXPIRED_MESSAGE",
    "FAILED_OUTCOMES",
    "FINAL_STATUSES",
    "HANDED_BACK",
    "POISON_MESSAGE",
    "REQUEUED_MESSAGE",
    "WORKER_STOPPED",
    "ReleaseStep",
    "WaitingDependent",
    "dependency_failed",
    "dependency_outcome",
    "effective_status",
    "is_expired",
    "is_final",
    "release_step",
    "requeued",
]

#: Why a task that was never claimed before its TTL passed ended EXPIRED.
EXPIRED_MESSAGE = "expired before it ran (TTL)"
#: Why a task cancelled through the API ended CANCELLED.
CANCELLED_BY_REQUEST = "cancelled by request"
#: Why a task enqueued after one of its dependencies had already failed is CANCELLED.
DEPENDENCY_FAILED = "a dependency did not succeed"
#: Why a task stopped at the end of a worker's grace period went back to the queue.
WORKER_STOPPED = "worker stopped"
#: Why a claimed task that never started went back to the queue (base ``unclaim``).
HANDED_BACK = "handed back by a stopping worker"
#: Why a task whose workers kept dying with it was failed for good.
POISON_MESSAGE = "PoisonTaskError: the task lost its worker too many times"

#: The event message of a task put back to PENDING after it ended (``requeue``).
REQUEUED_MESSAGE = "re-queued by request"

#: Outcomes of a dependency that cancel its dependents.
FAILED_OUTCOMES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})


def dependency_failed(dependency_id: str) -> str:
    """Why a dependent of ``dependency_id`` was cancelled."""
    return f"dependency {dependency_id} did not succeed"


def is_final(status: TaskStatus | str) -> bool:
    """True for a status a task never leaves (SUCCESS, FAILED, CANCELLED, EXPIRED)."""
    return status in FINAL_STATUSES


def is_expired(expires_at: float | None, now: float) -> bool:
    """True when a TTL that ends at ``expires_at`` has passed at ``now``."""
    return expires_at is not None and now >= expires_at


def effective_status(status: TaskStatus, expires_at: float | None, now: float) -> TaskStatus:
    """The status a reader sees: a queued or waiting task past its TTL reads EXPIRED
    (before a sweep has written it)."""
    if status in (TaskStatus.PENDING, TaskStatus.WAITING) and is_expired(expires_at, now):
        return TaskStatus.EXPIRED
    return status


def dependency_outcome(
    statuses: Sequence[TaskStatus | None],
) -> tuple[TaskStatus, int | None]:
    """What a task's dependencies, with these (effective) statuses, make of it:
    PENDING when every one succeeded, CANCELLED when one ended otherwise (with its
    index), else WAITING. ``None`` is a dependency not (or no longer) stored: it has not
    succeeded, so the task waits."""
    for i, status in enumerate(statuses):
        if status in FAILED_OUTCOMES:
            return TaskStatus.CANCELLED, i
    if all(status is TaskStatus.SUCCESS for status in statuses):
        return TaskStatus.PENDING, None
    return TaskStatus.WAITING, None


@dataclass(frozen=True)
class WaitingDependent:
    """A WAITING task depending on a task that just ended, as a backend loaded it."""

    task_id: str
    """The waiting task."""
    ended: str
    """The dependency of it that just ended."""
    dependencies: Sequence[str]
    """All of its dependencies, in order."""
    statuses: Sequence[TaskStatus | None]
    """Their current effective statuses, in the same order."""


@dataclass
class ReleaseStep:
    """What one step of the release walk decided."""

    ready: list[str] = field(default_factory=list)
    """Waiting tasks whose dependencies all succeeded: they become PENDING."""
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    """Waiting tasks to cancel, each with the reason."""

    @property
    def next_ended(self) -> list[tuple[str, bool]]:
        """The cancelled tasks, as the ended tasks of the next step (their own
        dependents are cancelled in turn)."""
        return [(task_id, False) for task_id, _ in self.cancelled]


def release_step(
    ended: Iterable[tuple[str, bool]], waiting: Iterable[WaitingDependent]
) -> ReleaseStep:
    """Decide the waiting dependents of tasks that just ended (``(task_id,
    succeeded)``): a failed dependency cancels them; when it succeeded, they become
    ready once all their dependencies succeeded, are cancelled when another one failed
    meanwhile, and otherwise keep waiting. Each dependent is decided once per step."""
    succeeded = dict(ended)
    step = ReleaseStep()
    decided: set[str] = set()
    for w in waiting:
        if w.task_id in decided:
            continue
        if not succeeded.get(w.ended, False):
            step.cancelled.append((w.task_id, dependency_failed(w.ended)))
            decided.add(w.task_id)
            continue
        outcome, failed = dependency_outcome(w.statuses)
        if outcome is TaskStatus.PENDING:
            step.ready.append(w.task_id)
        elif outcome is TaskStatus.CANCELLED:
            assert failed is not None
            step.cancelled.append((w.task_id, dependency_failed(w.dependencies[failed])))
        else:
            continue  # still waiting on another dependency
        decided.add(w.task_id)
    return step


def requeued(task: Task, now: float) -> Task:
    """A task that ended (any final status), put back to run again at once.

    It gets a fresh retry budget: ``retries`` grows by the attempts already made, because
    ``attempt`` keeps counting (it fences every claim, so it never goes back). A TTL that
    has passed is dropped (the task would expire at once); its error is cleared."""
    return task.copy(
        status=TaskStatus.PENDING,
        run_at=None,
        lease_until=None,
        worker_id=None,
        error=None,
        retries=task.retries + task.attempt,
        expires_at=None if is_expired(task.expires_at, now) else task.expires_at,
    )
