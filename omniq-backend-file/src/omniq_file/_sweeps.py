"""Sweeps over a file store's tokens that read no record: listing, purge, pruning."""

from __future__ import annotations

from omniq.models import TaskStatus
from omniq_file import _layout as L
from omniq_file._store import Store

Token = tuple[str, TaskStatus, L.Claim | None]


#: The token directories that can hold a task of each status (EXPIRED: a queued task
#: past its TTL is EXPIRED before a sweep moves it to done/).
_STATES_OF: dict[TaskStatus, tuple[str, ...]] = {
    TaskStatus.PENDING: ("ready", "delayed"),
    TaskStatus.RUNNING: ("running", "finishing"),
    TaskStatus.WAITING: ("waiting",),
    TaskStatus.EXPIRED: ("ready", "delayed", "waiting", "done"),
}


def states_of(status: TaskStatus | None) -> tuple[str, ...]:
    """The token directories to list for tasks of ``status`` (None: every one)."""
    if status is None:
        return L.STATES
    return _STATES_OF.get(status, ("done",))


def tokens(store: Store, queue: str | None, states: tuple[str, ...] = L.STATES) -> list[Token]:
    """(id, status, claim) of every token (of one queue, or all) in ``states``."""
    queues = [queue] if queue is not None else [L.queue_of(c) for c in store.list("q")]
    out: list[Token] = []
    for q in queues:
        for state in states:
            for name in store.list(L.qdir(q, state)):
                tid = token_id(state, name)
                if tid is None:
                    continue
                if state in ("ready", "delayed"):
                    out.append((tid, TaskStatus.PENDING, None))
                elif state in ("running", "finishing"):
                    out.append((tid, TaskStatus.RUNNING, L.parse_claim(name)))
                elif state == "waiting":
                    out.append((tid, TaskStatus.WAITING, None))
                else:
                    d = L.parse_done(name)
                    assert d is not None
                    out.append((tid, d.status, None))
    return out


def purge(store: Store, queue: str | None) -> int:
    """Delete every task (of one queue, or all): tokens and records; how many tasks."""
    queues = [queue] if queue is not None else [L.queue_of(c) for c in store.list("q")]
    ids: set[str] = set()
    for q in queues:
        for state in L.STATES:
            d = L.qdir(q, state)
            for name in store.list(d):
                store.delete(f"{d}/{name}")
                tid = token_id(state, name)
                if tid is not None and tid not in ids:
                    ids.add(tid)
                    store.delete(f"tasks/{tid}")
    return len(ids)


def prune(store: Store, before: float, limit: int) -> int:
    """Delete up to ``limit`` tasks that ended before ``before``, oldest first."""
    before_us = int(before * 1_000_000)
    old: list[tuple[int, str, str, str]] = []
    for c in store.list("q"):
        d = L.qdir(L.queue_of(c), "done")
        for name in store.list(d):
            p = L.parse_done(name)
            if p is not None and p.ended_us < before_us:
                old.append((p.ended_us, d, name, p.task_id))
    old.sort()
    for _, d, name, tid in old[:limit]:
        store.delete(f"{d}/{name}")
        store.delete(f"tasks/{tid}")
        for dependent in store.list(f"deps/{tid}"):
            store.delete(f"deps/{tid}/{dependent}")
    return len(old[:limit])


def token_id(state: str, name: str) -> str | None:
    """The task id of a token name in ``state`` (None for a foreign name)."""
    if state == "ready":
        p = L.parse_ready(name)
        return None if p is None else p.task_id
    if state == "delayed":
        p = L.parse_delayed(name)
        return None if p is None else p.task_id
    if state in ("running", "finishing"):
        c = L.parse_claim(name)
        return None if c is None else c.task_id
    if state == "done":
        d = L.parse_done(name)
        return None if d is None else d.task_id
    return name
