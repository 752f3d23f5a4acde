"""AsyncRedisQueue: tasks in hashes, claims and every state change in Lua scripts."""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from omniq import rules
from omniq.errors import SerializationError
from omniq.models import (
    Task,
    TaskQuery,
    TaskResult,
    TaskStatus,
    WorkerInfo,
    decode_worker,
    encode_worker,
)
from omniq.storage.base import BaseResultStorage, BaseTaskQueue, Released
from omniq_redis import _scripts as lua
from omniq_redis._component import BATCH, RedisComponent
from omniq_redis._results import listening

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from omniq_redis._results import AsyncRedisResultStorage

log = logging.getLogger("omniq.redis")

#: Tasks per script call of a bulk enqueue (the calls of one batch go in one pipeline).
ENQUEUE_CHUNK = 1000
_RETRY = b"retry"
#: Enqueue calls of one component in flight at once, at most (see ``enqueue_many``).
ENQUEUES_IN_FLIGHT = 16
#: Event-loop turns a consumer that knows its queues are empty gives other coroutines
#: (runners, the completion writer) before it sends its blocking pop.
YIELDS_BEFORE_BLOCK = 8
#: Enqueues of at most this many tasks tell this process's result listeners which
#: tasks are new (see ``AsyncRedisResultStorage.mark_fresh``).
FRESH_BATCH = 64
#: Completed ids remembered as having no dependents, at most (see ``_no_dependents``).
NO_DEPENDENTS_MAX = 100_000
#: Seconds between two measurements of the server's clock (see ``_clock_offset``).
CLOCK_CHECK = 60.0


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _f(v: Any) -> float | None:
    return None if v is None or v == b"" else float(v)


def member(task_id: str, due: float) -> str:
    """The task's member in its queue's ready set: due time in µs, then the id."""
    return f"{int(due * 1_000_000):016d}:{task_id}"


