"""A live worker as recorded in the store (its heartbeat), for ``omniq workers``."""

from __future__ import annotations

import time

import msgspec


class WorkerInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One worker's last heartbeat. A record whose ``expires_at`` has passed belongs to a
    worker that stopped or died without saying so; ``list_workers`` leaves it out."""

    id: str
    host: str
    pid: int
    queues: list[str] = msgspec.field(default_factory=list)
    executor: str = ""
    concurrency: int = 0
    started_at: float = msgspec.field(default_factory=time.time)
    last_seen: float = msgspec.field(default_factory=time.time)
    #: When the record stops counting as live (``last_seen`` + a few heartbeat intervals).
    expires_at: float = 0.0
    running: int = 0
    processed: int = 0
    failed: int = 0

    def is_live(self, now: float | None = None) -> bool:
        """True until ``expires_at`` passes."""
        return self.expires_at > (time.time() if now is None else now)


def encode_worker(info: WorkerInfo) -> bytes:
    """The JSON every backend stores for a heartbeat."""
    return msgspec.json.encode(info)


def decode_worker(data: bytes | str) -> WorkerInfo | None:
    """A stored heartbeat, or None for a record that is not one (never raises)."""
    try:
        return msgspec.json.decode(data, type=WorkerInfo)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        return None
