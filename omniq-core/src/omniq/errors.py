"""One exception hierarchy for everything OmniQ raises.

Driver errors are wrapped (``raise BackendError(...) from e``) so callers can catch
``OmniQError`` alone. Messages name the problem and the fix.
"""

from __future__ import annotations


class OmniQError(Exception):
    """Base class of every OmniQ error."""


class ConfigurationError(OmniQError, ValueError):
    """A setting, URL or argument is invalid."""


class BackendNotFoundError(ConfigurationError):
    """No installed plugin provides the requested backend type or URL scheme."""


class BackendError(OmniQError):
    """A storage backend failed (connection lost, server refused, ...)."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The backend's server cannot be reached."""


class SerializationError(OmniQError, ValueError):
    """A value cannot be encoded, or stored bytes cannot be decoded or verified."""


class SignatureError(SerializationError):
    """A dill payload has no or a bad HMAC signature; it was not unpickled."""


class PayloadTooLargeError(BackendError, ValueError):
    """An encoded task or result exceeds what the backend can store."""


class TaskError(OmniQError):
    """Base class of errors about one task."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskNotFoundError(TaskError, LookupError):
    """No task with this id is known."""


class TaskFailedError(TaskError):
    """The task ended in failure; ``error`` and ``traceback`` describe why."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.error = error
        self.traceback = traceback


class TaskCancelledError(TaskFailedError):
    """The task was cancelled (by request, or because a dependency failed)."""


class TaskExpiredError(TaskFailedError):
    """The task's TTL passed before it ran."""


class TaskTimeoutError(TaskError, TimeoutError):
    """The task ran longer than its timeout."""


class UnknownTaskError(TaskError, LookupError):
    """A task record names a function that is not registered on the worker's app (and
    not allow-listed for import): the task is refused, never imported or run."""


def describe_exception(e: BaseException) -> str:
    """``"TypeName: message"`` for an exception, even when its ``__str__`` raises (a
    failure must be recorded whatever the task's exception does)."""
    name = type(e).__name__
    try:
        text = str(e)
    except Exception:
        try:
            text = repr(e)
        except Exception:
            return f"{name}: <unprintable {name}>"
    return f"{name}: {text}" if text else name


def format_traceback(e: BaseException) -> str | None:
    """The formatted traceback of ``e``, or None when formatting itself fails."""
    import traceback

    try:
        return "".join(traceback.format_exception(e))
    except Exception:
        try:
            return "".join(traceback.format_tb(e.__traceback__)) + describe_exception(e)
        except Exception:
            return None


class StaleClaimError(TaskError):
    """A complete/fail/heartbeat came from a claim that is no longer current."""


class TaskNotFinalError(TaskError, ValueError):
    """The task has not ended yet, so it cannot be re-queued (cancel it first, or wait)."""


class DependencyCycleError(TaskError, ValueError):
    """Enqueueing the task would create a dependency cycle."""


class SyncCallError(OmniQError, RuntimeError):
    """A blocking ``_sync`` method was called where it would deadlock."""


__all__ = [
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ConfigurationError",
    "DependencyCycleError",
    "OmniQError",
    "PayloadTooLargeError",
    "SerializationError",
    "SignatureError",
    "StaleClaimError",
    "SyncCallError",
    "TaskCancelledError",
    "TaskError",
    "TaskExpiredError",
    "TaskFailedError",
    "TaskNotFinalError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "UnknownTaskError",
    "describe_exception",
    "format_traceback",
]
