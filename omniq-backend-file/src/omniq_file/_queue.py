"""AsyncFileQueue: tasks as records plus tokens whose moves are the state changes.

See :mod:`omniq_file._layout` for the names. The rules that make it safe:

* a claim is one ``move`` of a ready token to ``running/<id>@<attempt+1>@<lease>``:
  the attempt in the name is the fencing token, the lease is in the name too;
* every other change first moves the token into ``finishing/`` (so one process owns
  the task), writes the record (and the result, for a completion), then moves the token
  to its new directory -- a stale claim cannot take the token, so it can write nothing;
* a token whose lease lapsed (or that stayed in ``finishing/`` past ``finish_grace``,
  its owner having died) is put back by whichever worker sees it first.

The record is written only by the owner of the token; a claim does not rewrite it (the
token says RUNNING), which keeps a claim to one rename and one read.
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from omniq import rules
from omniq.errors import SerializationError
from omniq.models import Task, TaskQuery, TaskResult, TaskStatus
from omniq.models.worker import WorkerInfo
from omniq.storage.base import BaseResultStorage, BaseTaskQueue, Released, check_encodable
from omniq.storage.notify import Notifier
from omniq_file import _final, _sweeps, _workers
from omniq_file import _layout as L
from omniq_file import _results as _results_mod
from omniq_file._component import FileComponent
from omniq_file._store import LocalStore

if TYPE_CHECKING:
    from omniq_file._results import AsyncFileResultStorage

log = logging.getLogger("omniq.file")

_NOTIFIERS: dict[str, Notifier] = {}


def _notifier(key: str) -> Notifier:
    """The in-process wake-up signal of one store (other processes poll)."""
    n = _NOTIFIERS.get(key)
    if n is None:
        n = _NOTIFIERS.setdefault(key, Notifier())
    return n


#: Seconds between two sweeps of tmp/ by one process's ``cleanup_expired``.
TMP_SWEEP_EVERY = 600.0

_LOCKS = [threading.Lock() for _ in range(64)]


def _claim_lock(task_id: str, attempt: int) -> threading.Lock:
    """The lock that keeps a heartbeat and a completion of one claim in this process
    from renaming its token at the same time."""
    return _LOCKS[hash((task_id, attempt)) % len(_LOCKS)]


class _Listing:
    """A sorted listing of one queue's ``ready/`` directory that later claims go on
    from (a local disk only): listing and sorting a deep queue per claim batch would
    cost more than the claims. It is listed again when the directory changed since this
    process last claimed from it (its ``stat`` differs), when this process put a token
    in it (``gen``), when it is used up, or after ``LISTING_MAX_AGE`` (a change by
    another process in the same clock tick as ours leaves the ``stat`` unchanged). A
    listing younger than ``LISTING_MIN_AGE`` is used even when the directory changed:
    with several consumers it changes at every claim, and listing a deep queue per
    claim batch would cost more than the claims (a token another process adds is then
    seen up to that much later)."""

    __slots__ = ("at", "gen", "names", "pos", "stamp")

    def __init__(self, names: builtins.list[str], gen: int) -> None:
        self.names = names
        self.pos = 0
        self.gen = gen
        self.at = time.monotonic()
        self.stamp: tuple[int, int, int] | None = None


#: Longest time a ``_Listing`` is used for (seconds).
LISTING_MAX_AGE = 0.5
#: Time a ``_Listing`` is used for even when the directory changed (seconds).
LISTING_MIN_AGE = 0.05


def _skip_ahead(names: builtins.list[str], i: int, end: int, limit: int) -> int:
    """Where to go on in ``names`` after losing the race for ``names[i - 1]``: a random
    step of ``limit`` to ``2 * limit`` names (the winner's batch, about), but never onto a
    token of another priority (a higher one is never passed over)."""
    lost = names[i - 1]
    j = min(i + random.randint(limit, 2 * limit), end) - 1
    # names are sorted: names[j] has the same priority as the lost one only if every
    # name between them does
    if j >= i and names[j][:13] == lost[:13]:
        return j
    return i


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


class _Corrupt:
    """A record that exists but cannot be decoded."""

    def __init__(self, error: str) -> None:
        self.error = error


class AsyncFileQueue(FileComponent, BaseTaskQueue):
    """Task queue in a directory or bucket: priorities, delays, leases fenced by attempt,
    TTL, dependencies; claims by atomic rename (see the module docstring)."""

    blocking_dequeue: ClassVar[bool] = False
    cross_process: ClassVar[bool] = True
    supports_pruning: ClassVar[bool] = True

    #: Longest sleep between two polls of an empty queue (seconds).
    poll_interval: float = 0.05
    #: How often a consumer looks for lapsed leases while it finds work (seconds).
    recover_interval: float = 0.5
    #: How long a token may stay in ``finishing/`` before its owner is presumed dead.
    finish_grace: float = 30.0

    def __init__(
        self,
        url: str | None = None,
        *,
        default_lease: float | None = None,
        poll_interval: float | None = None,
        finish_grace: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        if default_lease is None and "default_lease" in self.url_options:
            default_lease = float(self.url_options["default_lease"])
        if default_lease is not None:
            self.default_lease = default_lease
        if poll_interval is not None:
            self.poll_interval = poll_interval
        if finish_grace is not None:
            self.finish_grace = finish_grace
        self._names: dict[tuple[str, int], str] = {}  # (id, attempt) -> running token
        self._recovered: dict[str, float] = {}  # queue -> last lease sweep (monotonic)
        self._finishing: set[tuple[str, int]] = set()  # (id, attempt) being completed here
        self._listings: dict[str, _Listing] = {}  # queue -> ready/ listing (local disk)
        self._ready_gen = 0  # bumped whenever this process may have put a token in ready/
        self._tmp_swept = 0.0  # when cleanup_expired last swept tmp/
        self._notify = _notifier(self._url)

    # --- records ----------------------------------------------------------------------

    def _load(self, tid: str) -> Task | _Corrupt | None:
        data = self.store.read(f"tasks/{tid}")
        if data is None:
            return None
        try:
            task = self.serializer.decode_task(_final.record_of(data))
        except (SerializationError, msgspec.DecodeError, ValueError, TypeError) as e:
            return _Corrupt(f"stored payload cannot be decoded: {e}")
        if task.id != tid:  # a forged or misplaced file: never another task's record
            return _Corrupt(f"stored record is of another task ({task.id!r})")
        return task

    def _stub(self, tid: str, queue: str, error: str) -> Task:
        return Task(func="<undecodable>", id=tid, queue=queue, error=error,
                    metadata={"corrupt": True})  # fmt: skip

    def _status_of(self, tid: str, now: float) -> TaskStatus | None:
        rec = self._load(tid)
        if rec is None:
            return None
        if isinstance(rec, _Corrupt):
            return TaskStatus.FAILED
        if rec.status.is_final:
            return rec.status
        if rec.expires_at is not None:
            got = self._get_sync(tid)
            return None if got is None else got.status
        return rec.status

    # --- token moves ------------------------------------------------------------------

    def _take(self, q: str, state: str, name: str, tid: str, attempt: int) -> str | None:
        """Move a token into ``finishing/``: the caller owns the task when not None."""
        own = L.claim_name(tid, attempt, L.ms(time.time()))
        if self.store.move(f"{L.qdir(q, state)}/{name}", f"{L.qdir(q, 'finishing')}/{own}"):
            return own
        return None

    def _token(self, task: Task, now: float) -> str:
        """Where the token of ``task`` (in its new state) goes."""
        q, st = task.queue, task.status
        if st is TaskStatus.PENDING:
            due = task.run_at if task.run_at is not None else task.created_at
            if task.run_at is not None and task.run_at > now:
                return f"{L.qdir(q, 'delayed')}/{L.delayed_name(task.priority, due, task.id, task.attempt)}"  # noqa: E501
            return f"{L.qdir(q, 'ready')}/{L.ready_name(task.priority, due, task.id, task.attempt)}"
        if st is TaskStatus.WAITING:
            return f"{L.qdir(q, 'waiting')}/{task.id}"
        return f"{L.qdir(q, 'done')}/{L.done_name(now, task.id, st)}"

    def _publish(
        self,
        own: str,
        task: Task,
        result: bytes | None = None,
        index: str | None = None,
        record: bytes | None = None,
    ) -> None:
        """Write the record (and result, and the result's TTL ``index`` entry) of an owned
        task, then move its token. On a local disk they are one file under every name
        (one file to create, not three: see :mod:`omniq_file._final`)."""
        now = time.time()
        store = self.store
        if record is None:
            record = self.serializer.encode_task(task)
        src = f"{L.qdir(task.queue, 'finishing')}/{own}"
        dst = self._token(task, now)
        if isinstance(store, LocalStore) and (result is not None or task.status.is_final):
            # one file: the index entry, the result, the record, then the done token as
            # its last name (see :meth:`LocalStore.finish`)
            links = [index] if index else []
            data = record
            if result is not None:
                links.append(f"results/{task.id}")
                data = _final.pack(record, result)
            if task.status.is_final:
                if not store.finish(links, f"tasks/{task.id}", data, src, dst):
                    log.warning("task %s: its finishing token was taken over (owner too slow)",
                                task.id)  # fmt: skip
                return
            store.write_linked((*links, f"tasks/{task.id}"), data)
        else:
            if index is not None:  # before the result: the sweep must see it
                store.touch(index)
            if result is not None:
                store.write(f"results/{task.id}", result)
            store.write(f"tasks/{task.id}", record)
        if not store.move(src, dst):
            log.warning("task %s: its finishing token was taken over (owner too slow)", task.id)
        elif task.status is TaskStatus.PENDING:
            self._ready_gen += 1  # after the move: a listing made before it is dropped

    def _candidates(self, rec: Task) -> builtins.list[tuple[str, str, int]]:
        """(state, name, attempt) of the tokens a task with this record may have."""
        q, a = rec.queue, rec.attempt
        due = rec.run_at if rec.run_at is not None else rec.created_at
        out = [
            ("waiting", rec.id, a),
            ("ready", L.ready_name(rec.priority, due, rec.id, a), a),
            ("delayed", L.delayed_name(rec.priority, due, rec.id, a), a),
        ]
        for state in ("running",):
            for name in self.store.list(L.qdir(q, state)):
                c = L.parse_claim(name)
                if c is not None and c.task_id == rec.id:
                    out.append((state, name, c.attempt))
        return out

    def _find_claim(self, q: str, state: str, tid: str) -> L.Claim | None:
        for name in self.store.list(L.qdir(q, state)):
            c = L.parse_claim(name)
            if c is not None and c.task_id == tid:
                return c
        return None

    def _take_running(self, task: Task) -> str | None:
        """Own the running token of this claim (None: the claim is stale)."""
        q, tid, a = task.queue, task.id, task.attempt
        with _claim_lock(tid, a):
            name = self._names.pop((tid, a), None)
            if name is not None:
                own = self._take(q, "running", name, tid, a)
                if own is not None:
                    return own
            for _ in range(50):  # a token renamed meanwhile (a heartbeat): look again
                name = self._running_name(q, tid, a)
                if name is None:
                    return None
                own = self._take(q, "running", name, tid, a)
                if own is not None:
                    return own
            return None

    def _running_name(self, q: str, tid: str, attempt: int) -> str | None:
        """The current name of a claim's running token, by listing (None: gone)."""
        for name in self.store.list(L.qdir(q, "running")):
            c = L.parse_claim(name)
            if c is not None and c.task_id == tid and c.attempt == attempt:
                return name
        return None

    # --- enqueue ----------------------------------------------------------------------

    async def enqueue(self, task: Task) -> TaskStatus:
        """Store a task; idempotent by id (see :meth:`BaseTaskQueue.enqueue`)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[TaskStatus]:
        """Store tasks in one thread hop: each is encoded first (a SerializationError
        stores nothing), then its record is created exclusively and its token made."""
        if not tasks:
            return []
        fresh = []
        for t in tasks:
            if not L.safe_id(t.id):
                raise ValueError(f"task id {t.id!r} cannot be a file name")
            fresh.append(
                msgspec.structs.replace(
                    t, status=TaskStatus.PENDING, attempt=0, lease_until=None, worker_id=None
                )
            )
        data = [self.serializer.encode_task(t) for t in fresh]
        out = await self.run(self._enqueue_sync, fresh, data)
        self._notify.notify_all()
        return out

    def _enqueue_sync(
        self, tasks: Sequence[Task], data: Sequence[bytes]
    ) -> builtins.list[TaskStatus]:
        out: builtins.list[TaskStatus] = []
        store = self.store
        try:
            for t, d in zip(tasks, data, strict=True):
                now = time.time()
                if t.depends_on:
                    for dep in t.depends_on:
                        store.touch(f"deps/{dep}/{t.id}")
                    status, failed = rules.dependency_outcome(
                        [self._status_of(dep, now) for dep in t.depends_on]
                    )
                    if status is not TaskStatus.PENDING:
                        why = None
                        if failed is not None:
                            why = rules.dependency_failed(t.depends_on[failed])
                        t = msgspec.structs.replace(t, status=status, error=why)
                        d = self.serializer.encode_task(t)
                if t.expires_at is not None:  # before the token: the sweep must see it
                    store.touch(f"ttl/{L.ttl_name(t.expires_at, t.id)}")
                if not store.create(f"tasks/{t.id}", d, self._token(t, now)):
                    got = self._get_sync(t.id)
                    out.append(got.status if got is not None else TaskStatus.PENDING)
                    continue
                if t.status is TaskStatus.WAITING:
                    # a dependency may have ended while this one was written: decide again
                    self._release_one(t, now)
                    got = self._get_sync(t.id)
                    out.append(got.status if got is not None else t.status)
                else:
                    out.append(t.status)
        finally:
            self._ready_gen += 1  # after the tokens: a listing made before them is dropped
        return out

    # --- claim ------------------------------------------------------------------------

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` tasks (queue order, then priority, then oldest); when
        none is ready, poll (woken at once by an enqueue in this process) up to ``wait``."""
        deadline = time.monotonic() + wait
        # an empty poll of a local directory is two listings: start sooner there
        delay = 0.001 if isinstance(self._store, LocalStore) else 0.002
        while True:
            claimed, next_due = await self.run(self._claim_sync, queues, limit, worker_id, lease)
            if claimed:
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            pause = min(remaining, delay)
            if next_due is not None:
                pause = min(pause, max(next_due - time.time(), 0.001))
            await self._notify.wait(pause)
            delay = min(delay * 2, self.poll_interval)

    def _claim_sync(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float
    ) -> tuple[builtins.list[Task], float | None]:
        store = self.store
        out: builtins.list[Task] = []
        next_due: float | None = None
        for q in queues:
            now = time.time()
            due = self._promote(q, now)
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
            listing, ready = self._ready_names(q)
            if (
                ready[1] >= len(ready[0])
                or time.monotonic() - self._recovered.get(q, 0.0) > self.recover_interval
            ):
                self._recovered[q] = time.monotonic()
                if self._recover(q, now):
                    listing, ready = self._ready_names(q, fresh=True)
            names, i = ready
            start, end = i, len(names)
            ready_dir, running_dir = L.qdir(q, "ready"), L.qdir(q, "running")
            while i < end and len(out) < limit:
                name = names[i]
                i += 1
                p = L.parse_ready(name)
                if p is None:
                    continue
                until = L.ms(time.time() + lease)
                run = L.claim_name(p.task_id, p.attempt + 1, until)
                if not store.move(f"{ready_dir}/{name}", f"{running_dir}/{run}"):
                    # another consumer won it: it claims the names after this one too, so
                    # jump past its batch rather than race it name by name (only among
                    # tokens of the same priority; skipped ones are seen at the next listing)
                    i = _skip_ahead(names, i, end, limit)
                    continue
                task = self._claimed(q, run, p, until, worker_id)
                if task is not None:
                    out.append(task)
            if listing is not None:
                self._ready_used(q, listing, i - start)
            if len(out) >= limit:
                break
        return out, next_due

    def _ready_names(
        self, q: str, fresh: bool = False
    ) -> tuple[tuple[_Listing, int] | None, tuple[builtins.list[str], int]]:
        """The ready tokens of ``q`` in claim order and the index of the first one not
        tried yet, with the listing they come from and that index (see
        :class:`_Listing`; other stores list the directory each time)."""
        store = self.store
        directory = L.qdir(q, "ready")
        if not isinstance(store, LocalStore):
            return None, (sorted(store.list(directory)), 0)
        cached = self._listings.get(q)
        if (
            not fresh
            and cached is not None
            and cached.pos < len(cached.names)
            and cached.gen == self._ready_gen
            and cached.stamp is not None
            and (
                (age := time.monotonic() - cached.at) < LISTING_MIN_AGE
                or (age < LISTING_MAX_AGE and cached.stamp == _stamp(store._p(directory)))
            )
        ):
            start = cached.pos
            return (cached, start), (cached.names, start)
        gen = self._ready_gen  # read before listing: a token put in meanwhile relists
        listing = _Listing(sorted(store.list(directory)), gen)
        self._listings[q] = listing
        return (listing, 0), (listing.names, 0)

    def _ready_used(self, q: str, used: tuple[_Listing, int], tried: int) -> None:
        """Note that ``tried`` names from ``used`` (listing, start) were tried, and the
        directory's ``stat`` now (after this process's own claims). Claims running at
        once in several threads tried the same names: the listing goes on after the
        furthest one, never past a name no claim tried."""
        listing, start = used
        listing.pos = max(listing.pos, start + tried)
        store = self.store
        if isinstance(store, LocalStore):
            listing.stamp = _stamp(store._p(L.qdir(q, "ready")))

    def _claimed(self, q: str, run: str, p: L.Pending, until: int, worker_id: str) -> Task | None:
        """The task of a token just claimed, or None when it ended at claim (corrupt,
        expired, or gone)."""
        tid, attempt = p.task_id, p.attempt + 1
        rec = self._load(tid)
        now = time.time()
        if rec is None or isinstance(rec, _Corrupt) or rec.is_expired(now):
            own = self._take(q, "running", run, tid, attempt)
            if own is None:
                return None
            if rec is None or isinstance(rec, _Corrupt):
                why = "stored task record is missing" if rec is None else rec.error
                log.error("task %s cannot be run; failing it: %s", tid, why)
                stub = self._stub(tid, q, why)
                self._publish(own, msgspec.structs.replace(
                    stub, status=TaskStatus.FAILED, attempt=attempt))  # fmt: skip
            else:
                self._publish(own, msgspec.structs.replace(
                    rec, status=TaskStatus.EXPIRED, error=rules.EXPIRED_MESSAGE, lease_until=None,
                    worker_id=None))  # fmt: skip
                self.store.touch(f"expired/{tid}")
            return None
        self._names[(tid, attempt)] = run
        return msgspec.structs.replace(
            rec, status=TaskStatus.RUNNING, attempt=attempt, lease_until=until / 1000,
            worker_id=worker_id, error=None,
        )  # fmt: skip

    def _promote(self, q: str, now: float) -> float | None:
        """Move due delayed tokens to ready; the due time of the next one, if any."""
        now_us = int(now * 1_000_000)
        for name in sorted(self.store.list(L.qdir(q, "delayed"))):
            p = L.parse_delayed(name)
            if p is None:
                continue
            if p.due_us > now_us:
                return p.due_us / 1_000_000
            ready = f"{p.priority}-{p.due_us:017d}-{p.task_id}@{p.attempt}"
            self.store.move(f"{L.qdir(q, 'delayed')}/{name}", f"{L.qdir(q, 'ready')}/{ready}")
            self._ready_gen += 1  # after the move: a listing made before it is dropped
        return None

    def _recover(self, q: str, now: float) -> bool:
        """Put back tokens whose lease lapsed or whose finisher died; True if any."""
        now_ms = L.ms(now)
        grace_ms = int(self.finish_grace * 1000)
        found = False
        done: set[str] | None = None
        for state, limit in (("running", now_ms), ("finishing", now_ms - grace_ms)):
            for name in self.store.list(L.qdir(q, state)):
                c = L.parse_claim(name)
                if c is None or c.until_ms >= limit:
                    continue
                own = self._take(q, state, name, c.task_id, c.attempt)
                if own is None:
                    continue
                rec = self._load(c.task_id)
                if state == "finishing" and isinstance(rec, Task) and rec.status.is_final:
                    # its owner died after writing the final record: when it also made the
                    # done token (a completion names it before dropping the finishing one),
                    # only the finishing token is left to remove
                    if done is None:
                        done = {
                            d.task_id
                            for d in map(L.parse_done, self.store.list(L.qdir(q, "done")))
                            if d is not None
                        }
                    if c.task_id in done:
                        self.store.delete(f"{L.qdir(q, 'finishing')}/{own}")
                        continue
                if rec is None or isinstance(rec, _Corrupt):
                    why = "stored task record is missing" if rec is None else rec.error
                    stub = self._stub(c.task_id, q, why)
                    rec = msgspec.structs.replace(stub, status=TaskStatus.FAILED)
                elif not (state == "finishing" and rec.status is not TaskStatus.PENDING):
                    rec = msgspec.structs.replace(
                        rec, status=TaskStatus.PENDING, attempt=c.attempt, lease_until=None,
                        worker_id=None,
                    )  # fmt: skip
                log.info("task %s: lease lapsed (attempt %d); queued again", c.task_id, c.attempt)
                self._publish(own, rec)
                found = True
        return found

    # --- finishing --------------------------------------------------------------------

    async def complete(self, task: Task) -> bool:
        """Mark a claimed task SUCCESS (fenced by attempt)."""
        return (await self.complete_many([task]))[0]

    async def complete_many(self, tasks: Sequence[Task]) -> builtins.list[bool]:
        """Complete several claims in one thread hop."""
        return await self.run(self._complete_sync, [(t, None) for t in tasks])

    async def complete_with_results(
        self, finished: Sequence[tuple[Task, TaskResult]], results: BaseResultStorage
    ) -> builtins.list[bool]:
        """Complete tasks and store their results while owning the task, so a stale
        attempt can never write a result, when ``results`` is on the same store."""
        from omniq_file._results import AsyncFileResultStorage

        if not isinstance(results, AsyncFileResultStorage) or not self.same_store(results):
            return await super().complete_with_results(finished, results)
        check_encodable(results, [r for _, r in finished])
        return await self.run(self._complete_sync, list(finished), results)

    def _complete_sync(
        self,
        finished: Sequence[tuple[Task, TaskResult | None]],
        results: AsyncFileResultStorage | None = None,
    ) -> builtins.list[bool]:
        keys = [(t.id, t.attempt) for t, _ in finished]
        self._finishing.update(keys)  # a heartbeat meanwhile: the claim is still ours
        try:
            # own every token first (renames only): once in finishing/ no lease can lapse
            owned = [self._take_running(t) for t, _ in finished]
            tasks_ser = self.serializer  # once per batch: each look-up reads the environment
            results_ser = results.serializer if results is not None else None
            expiring = [
                (res.expires_at, res.task_id)
                for (_, res), own in zip(finished, owned, strict=True)
                if own is not None and res is not None and res.expires_at is not None
            ]
            batch_index = results_ser is not None and len(expiring) > 1
            if batch_index:  # one TTL index entry for the batch, before its results
                _results_mod.write_batch_index(self.store, expiring)
            for (t, res), own in zip(finished, owned, strict=True):
                if own is None:
                    continue
                done = msgspec.structs.replace(
                    t, status=TaskStatus.SUCCESS, lease_until=None, error=None
                )
                data = index = None
                if res is not None and results_ser is not None:
                    data = results_ser.encode_result(res)
                    if res.expires_at is not None and not batch_index:
                        index = f"rttl/{L.ttl_name(res.expires_at, res.task_id)}"
                self._publish(own, done, data, index, tasks_ser.encode_task(done))
        finally:
            self._finishing.difference_update(keys)
        return [own is not None for own in owned]

    async def fail(
        self, task: Task, retry_at: float | None = None, *, error: str | None = None
    ) -> bool:
        """Record a failed run: PENDING again at ``retry_at``, or FAILED (fenced)."""
        ok = await self.run(self._fail_sync, task, retry_at, error)
        if ok and retry_at is not None:
            self._notify.notify_all()
        return ok

    def _fail_sync(self, task: Task, retry_at: float | None, error: str | None) -> bool:
        own = self._take_running(task)
        if own is None:
            return False
        if retry_at is None:
            new = msgspec.structs.replace(task, status=TaskStatus.FAILED, lease_until=None,
                                          error=error)  # fmt: skip
        else:
            new = msgspec.structs.replace(task, status=TaskStatus.PENDING, lease_until=None,
                                          error=error, run_at=retry_at)  # fmt: skip
        self._publish(own, new)
        return True

    async def unclaim(self, task: Task) -> bool:
        """Give back an unstarted claim: PENDING at once, attempt restored (fenced)."""
        ok = await self.run(self._unclaim_sync, task)
        if ok:
            self._notify.notify_all()
        return ok

    def _unclaim_sync(self, task: Task) -> bool:
        own = self._take_running(task)
        if own is None:
            return False
        self._publish(own, msgspec.structs.replace(
            task, status=TaskStatus.PENDING, attempt=task.attempt - 1, lease_until=None,
            worker_id=None))  # fmt: skip
        return True

    async def heartbeat(self, task: Task, lease: float | None = None) -> bool:
        """Extend a claim's lease (one rename); False when the claim is no longer current."""
        return await self.run(self._heartbeat_sync, task, lease or self.default_lease)

    def _heartbeat_sync(self, task: Task, lease: float) -> bool:
        q, tid, a = task.queue, task.id, task.attempt
        running = L.qdir(q, "running")
        with _claim_lock(tid, a):
            if (tid, a) in self._finishing:
                return True  # being completed by this process: its token is ours
            new = L.claim_name(tid, a, L.ms(time.time() + lease))
            name = self._names.get((tid, a))
            for _ in range(50):
                if name is not None and self.store.move(f"{running}/{name}", f"{running}/{new}"):
                    self._names[(tid, a)] = new
                    return True
                name = self._running_name(q, tid, a)
                if name is None:
                    break
            self._names.pop((tid, a), None)
            return False

    # --- reading ----------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The stored task (status from its token, TTL applied), or None."""
        if not L.safe_id(task_id):
            return None
        return await self.run(self._get_sync, task_id)

    def _get_sync(self, tid: str) -> Task | None:
        for _ in range(20):
            rec = self._load(tid)
            if rec is None:
                return None
            if isinstance(rec, _Corrupt):
                return self._stub(tid, "default", rec.error)
            now = time.time()
            if rec.status.is_final:
                return rec
            for state, name, attempt in self._candidates(rec):
                if not self.store.exists(f"{L.qdir(rec.queue, state)}/{name}"):
                    continue
                if state == "running":
                    c = L.parse_claim(name)
                    assert c is not None
                    return msgspec.structs.replace(
                        rec, status=TaskStatus.RUNNING, attempt=attempt,
                        lease_until=c.until_ms / 1000)  # fmt: skip
                st = TaskStatus.WAITING if state == "waiting" else TaskStatus.PENDING
                return msgspec.structs.replace(
                    rec, status=rules.effective_status(st, rec.expires_at, now)
                )
            c = self._find_claim(rec.queue, "finishing", tid)
            if c is not None:
                return msgspec.structs.replace(rec, status=TaskStatus.RUNNING, attempt=c.attempt)
            time.sleep(0.005)  # between two moves of its token: look again
        return rec if isinstance(rec, Task) else None

    async def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a PENDING, WAITING or RUNNING task; False when unknown or final."""
        if not L.safe_id(task_id):
            return False
        return await self.run(self._cancel_sync, task_id, reason or rules.CANCELLED_BY_REQUEST)

    def _cancel_sync(self, tid: str, reason: str) -> bool:
        for _ in range(20):
            rec = self._load(tid)
            if rec is None or isinstance(rec, _Corrupt) or rec.status.is_final:
                return False
            for state, name, attempt in self._candidates(rec):
                own = self._take(rec.queue, state, name, tid, attempt)
                if own is not None:
                    self._publish(own, msgspec.structs.replace(
                        rec, status=TaskStatus.CANCELLED, error=reason, lease_until=None,
                        attempt=attempt))  # fmt: skip
                    return True
            time.sleep(0.005)
        return False

    async def requeue(self, task_id: str) -> Task | None:
        """Put an ended task back to PENDING (:func:`omniq.rules.requeued`), owning its
        done token while the record is rewritten; None when unknown or not final."""
        if not L.safe_id(task_id):
            return None
        out = await self.run(self._requeue_sync, task_id)
        if out is not None:
            self._notify.notify_all()
        return out

    def _requeue_sync(self, tid: str) -> Task | None:
        rec = self._load(tid)
        if not isinstance(rec, Task):
            return None
        now = time.time()
        if not rules.effective_status(rec.status, rec.expires_at, now).is_final:
            return None
        if not rec.status.is_final:  # past its TTL, not swept yet: expire it first
            self._expire_sync(now)
            rec = self._load(tid)
            if not isinstance(rec, Task) or not rec.status.is_final:
                return None
        for name in self.store.list(L.qdir(rec.queue, "done")):
            d = L.parse_done(name)
            if d is None or d.task_id != tid:
                continue
            own = self._take(rec.queue, "done", name, tid, rec.attempt)
            if own is None:
                return None
            fresh = rules.requeued(rec, now)
            self._publish(own, fresh)
            return fresh
        return None

    # --- paused queues ----------------------------------------------------------------

    async def pause_queue(self, queue: str) -> None:
        """Mark ``queue`` paused (``paused/<queue>``); workers stop claiming from it."""
        await self.run(self.store.touch, f"paused/{L.qname(queue)}")

    async def resume_queue(self, queue: str) -> None:
        """Remove the pause mark of ``queue`` (idempotent)."""
        await self.run(self.store.delete, f"paused/{L.qname(queue)}")

    async def paused_queues(self) -> set[str]:
        """The queues paused now (one directory listing)."""
        return {L.queue_of(n) for n in await self.run(self.store.list, "paused")}

    # --- live workers -----------------------------------------------------------------

    async def record_worker(self, info: WorkerInfo) -> None:
        """Store (or replace) a worker's heartbeat in ``workers/``."""
        await self.run(_workers.record, self.store, info)

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (it stopped cleanly)."""
        await self.run(_workers.remove, self.store, worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Live workers, oldest first (expired records are deleted)."""
        return await self.run(_workers.live, self.store)

    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        """Number of tasks, from directory listings alone (no record is read). A queued
        task past its TTL counts as PENDING until a claim or the sweep expires it."""

        def count() -> int:
            return sum(
                1
                for _, st, _ in _sweeps.tokens(self.store, queue, _sweeps.states_of(status))
                if status is None or st is status
            )

        return await self.run(count)

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        """Tasks oldest first (or the newest first), optionally filtered; reads the
        records of the tasks the filters keep."""
        return await self.run(self._list_sync, query)

    def _list_sync(self, query: TaskQuery) -> builtins.list[Task]:
        queue, status = query.queue, query.status
        now = time.time()
        found: builtins.list[Task] = []
        # only the directories that can hold tasks of ``status`` (a worker's sweep of
        # WAITING tasks lists waiting/ alone, not every done/ token)
        for tid, st, claim in _sweeps.tokens(self.store, queue, _sweeps.states_of(status)):
            if status is not None and st is not status and status is not TaskStatus.EXPIRED:
                continue
            rec = self._load(tid)
            if rec is None:
                continue
            if isinstance(rec, _Corrupt):
                rec = self._stub(tid, queue or "default", rec.error)
            if not st.is_final:
                st = rules.effective_status(st, rec.expires_at, now)
            t = msgspec.structs.replace(rec, status=st)
            if claim is not None:
                t = msgspec.structs.replace(t, attempt=claim.attempt,
                                            lease_until=claim.until_ms / 1000)  # fmt: skip
            if status is None or t.status is status:
                found.append(t)
        found.sort(key=lambda t: (t.created_at, t.id), reverse=query.newest_first)
        return found[query.offset : query.offset + query.limit]

    async def purge(self, queue: str | None = None) -> int:
        """Delete every task (of one queue, or all): tokens and records."""

        return await self.run(_sweeps.purge, self.store, queue)

    async def cleanup_expired(self, now: float | None = None) -> builtins.list[str]:
        """Mark PENDING/WAITING tasks past their TTL EXPIRED (walking the TTL index in
        time order); return their ids and those found expired at claim time."""
        return await self.run(self._expire_sync, time.time() if now is None else now)

    def _expire_sync(self, now: float) -> builtins.list[str]:
        store = self.store
        if isinstance(store, LocalStore) and now >= self._tmp_swept + TMP_SWEEP_EVERY:
            self._tmp_swept = now
            store.sweep_tmp(now)  # what dead processes left under tmp/
        out: builtins.list[str] = []
        for tid in store.list("expired"):
            if store.delete(f"expired/{tid}"):
                out.append(tid)
        now_us = int(now * 1_000_000)
        for name in sorted(store.list("ttl")):
            parsed = L.parse_ttl(name)
            if parsed is None:
                continue
            exp_us, tid = parsed
            if exp_us > now_us:
                break
            rec = self._load(tid)
            if rec is None or isinstance(rec, _Corrupt) or rec.status.is_final:
                store.delete(f"ttl/{name}")
                continue
            for state, token, attempt in self._candidates(rec):
                if state == "running":
                    continue  # claimed before it expired: it runs
                own = self._take(rec.queue, state, token, tid, attempt)
                if own is not None:
                    self._publish(own, msgspec.structs.replace(
                        rec, status=TaskStatus.EXPIRED, error=rules.EXPIRED_MESSAGE,
                        attempt=attempt))  # fmt: skip
                    store.delete(f"ttl/{name}")
                    if tid not in out:
                        out.append(tid)
                    break
        return out

    async def prune_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` tasks that ended before ``before``, oldest first."""

        return await self.run(_sweeps.prune, self.store, before, limit)

    # --- dependencies -----------------------------------------------------------------

    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        """See :meth:`BaseTaskQueue.release_dependents`."""
        return await self.release_dependents_many([task_id], succeeded)

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        """The release walk of :mod:`omniq.rules` over the ``deps/`` markers."""
        store = self._store
        if isinstance(store, LocalStore) and not store.list("deps"):
            # no task has ever waited on another here (one listing of a local directory,
            # in the event loop): the common case of every completed batch, no thread hop
            return Released()
        out = await self.run(self._release_sync, list(task_ids), succeeded)
        if out.ready:
            self._notify.notify_all()
        return out

    def _release_sync(self, task_ids: builtins.list[str], succeeded: bool) -> Released:
        out = Released()
        ended = [(tid, succeeded) for tid in task_ids]
        while ended:
            now = time.time()
            waiting: builtins.list[rules.WaitingDependent] = []
            records: dict[str, Task] = {}
            for tid, _ in ended:
                for d in sorted(self.store.list(f"deps/{tid}")):
                    rec = records.get(d) or self._load(d)
                    if not isinstance(rec, Task) or rec.status is not TaskStatus.WAITING:
                        continue
                    records[d] = rec
                    statuses = [self._status_of(x, now) for x in rec.depends_on]
                    waiting.append(rules.WaitingDependent(d, tid, rec.depends_on, statuses))
            step = rules.release_step(ended, waiting)
            for d in step.ready:
                if self._move_waiting(records[d], TaskStatus.PENDING, None):
                    out.ready.append(d)
            done = []
            for d, reason in step.cancelled:
                if self._move_waiting(records[d], TaskStatus.CANCELLED, reason):
                    done.append(d)
            out.cancelled.extend(done)
            ended = [(d, False) for d in done]
        return out

    def _move_waiting(self, rec: Task, status: TaskStatus, error: str | None) -> bool:
        own = self._take(rec.queue, "waiting", rec.id, rec.id, rec.attempt)
        if own is None:
            return False
        self._publish(own, msgspec.structs.replace(rec, status=status, error=error))
        return True

    def _release_one(self, rec: Task, now: float) -> None:
        """Decide a task just stored WAITING again (its dependencies may have ended)."""
        status, failed = rules.dependency_outcome(
            [self._status_of(dep, now) for dep in rec.depends_on]
        )
        if status is TaskStatus.WAITING:
            return
        error = None if failed is None else rules.dependency_failed(rec.depends_on[failed])
        if self._move_waiting(rec, status, error) and status is TaskStatus.CANCELLED:
            self._release_sync([rec.id], False)
