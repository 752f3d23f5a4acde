"""Time-sortable unique identifiers.

An id is 26 lowercase characters: 12 hex digits of milliseconds since the epoch, then a
14-hex-digit counter/random tail. Ids made in one process are strictly increasing, so
sorting by id sorts by creation time (FIFO tie-break in every backend).
"""

from __future__ import annotations

import os
import threading
import time

_TAIL_MASK = 0xFFFFFFFFFFFFFF  # 14 hex digits
_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    """Return a new time-sortable id (monotonic within the process)."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[str]:
    """Return ``n`` new time-sortable ids, increasing, under one lock (for bulk enqueue)."""
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            first = _seq + 1
        else:
            _last_ms = ms
            # random start so ids of different processes in the same ms rarely collide
            first = int.from_bytes(os.urandom(7), "big") >> 4
        _seq = first + n - 1
    template = f"{ms:012x}%014x"  # %-formatting: the cheapest per id (bulk enqueue)
    if first + n - 1 <= _TAIL_MASK:
        return list(map(template.__mod__, range(first, first + n)))
    return [template % (seq & _TAIL_MASK) for seq in range(first, first + n)]


def id_timestamp(task_id: str) -> float:
    """Return the creation time (Unix seconds) encoded in an id made by :func:`new_id`."""
    return int(task_id[:12], 16) / 1000.0