class AsyncRedisQueue(RedisComponent, BaseTaskQueue):
    """Task queue on Redis: priorities, delays, leases fenced by attempt, TTL,
    dependencies, and consumers woken by a blocking pop when a queue is empty."""

    blocking_dequeue: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True
    supports_pruning: ClassVar[bool] = True

    def __init__(
        self, url: str | None = None, *, default_lease: float | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        if default_lease is None and "default_lease" in self.url_options:
            default_lease = float(self.url_options["default_lease"])
        if default_lease is not None:
            self.default_lease = default_lease
        #: The queues this component's last claim found empty (None: not known empty).
        self._drained: tuple[str, ...] | None = None
        #: The next delayed task's due time or lease end seen by the last claim.
        self._next_due: float | None = None
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        #: (client clock minus server clock, when measured on the monotonic clock).
        self._offset: tuple[float, float] | None = None
        #: Ids this component completed that no task waits on (release has nothing to do).
        self._no_dependents: builtins.set[str] = set()

    # --- helpers ----------------------------------------------------------------------

    def _decode(self, task_id: str, h: dict[Any, Any], now: float) -> Task:
        """A task from its hash (the state fields win over the payload)."""
        status = TaskStatus(_s(h[b"s"]))
        expires_at = _f(h.get(b"x"))
        st = rules.effective_status(status, expires_at, now)
        lease = _f(h.get(b"l")) if status is TaskStatus.RUNNING else None
        worker = _s(h[b"w"]) if b"w" in h else None
        error = _s(h[b"e"]) if b"e" in h else None
        attempt = int(h.get(b"a", 0))
        run_at = _f(h.get(b"r"))
        try:
            task = self.serializer.decode_task(h[b"d"])
        except (SerializationError, KeyError) as e:
            return Task(
                func="<undecodable>", id=task_id, queue=_s(h.get(b"q", b"default")),
                priority=int(h.get(b"p", 0)), status=st, run_at=run_at, expires_at=expires_at,
                attempt=attempt, lease_until=lease, worker_id=worker,
                error=error or f"stored payload cannot be decoded: {e}",
                metadata={"corrupt": True},
            )  # fmt: skip
        return msgspec.structs.replace(
            task, id=task_id, status=st, attempt=attempt, lease_until=lease,
            worker_id=worker, error=error, run_at=run_at if run_at is not None else task.run_at,
        )  # fmt: skip

    def _wake_keys(self, queues: Sequence[str]) -> list[str]:
        return [f"{self.p}w:{q}" for q in queues]

    # --- enqueue ----------------------------------------------------------------------

    async def enqueue(self, task: Task) -> TaskStatus:
        """Store a task; idempotent by id (see :meth:`BaseTaskQueue.enqueue`)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> builtins.list[TaskStatus]:
        """Store tasks in one round trip (script calls of up to ENQUEUE_CHUNK tasks,
        pipelined). Every task is encoded first: a SerializationError stores nothing.

        At most ENQUEUES_IN_FLIGHT calls of one component run at once (the others wait
        their turn): a big ``map()`` sends all its batches together, and each call holds
        a pooled connection, of which redis-py allows 100 by default."""
        if not tasks:
            return []
        enc = self.serializer.encode_task
        data = [enc(t) for t in tasks]
        async with self._enqueue_slots():
            now = time.time()
            if all(
                not t.depends_on and t.expires_at is None and (t.run_at is None or t.run_at <= now)
                for t in tasks
            ):
                return await self._enqueue_plain(tasks, data, now)
            for _ in range(100):
                out = await self._try_enqueue(tasks, data)
                if out is not None:
                    return out
        raise RuntimeError("enqueue: dependencies kept changing while being read")

    def _enqueue_slots(self) -> asyncio.Semaphore:
        """The semaphore bounding this component's enqueues in flight, per event loop."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(ENQUEUES_IN_FLIGHT))
        return self._slots[1]

    async def _enqueue_plain(
        self, tasks: Sequence[Task], data: Sequence[bytes], now: float
    ) -> builtins.list[TaskStatus]:
        """Tasks ready now without TTL or dependencies: 4 arguments each, and only the
        tasks that existed already come back (one pipeline for the whole batch)."""
        script = await self.script("enqueue_plain", lua.ENQUEUE_PLAIN)
        starts = range(0, len(tasks), ENQUEUE_CHUNK)
        calls: builtins.list[builtins.list[Any]] = []
        for start in starts:
            args: builtins.list[Any] = [self.p]
            for t, d in zip(
                tasks[start : start + ENQUEUE_CHUNK],
                data[start : start + ENQUEUE_CHUNK],
                strict=True,
            ):
                due = t.run_at if t.run_at is not None else t.created_at
                args += [t.queue, int(t.priority), member(t.id, due), d]
            calls.append(args)
        # result listeners subscribed before this enqueue is sent see every result of
        # the new tasks announced: their waiters skip the first read (small batches)
        listeners = listening(self._url, self.p) if len(tasks) <= FRESH_BATCH else []
        replies = await self._run_calls(script, calls)
        out = [TaskStatus.PENDING] * len(tasks)
        existed: builtins.set[int] = set()
        for start, reply in zip(starts, replies, strict=True):
            for i in range(0, len(reply), 3):
                st = TaskStatus(_s(reply[i + 1]))
                existed.add(start + int(reply[i]))
                out[start + int(reply[i])] = rules.effective_status(st, _f(reply[i + 2]), now)
        if listeners:
            new = [t.id for i, t in enumerate(tasks) if i not in existed]
            for storage, epoch in listeners:
                storage.mark_fresh(new, epoch)
        return out

    async def _run_calls(
        self, script: AsyncScript, calls: Sequence[Sequence[Any]]
    ) -> builtins.list[Any]:
        """Run ``script`` once per argument list: one call alone (EVALSHA), several in one
        pipeline (which checks that the script is loaded first: one more round trip)."""
        keys = [f"{self.p}all"]
        if len(calls) == 1:
            return [await script(keys=keys, args=calls[0])]
        r = await self.redis()
        async with r.pipeline(transaction=False) as pipe:
            for args in calls:
                await script(keys=keys, args=args, client=pipe)
            return list(await pipe.execute())

    async def _dependency_statuses(
        self, dep_ids: set[str]
    ) -> dict[str, tuple[bytes | None, float | None]]:
        if not dep_ids:
            return {}
        r = await self.redis()
        ids = sorted(dep_ids)
        async with r.pipeline(transaction=False) as pipe:
            for d in ids:
                pipe.hmget(f"{self.p}t:{d}", "s", "x")
            rows = await pipe.execute()
        return {d: (row[0], _f(row[1])) for d, row in zip(ids, rows, strict=True)}

    async def _try_enqueue(
        self, tasks: Sequence[Task], data: Sequence[bytes]
    ) -> builtins.list[TaskStatus] | None:
        now = time.time()
        stored = await self._dependency_statuses({d for t in tasks for d in t.depends_on})
        planned: dict[str, TaskStatus] = {}  # new tasks of this batch, by id
        chunks: builtins.list[builtins.list[Any]] = []
        checks: builtins.list[Any] = []
        rows: builtins.list[Any] = []
        for t, d in zip(tasks, data, strict=True):
            status, error = TaskStatus.PENDING, ""
            if t.depends_on:
                statuses: builtins.list[TaskStatus | None] = []
                for dep in t.depends_on:
                    raw, x = stored[dep]
                    if raw is not None:
                        statuses.append(rules.effective_status(TaskStatus(_s(raw)), x, now))
                    else:
                        statuses.append(planned.get(dep))
                    checks += [dep, "" if raw is None else _s(raw)]
                status, failed = rules.dependency_outcome(statuses)
                if failed is not None:
                    error = rules.dependency_failed(t.depends_on[failed])
            planned.setdefault(t.id, status)
            due = t.run_at if t.run_at is not None else t.created_at
            rows += [
                t.id, d, t.queue, int(t.priority), member(t.id, due),
                "" if t.run_at is None else repr(t.run_at),
                "" if t.expires_at is None else repr(t.expires_at),
                status.value, error, "\n".join(t.depends_on),
            ]  # fmt: skip
            if len(rows) >= 10 * ENQUEUE_CHUNK:
                chunks.append(rows)
                rows = []
        if rows:
            chunks.append(rows)
        script = await self.script("enqueue", lua.ENQUEUE)
        calls: builtins.list[builtins.list[Any]] = []
        for n, chunk in enumerate(chunks):
            head: builtins.list[Any] = [self.p, repr(now)]
            head += [len(checks) // 2, *checks] if n == 0 else [0]
            calls.append([*head, len(chunk) // 10, *chunk])
        replies = await self._run_calls(script, calls)
        out: builtins.list[TaskStatus] = []
        for reply in replies:
            if reply and reply[0] == _RETRY:
                return None  # a dependency changed since it was read: decide again
            for i in range(0, len(reply), 2):
                st = TaskStatus(_s(reply[i]))
                out.append(rules.effective_status(st, _f(reply[i + 1]), now))
        return out

    # --- claim ------------------------------------------------------------------------

    async def _clock_offset(self) -> float:
        """This client's clock minus the server's (``TIME``), measured at most every
        CLOCK_CHECK seconds: a claim sent behind a blocking pop takes its ``now`` from
        the server's clock plus this offset, as it runs when the pop returns."""
        mono = time.monotonic()
        if self._offset is None or mono - self._offset[1] > CLOCK_CHECK:
            r = await self.redis()
            t0 = time.time()
            sec, usec = await r.time()
            t1 = time.time()
            self._offset = ((t0 + t1) / 2 - (sec + usec / 1_000_000), mono)
        return self._offset[0]

    async def _claim(
        self, queues: Sequence[str], limit: int, worker_id: str, lease: float, block: float = 0
    ) -> tuple[builtins.list[Task], float | None, int]:
        """One claim script. With ``block`` > 0 it goes in one pipeline behind a blocking
        pop on the queues' wake-up lists (up to ``block`` seconds): the server runs it as
        soon as the pop returns, which saves the consumer a round trip per wake-up."""
        script = await self.script("claim", lua.CLAIM)
        keys = [f"{self.p}q:{q}" for q in queues]
        args: builtins.list[Any] = [
            self.p, repr(time.time()), limit, worker_id, repr(lease), rules.EXPIRED_MESSAGE
        ]  # fmt: skip
        reply: Any = None
        if block > 0:
            args.append(repr(await self._clock_offset()))
            r = await self.redis()
            async with r.pipeline(transaction=False) as pipe:
                pipe.blpop(self._wake_keys(queues), timeout=block)
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                _, reply = await pipe.execute(raise_on_error=False)
            if isinstance(reply, Exception):
                from redis.exceptions import NoScriptError

                if not isinstance(reply, NoScriptError):
                    raise reply
                reply = None  # the server lost its scripts: the call below loads it
        if reply is None:
            reply = await script(keys=keys, args=args)
        nxt, flat, drained, until = reply
        claimed: builtins.list[Task] = []
        corrupt = 0
        lease_until = float(until)
        decode = self.serializer.decode_task
        for i in range(0, len(flat), 3):
            tid, data, attempt = _s(flat[i]), flat[i + 1], int(flat[i + 2])
            try:
                task = decode(data)
            except SerializationError as e:
                corrupt += 1
                log.error("task %s has an undecodable payload; failing it: %s", tid, e)
                stub = Task(func="<undecodable>", id=tid, attempt=attempt)
                await self.fail(stub, None, error=f"stored payload cannot be decoded: {e}")
                continue
            claimed.append(
                msgspec.structs.replace(
                    task,
                    id=tid,
                    status=TaskStatus.RUNNING,
                    attempt=attempt,
                    lease_until=lease_until,
                    worker_id=worker_id,
                    error=None,
                )
            )
        self._drained = tuple(queues) if int(drained) else None
        return claimed, (None if not nxt else float(nxt)), corrupt

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` tasks (queue order, then priority, then oldest) in one
        script; when none is ready, block on the queues' wake-up lists up to ``wait``,
        the next claim sent along with the blocking pop (see :meth:`_claim`).

        When this consumer's previous claim found the same queues empty, it blocks first
        (a wake token is there at once if anything became ready since), which saves an
        empty claim per call: a worker that just took the last task is idle until woken."""
        deadline = time.monotonic() + wait
        block = wait > 0 and self._drained == tuple(queues)
        if block:
            # nothing to claim: let the tasks just claimed run and their completions go
            # out before this blocking call (a wake token waits for it meanwhile)
            for _ in range(YIELDS_BEFORE_BLOCK):
                await asyncio.sleep(0)
        while True:
            timeout = 0.0
            if block:
                remaining = deadline - time.monotonic()
                timeout = min(max(remaining, 0.0), self.block_limit())
                if self._next_due is not None:
                    timeout = min(timeout, max(self._next_due - time.time(), 0.0) + 0.002)
                if timeout > 0:
                    timeout = max(timeout, 0.01)
            claimed, self._next_due, corrupt = await self._claim(
                queues, limit, worker_id, lease, timeout
            )
            if claimed:
                return claimed
            if corrupt:
                block = False
                continue  # the undecodable tasks are failed: claim the next ones
            if deadline - time.monotonic() <= 0:
                return []
            block = True

    # --- finishing --------------------------------------------------------------------

    async def complete(self, task: Task) -> bool:
        """Mark a claimed task SUCCESS (fenced by attempt)."""
        return (await self.complete_many([task]))[0]

    async def complete_many(self, tasks: Sequence[Task]) -> builtins.list[bool]:
        """Complete several claims in one script."""
        return await self._complete([(t, None) for t in tasks], None)

    async def complete_with_results(
        self, finished: Sequence[tuple[Task, TaskResult]], results: BaseResultStorage
    ) -> builtins.list[bool]:
        """Complete tasks and store their results in one script, fenced together, when
        ``results`` is a Redis result storage of the same server and prefix."""
        from omniq_redis._results import AsyncRedisResultStorage

        if not isinstance(results, AsyncRedisResultStorage) or not self.same_store(results):
            return await super().complete_with_results(finished, results)
        return await self._complete(finished, results)

    async def _complete(
        self,
        finished: Sequence[tuple[Task, TaskResult | None]],
        results: AsyncRedisResultStorage | None,
    ) -> builtins.list[bool]:
        if not finished:
            return []
        now = time.time()
        args: builtins.list[Any] = []
        if results is None:
            for t, _ in finished:
                args += [t.attempt, t.id, "", ""]
        else:
            encode = results.encoder()
            for t, res in finished:
                if res is None:
                    args += [t.attempt, t.id, "", ""]
                else:
                    data, _, exp = encode(res, now)
                    args += [t.attempt, t.id, exp, data]
        script = await self.script("complete", lua.COMPLETE)
        out = await script(keys=[f"{self.p}all"], args=[self.p, repr(now), len(finished), *args])
        if len(self._no_dependents) > NO_DEPENDENTS_MAX:
            self._no_dependents.clear()  # never released: forget them (they get looked up)
        for (t, _), x in zip(finished, out, strict=True):
            if x == 1:
                self._no_dependents.add(t.id)
        return [bool(x) for x in out]

    async def fail(
        self, task: Task, retry_at: float | None = None, *, error: str | None = None
    ) -> bool:
        """Record a failed run: PENDING again at ``retry_at``, or FAILED (fenced)."""
        now = time.time()
        script = await self.script("fail", lua.FAIL)
        ok = await script(
            keys=[f"{self.p}all"],
            args=[self.p, repr(now), task.id, task.attempt,
                  "" if retry_at is None else repr(retry_at), error or "",
                  member(task.id, now if retry_at is None else retry_at)],
        )  # fmt: skip
        return bool(ok)

    async def unclaim(self, task: Task) -> bool:
        """Give back an unstarted claim: PENDING at once, attempt restored (fenced)."""
        script = await self.script("unclaim", lua.UNCLAIM)
        return bool(await script(keys=[f"{self.p}all"], args=[self.p, task.id, task.attempt]))

    async def heartbeat(self, task: Task, lease: float | None = None) -> bool:
        """Extend a claim's lease; False when the claim is no longer current."""
        until = time.time() + (lease or self.default_lease)
        script = await self.script("heartbeat", lua.HEARTBEAT)
        ok = await script(keys=[f"{self.p}all"], args=[self.p, task.id, task.attempt, repr(until)])
        return bool(ok)

    # --- reading ----------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The stored task (its status reflects TTL), or None."""
        h = await (await self.redis()).hgetall(f"{self.p}t:{task_id}")
        return self._decode(task_id, h, time.time()) if h else None

    async def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a PENDING, WAITING or RUNNING task; False when unknown or final."""
        script = await self.script("cancel", lua.CANCEL)
        ok = await script(
            keys=[f"{self.p}all"],
            args=[self.p, repr(time.time()), task_id, reason or rules.CANCELLED_BY_REQUEST],
        )
        return bool(ok)

    async def requeue(self, task_id: str) -> Task | None:
        """Put an ended task back to PENDING with a fresh retry budget
        (:func:`omniq.rules.requeued`), fenced on the attempt read."""
        task = await self.get(task_id)
        if task is None or not task.status.is_final or task.metadata.get("corrupt"):
            return None
        fresh = rules.requeued(task, time.time())
        script = await self.script("requeue", lua.REQUEUE)
        ok = await script(
            keys=[f"{self.p}all"],
            args=[self.p, repr(time.time()), task_id, str(task.attempt),
                  self.serializer.encode_task(fresh),
                  "" if fresh.expires_at is None else repr(fresh.expires_at)],
        )  # fmt: skip
        return fresh if ok else None

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue`` (set ``P paused``)."""
        await (await self.redis()).sadd(f"{self.p}paused", queue)

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again, waking its blocked consumers."""
        r = await self.redis()
        async with r.pipeline(transaction=True) as pipe:
            pipe.srem(f"{self.p}paused", queue)
            pipe.rpush(f"{self.p}w:{queue}", "1")
            await pipe.execute()

    async def paused_queues(self) -> builtins.set[str]:
        """The paused queues."""
        return {_s(q) for q in await (await self.redis()).smembers(f"{self.p}paused")}

    async def record_worker(self, info: WorkerInfo) -> None:
        """Store a worker's heartbeat in the ``P workers`` hash."""
        await (await self.redis()).hset(f"{self.p}workers", info.id, encode_worker(info))

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        await (await self.redis()).hdel(f"{self.p}workers", worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Live workers, oldest first (records of silent workers are deleted)."""
        r = await self.redis()
        now = time.time()
        live: builtins.list[WorkerInfo] = []
        gone: builtins.list[bytes | str] = []
        for key, data in (await r.hgetall(f"{self.p}workers")).items():
            info = decode_worker(data)
            if info is None or not info.is_live(now):
                gone.append(key)
            else:
                live.append(info)
        if gone:
            await r.hdel(f"{self.p}workers", *gone)
        return sorted(live, key=lambda w: (w.started_at, w.id))

    async def count(self, queue: str | None = None, status: TaskStatus | None = None) -> int:
        """Number of tasks from the counters kept by every script (no scan).

        A queued task past its TTL counts as PENDING until a claim or the expiry sweep
        marks it EXPIRED."""
        counts = await (await self.redis()).hgetall(f"{self.p}counts")
        total = 0
        for k, v in counts.items():
            q, _, st = _s(k).partition("\t")
            if (queue is None or q == queue) and (status is None or st == status.value):
                total += int(v)
        return total

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        """Tasks oldest first (insertion order), optionally filtered. WAITING tasks come
        from their own index (the dependency sweep lists them: it never scans).

        Without a status filter every index entry matches, so ``offset`` starts the
        ZRANGE window there; with one, the first ``offset`` matching tasks are read and
        skipped."""
        queue, status, limit = query.queue, query.status, query.limit
        r = await self.redis()
        index = f"{self.p}all" if queue is None else f"{self.p}qa:{queue}"
        waiting = status is TaskStatus.WAITING
        if waiting:
            index = f"{self.p}waiting"
        out: builtins.list[Task] = []
        start, skip = (query.offset, 0) if status is None else (0, query.offset)
        while len(out) < limit:
            window = await r.zrange(index, start, start + BATCH - 1, desc=query.newest_first)
            ids = [_s(i) for i in window]
            if not ids:
                break
            start += BATCH
            async with r.pipeline(transaction=False) as pipe:
                for tid in ids:
                    pipe.hgetall(f"{self.p}t:{tid}")
                hashes = await pipe.execute()
            now = time.time()
            if waiting:  # ids that are no longer WAITING leave the index
                stale = [
                    tid for tid, h in zip(ids, hashes, strict=True) if h.get(b"s") != b"waiting"
                ]
                if stale:
                    drop = await self.script("unwait", lua.UNWAIT)
                    start -= int(await drop(keys=[index], args=[self.p, *stale]))
            for tid, h in zip(ids, hashes, strict=True):
                if not h or (queue is not None and _s(h.get(b"q", b"")) != queue):
                    continue
                t = self._decode(tid, h, now)
                if status is None or t.status is status:
                    if skip:
                        skip -= 1
                        continue
                    out.append(t)
                    if len(out) >= limit:
                        break
        return out

    async def purge(self, queue: str | None = None) -> int:
        """Delete every task (of one queue, or all), in bounded batches."""
        r = await self.redis()
        index = f"{self.p}all" if queue is None else f"{self.p}qa:{queue}"
        script = await self.script("delete", lua.DELETE)
        total = 0
        while True:
            ids = [_s(i) for i in await r.zrange(index, 0, BATCH - 1)]
            if not ids:
                return total
            total += int(
                await script(keys=[f"{self.p}all"], args=[self.p, repr(time.time()), *ids])
            )

    async def cleanup_expired(self, now: float | None = None) -> builtins.list[str]:
        """Mark PENDING/WAITING tasks past their TTL EXPIRED (bounded batches); return
        their ids and those found expired at claim time since the last call."""
        now = time.time() if now is None else now
        script = await self.script("expire", lua.EXPIRE)
        out: builtins.list[str] = []
        while True:
            ids, seen = await script(
                keys=[f"{self.p}all"], args=[self.p, repr(now), rules.EXPIRED_MESSAGE, BATCH]
            )
            out.extend(_s(i) for i in ids)
            if int(seen) < BATCH:
                return out

    async def prune_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` tasks that ended before ``before`` (one script)."""
        script = await self.script("prune", lua.PRUNE)
        args: builtins.list[Any] = [self.p, repr(before), limit, repr(time.time())]
        return int(await script(keys=[f"{self.p}all"], args=args))

    # --- dependencies -----------------------------------------------------------------

    async def release_dependents(self, task_id: str, succeeded: bool) -> Released:
        """See :meth:`BaseTaskQueue.release_dependents`."""
        return await self.release_dependents_many([task_id], succeeded)

    async def release_dependents_many(self, task_ids: Sequence[str], succeeded: bool) -> Released:
        """The release walk of :mod:`omniq.rules`: each step loads the waiting dependents
        (two pipelined reads), decides with :func:`rules.release_step`, and applies the
        decision in one script that skips tasks no longer WAITING."""
        out = Released()
        # tasks this component just completed with no task waiting on them: none can
        # start waiting later (an enqueue checks its dependencies' statuses atomically)
        known = self._no_dependents
        ended = [(tid, succeeded) for tid in task_ids if tid not in known]
        known.difference_update(task_ids)
        if not ended:
            return out
        script = await self.script("release", lua.RELEASE)
        while ended:
            waiting = await self._waiting_dependents(ended)
            if waiting is None:
                break  # nothing ever waited on these tasks: no write at all
            step = rules.release_step(ended, waiting)
            args: builtins.list[Any] = [self.p, repr(time.time()), len(step.ready), *step.ready]
            args.append(len(step.cancelled))
            for tid, reason in step.cancelled:
                args += [tid, reason]
            args += [tid for tid, _ in ended]
            ready, cancelled = await script(keys=[f"{self.p}all"], args=args)
            out.ready.extend(_s(i) for i in ready)
            done = [_s(i) for i in cancelled]
            out.cancelled.extend(done)
            ended = [(tid, False) for tid in done]
        return out

    async def _waiting_dependents(
        self, ended: Sequence[tuple[str, bool]]
    ) -> builtins.list[rules.WaitingDependent] | None:
        """The WAITING dependents of the ended tasks (None when no task is registered
        as waiting on any of them)."""
        r = await self.redis()
        async with r.pipeline(transaction=False) as pipe:
            for tid, _ in ended:
                pipe.smembers(f"{self.p}deps:{tid}")
            members = await pipe.execute()
        pairs = [
            (tid, sorted(_s(m) for m in ms)) for (tid, _), ms in zip(ended, members, strict=True)
        ]
        dependents = sorted({d for _, ds in pairs for d in ds})
        if not dependents:
            return None
        async with r.pipeline(transaction=False) as pipe:
            for d in dependents:
                pipe.hmget(f"{self.p}t:{d}", "s", "dp")
            rows = await pipe.execute()
        info = {
            d: (_s(row[0]), _s(row[1]).split("\n") if row[1] else [])
            for d, row in zip(dependents, rows, strict=True)
            if row[0] == b"waiting"
        }
        stats = await self._dependency_statuses({x for _, deps in info.values() for x in deps})
        now = time.time()

        def status(dep: str) -> TaskStatus | None:
            raw, x = stats[dep]
            return None if raw is None else rules.effective_status(TaskStatus(_s(raw)), x, now)

        found: builtins.list[rules.WaitingDependent] = []
        for tid, ds in pairs:
            for d in ds:
                if d in info:
                    deps = info[d][1]
                    found.append(rules.WaitingDependent(d, tid, deps, [status(x) for x in deps]))
        return found
