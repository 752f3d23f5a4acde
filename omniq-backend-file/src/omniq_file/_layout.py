"""File names of the file backend (pure: no I/O).

A task is one record plus one *token*, an empty file whose directory is the task's
status and whose name sorts in claim order, so the next task is the first name of one
directory listing and no task file is read to find it::

    tasks/<id>                                   the record (core serializer; on a local
                                                 disk a completed task's record shares one
                                                 file with its result: see _final)
    q/<queue>/ready/<prio>-<due>-<id>@<attempt>  PENDING, due (sorted: claim order)
    q/<queue>/delayed/<due>-<prio>-<id>@<attempt> PENDING, not yet due (sorted by due)
    q/<queue>/running/<id>@<attempt>@<lease ms>  RUNNING: fencing token and lease
    q/<queue>/finishing/<id>@<attempt>@<ms>      owned by one process while it writes
    q/<queue>/waiting/<id>                       WAITING on dependencies
    q/<queue>/done/<ended µs>-<id>@<status>      final (sorted by end: pruning order)
    deps/<dependency>/<dependent>                who waits on whom
    ttl/<expires µs>-<id>                        tasks with a TTL (expiry sweep)
    expired/<id>                                 found expired at claim, not reported yet
    results/<id>, rttl/<expires µs>-<id>         results and their TTL index
    events/<first µs>-<last µs>-<uuid>.jsonl     events, one file per batch
    schedules/<id>, fires/<id>/<due>             schedules and their claimed due times

``<prio>`` is ``10**12 - priority`` (higher priority sorts first), times are zero-padded
integers. Every change of a task's status is one ``move`` of its token, which only one
process can win (see :mod:`omniq_file._store`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple
from urllib.parse import quote, unquote

from omniq.models import TaskStatus

PRIO_BASE = 10**12
STATES = ("ready", "delayed", "running", "finishing", "waiting", "done")


def qname(queue: str) -> str:
    """A queue name as one safe path component."""
    q = quote(queue, safe="")
    return q.replace(".", "%2E") if set(q) <= {"."} else q


def queue_of(component: str) -> str:
    """The queue name of a path component made by :func:`qname`."""
    return unquote(component)


@functools.lru_cache(maxsize=1024)
def qdir(queue: str, state: str) -> str:
    """The directory of ``queue``'s tokens in ``state`` (cached: on every hot path)."""
    return f"q/{qname(queue)}/{state}"


def prio(priority: int) -> str:
    """Zero-padded inverted priority (higher priority sorts first)."""
    p = max(min(int(priority), PRIO_BASE - 1), 1 - PRIO_BASE)
    return f"{PRIO_BASE - p:013d}"


def us(t: float) -> str:
    """Zero-padded microseconds of a Unix time."""
    return f"{max(int(t * 1_000_000), 0):017d}"


def ms(t: float) -> int:
    """Milliseconds of a Unix time."""
    return int(t * 1000)


def ready_name(priority: int, due: float, task_id: str, attempt: int) -> str:
    """Token name of a due PENDING task."""
    return f"{prio(priority)}-{us(due)}-{task_id}@{attempt}"


def delayed_name(priority: int, due: float, task_id: str, attempt: int) -> str:
    """Token name of a PENDING task not due yet."""
    return f"{us(due)}-{prio(priority)}-{task_id}@{attempt}"


class Pending(NamedTuple):
    """A parsed ready/delayed token name."""

    priority: str
    due_us: int
    task_id: str
    attempt: int


def parse_ready(name: str) -> Pending | None:
    """Parse a ready token name (None for a name this backend did not make)."""
    try:
        p, due, rest = name.split("-", 2)
        tid, _, attempt = rest.rpartition("@")
        return Pending(p, int(due), tid, int(attempt)) if tid else None
    except ValueError:
        return None


def parse_delayed(name: str) -> Pending | None:
    """Parse a delayed token name (None for a name this backend did not make)."""
    try:
        due, p, rest = name.split("-", 2)
        tid, _, attempt = rest.rpartition("@")
        return Pending(p, int(due), tid, int(attempt)) if tid else None
    except ValueError:
        return None


def claim_name(task_id: str, attempt: int, until_ms: int) -> str:
    """Token name of a running (or finishing) task: attempt and lease/since in ms."""
    return f"{task_id}@{attempt}@{until_ms}"


class Claim(NamedTuple):
    """A parsed running/finishing token name."""

    task_id: str
    attempt: int
    until_ms: int


def parse_claim(name: str) -> Claim | None:
    """Parse a running/finishing token name (None for a foreign name)."""
    try:
        rest, _, until = name.rpartition("@")
        tid, _, attempt = rest.rpartition("@")
        return Claim(tid, int(attempt), int(until)) if tid else None
    except ValueError:
        return None


def done_name(ended: float, task_id: str, status: TaskStatus) -> str:
    """Token name of a final task."""
    return f"{us(ended)}-{task_id}@{status.value}"


class Done(NamedTuple):
    """A parsed done token name."""

    ended_us: int
    task_id: str
    status: TaskStatus


def parse_done(name: str) -> Done | None:
    """Parse a done token name (None for a foreign name)."""
    try:
        ended, rest = name.split("-", 1)
        tid, _, status = rest.rpartition("@")
        return Done(int(ended), tid, TaskStatus(status)) if tid else None
    except ValueError:
        return None


def ttl_name(expires_at: float, task_id: str) -> str:
    """Name of a TTL index entry."""
    return f"{us(expires_at)}-{task_id}"


def parse_ttl(name: str) -> tuple[int, str] | None:
    """(expires µs, id) of a TTL index entry."""
    t, _, tid = name.partition("-")
    try:
        return int(t), tid
    except ValueError:
        return None


def safe_id(task_id: str) -> bool:
    """True when an id can be a file name as it is (no separators, not hidden)."""
    return bool(task_id) and "/" not in task_id and "\x00" not in task_id and task_id[0] != "."
