"""Task state records and the claim decision (pure, no I/O).

The KV bucket holds one :class:`Record` per task (key ``t.<id>``): the scheduling fields
as plain msgpack next to the task's serialized bytes (``body``, written once at enqueue
and never re-encoded). The JetStream work-queue message of a task carries its id (and,
when published with a record, that record and its revision); a worker that fetches one
asks :func:`decide` what the record says to do with it.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

import msgspec

from omniq import rules
from omniq.errors import SerializationError
from omniq.models import Task, TaskStatus
from omniq.serialization import SerializationManager

__all__ = [
    "Action",
    "Decision",
    "Record",
    "decide",
    "decode_record",
    "decode_ticket",
    "encode_record",
    "encode_ticket",
    "level_of",
    "record_for",
    "task_from",
]

MAGIC = b"\xa7q1"
#: How often a message of a WAITING task is re-checked before it is dropped.
WAITING_RECHECKS = 20


class Record(msgspec.Struct, array_like=True, omit_defaults=False):
    """Stored state of one task (everything but ``body`` may change)."""

    status: TaskStatus
    queue: str
    priority: int
    created_at: float
    body: bytes
    attempt: int = 0
    run_at: float | None = None
    expires_at: float | None = None
    lease_until: float | None = None
    worker_id: str | None = None
    error: str | None = None
    lapses: int = 0
    reported: bool = True
    depends_on: list[str] = msgspec.field(default_factory=list)
    #: Some task was enqueued waiting for this one (set while this one is unfinished),
    #: so finishing it must release dependents; False lets that step cost nothing.
    dependents: bool = False

    def effective_status(self, now: float | None = None) -> TaskStatus:
        """The status a reader sees (:func:`omniq.rules.effective_status`)."""
        return rules.effective_status(
            self.status, self.expires_at, time.time() if now is None else now
        )

    def but(self, **changes: Any) -> Record:
        """A copy with ``changes``."""
        return msgspec.structs.replace(self, **changes)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def encode_record(rec: Record) -> bytes:
    """Bytes stored in the KV bucket."""
    return MAGIC + _encoder.encode(rec)


def decode_record(data: bytes) -> Record:
    """Inverse of :func:`encode_record`; SerializationError for anything else."""
    if not data.startswith(MAGIC):
        raise SerializationError("corrupt task record in the NATS KV bucket (bad header)")
    try:
        return _decoder.decode(memoryview(data)[len(MAGIC) :])
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise SerializationError(f"corrupt task record in the NATS KV bucket: {e}") from e


_ticket_decoder = msgspec.msgpack.Decoder(tuple[str, int, bytes])


def encode_ticket(task_id: str, revision: int = 0, record: bytes = b"") -> bytes:
    """The work-queue message of a task: its id, plus the record's revision and bytes
    when known (so the first claim needs no read)."""
    return _encoder.encode((task_id, revision, record))


def decode_ticket(data: bytes) -> tuple[str, int, bytes]:
    """Inverse of :func:`encode_ticket`; SerializationError for anything else."""
    try:
        return _ticket_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise SerializationError(f"corrupt work-queue message: {e}") from e


def record_for(task: Task, status: TaskStatus, body: bytes, error: str | None = None) -> Record:
    """The initial record of an enqueued task."""
    return Record(
        status=status,
        queue=task.queue,
        priority=task.priority,
        created_at=task.created_at,
        body=body,
        run_at=task.run_at,
        expires_at=task.expires_at,
        error=error,
        depends_on=list(task.depends_on),
    )


def task_from(
    task_id: str, rec: Record, ser: SerializationManager, now: float | None = None
) -> Task:
    """The Task a reader gets: the stored body with the record's state applied.

    A body that cannot be decoded (corrupt, or a dill payload signed with another key)
    gives a placeholder task that carries the error instead of raising.
    """
    fields: dict[str, Any] = {
        "status": rec.effective_status(now),
        "attempt": rec.attempt,
        "run_at": rec.run_at,
        "lease_until": rec.lease_until,
        "worker_id": rec.worker_id,
        "error": rec.error,
    }
    try:
        task = ser.decode_task(rec.body) if rec.body else None
    except SerializationError as e:
        fields["error"] = rec.error or str(e)
        task = None
    if task is None:
        return Task(
            func="<undecodable>",
            id=task_id,
            queue=rec.queue,
            priority=rec.priority,
            created_at=rec.created_at,
            expires_at=rec.expires_at,
            depends_on=list(rec.depends_on),
            **fields,
        )
    return msgspec.structs.replace(task, **fields)


def level_of(priority: int) -> str:
    """Subject token of a priority level (``p5``, ``m2`` for -2)."""
    return f"p{priority}" if priority >= 0 else f"m{-priority}"


class Action(Enum):
    """What to do with a fetched work-queue message."""

    CLAIM = "claim"  # write ``record`` (RUNNING) and hand the task out
    WRITE_DROP = "write_drop"  # write ``record`` (EXPIRED / dead-lettered), then ack
    DROP = "drop"  # ack: the task is finished, gone, or the message is stale
    LATER = "later"  # NAK with ``delay``: not claimable yet (delayed, leased, waiting)


class Decision(msgspec.Struct):
    action: Action
    record: Record | None = None
    delay: float = 0.0
    dead_letter: bool = False


def decide(
    rec: Record | None,
    now: float,
    *,
    worker_id: str,
    lease: float,
    max_deliver: int,
    num_delivered: int = 1,
) -> Decision:
    """The claim rule of the backend (mirrors the memory backend's)."""
    if rec is None or rules.is_final(rec.status):
        return Decision(Action.DROP)
    if rec.status is TaskStatus.WAITING:
        # a release publishes before it flips the record: look again shortly
        if num_delivered > WAITING_RECHECKS:
            return Decision(Action.DROP)
        return Decision(Action.LATER, delay=0.5)
    lapsed = rec.status is TaskStatus.RUNNING
    if lapsed:
        if rec.lease_until is not None and rec.lease_until >= now:
            return Decision(Action.LATER, delay=rec.lease_until - now + 0.01)
    elif rec.run_at is not None and rec.run_at > now:
        return Decision(Action.LATER, delay=rec.run_at - now)
    if rules.is_expired(rec.expires_at, now):
        expired = rec.but(
            status=TaskStatus.EXPIRED,
            error=rules.EXPIRED_MESSAGE,
            lease_until=None,
            reported=False,
        )
        return Decision(Action.WRITE_DROP, expired)
    lapses = rec.lapses + 1 if lapsed else rec.lapses
    if lapsed and max_deliver > 0 and lapses >= max_deliver:
        dead = rec.but(
            status=TaskStatus.FAILED,
            lease_until=None,
            lapses=lapses,
            error=(
                f"dead-lettered: the lease of this task lapsed {lapses} times "
                f"(max_deliver={max_deliver}); its worker probably crashed running it"
            ),
        )
        return Decision(Action.WRITE_DROP, dead, dead_letter=True)
    claimed = rec.but(
        status=TaskStatus.RUNNING,
        attempt=rec.attempt + 1,
        worker_id=worker_id,
        lease_until=now + lease,
        lapses=lapses,
    )
    return Decision(Action.CLAIM, claimed)
