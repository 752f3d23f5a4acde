"""Task options: which exist, and how they resolve against the configured defaults.

One resolver serves every way a task is made: an enqueue (``@oq.task(...)`` options,
``.options(...)``), a schedule (the options it stores) and each run a schedule fires.
An option left unset (or None) takes the configured default (``OMNIQ_TASK_TIMEOUT``,
``OMNIQ_TASK_TTL``, ``OMNIQ_RETRY_ATTEMPTS``, ``OMNIQ_RETRY_DELAY``); a schedule stores
only what was given, so a fired run picks up the defaults in force when it fires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

__all__ = [
    "SCHEDULE_OPTIONS",
    "TASK_OPTIONS",
    "ResolvedOptions",
    "check_options",
    "resolve_options",
    "seconds",
]

#: Option names accepted by ``@oq.task(...)``, ``.options(...)`` and ``oq.schedule``.
TASK_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "delay",
        "eta",
        "ttl",
        "timeout",
        "retries",
        "retry_delay",
        "depends_on",
        "on_success",
        "on_failure",
        "metadata",
        "result_ttl",
        "task_id",
        "serializer",
    }
)

#: The options a schedule stores for the runs it fires.
SCHEDULE_OPTIONS = (
    "queue",
    "priority",
    "timeout",
    "retries",
    "retry_delay",
    "ttl",
    "result_ttl",
    "metadata",
)

#: Used when neither the option nor the configuration gives a retry delay.
DEFAULT_RETRY_DELAY = 1.0


def check_options(options: Iterable[str]) -> None:
    """Raise TypeError naming every unknown option and listing the valid ones."""
    unknown = set(options) - TASK_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown task option(s) {sorted(unknown)}; valid options: {sorted(TASK_OPTIONS)}"
        )


def seconds(value: float | timedelta | None) -> float | None:
    """A duration option in seconds (``timedelta`` accepted)."""
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class ResolvedOptions:
    """The options of one task with the configured defaults applied."""

    queue: str
    priority: int
    timeout: float | None
    retries: int
    retry_delay: float
    ttl: float | None
    result_ttl: float | None
    metadata: dict[str, Any] = field(default_factory=dict)
    serializer: str | None = None

    def expires_at(self, start: float) -> float | None:
        """When a task made at ``start`` (enqueue, or a schedule's due time) expires."""
        return start + self.ttl if self.ttl else None


def resolve_options(options: Mapping[str, Any], defaults: Mapping[str, Any]) -> ResolvedOptions:
    """Apply ``defaults`` (``AsyncOmniQ.task_defaults()``) to ``options``."""

    def pick(name: str) -> Any:
        value = options.get(name)
        return defaults.get(name) if value is None else value

    retry_delay = pick("retry_delay")
    return ResolvedOptions(
        queue=options.get("queue") or "default",
        priority=int(options.get("priority") or 0),
        timeout=seconds(pick("timeout")),
        retries=int(pick("retries") or 0),
        retry_delay=DEFAULT_RETRY_DELAY if retry_delay is None else float(retry_delay),
        ttl=seconds(pick("ttl")),
        result_ttl=seconds(options.get("result_ttl")),
        metadata=dict(options.get("metadata") or {}),
        serializer=options.get("serializer"),
    )
