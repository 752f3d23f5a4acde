"""AsyncRedisResultStorage: one key per result with PX expiry, indexes for listing."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from omniq.errors import SerializationError
from omniq.models import TaskResult, TaskStatus
from omniq.storage.base import BaseResultStorage
from omniq_redis._component import BATCH, RedisComponent
from omniq_redis._scripts import RESULT_GET, RESULTS_SWEEP


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


log = logging.getLogger("omniq.redis")

#: Results up to this many bytes travel with their announcement (the scripts' limit too).
ANNOUNCE_LIMIT = 8192


#: Entries of the queue's ``finishedb`` read at once by ``list`` (each lists the tasks
#: one completion ended together).
LIST_WINDOW = 8
#: Fresh task ids remembered per result storage, at most (see ``mark_fresh``).
FRESH_MAX = 10_000
#: Result storages of this process with a confirmed subscription (see ``listening``).
_LISTENING: weakref.WeakSet[AsyncRedisResultStorage] = weakref.WeakSet()


def listening(url: str, prefix: str) -> builtins.list[tuple[AsyncRedisResultStorage, int]]:
    """The result storages of this process subscribed to the announcements of ``url``
    and ``prefix``, each with its subscription's epoch (read before an enqueue is sent,
    so the subscription was confirmed before the enqueue reached the server)."""
    out = []
    try:
        storages = list(_LISTENING)
    except RuntimeError:  # changed by another thread's loop meanwhile: no shortcut now
        return []
    for storage in storages:
        epoch = storage._epoch
        if epoch is not None and storage.p == prefix and storage._url == url:
            out.append((storage, epoch))
    return out


def announcement(task_id: str, data: bytes) -> bytes:
    """One result's announcement on the ``rdone`` channel: NUL, the id's length, ``:``,
    the length of the bytes, ``:``, the id, the bytes (none when over ANNOUNCE_LIMIT)."""
    tid = task_id.encode()
    if len(data) > ANNOUNCE_LIMIT:
        data = b""
    return b"\0%d:%d:%s%s" % (len(tid), len(data), tid, data)


def parse_announcements(message: bytes) -> builtins.list[tuple[str, bytes]]:
    """The (task id, result bytes or b'') pairs of one message on the ``rdone``
    channel: announcements one after another, or one bare task id."""
    if message[:1] != b"\0":
        return [(_s(message), b"")]
    out = []
    i, end = 0, len(message)
    while i < end:
        j = message.index(b":", i + 1)
        k = message.index(b":", j + 1)
        n, m = int(message[i + 1 : j]), int(message[j + 1 : k])
        start = k + 1
        out.append((message[start : start + n].decode(), message[start + n : start + n + m]))
        i = start + n + m
    return out


class AsyncRedisResultStorage(RedisComponent, BaseResultStorage):
    """Results as ``{prefix}:r:<task id>`` (``SET ... PX`` when they expire), listed
    through ``{prefix}:results``; ``{prefix}:rexp`` (and ``{prefix}:rexpb``, by lists of
    tasks that completed together) lets the sweep find expired ones.

    A result written with its task's completion (the queue's ``complete_with_results``
    on the same server and prefix) is kept in the task's hash instead (fields ``rs`` and
    ``rx``, listed through the queue's ``{prefix}:finished``): one write less per task.
    It wins over a key of its own (which the completion deletes, and which ``set``
    writes after removing the hash's); it moves to a key of its own when the task is
    deleted or requeued."""

    blocking_wait: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        #: Counts confirmed subscriptions; None while not subscribed.
        self._epoch: int | None = None
        self._epochs = 0
        #: Task ids enqueued in this process while subscription ``epoch`` was confirmed.
        self._fresh: dict[str, int] = {}
        #: Result bytes that came with an announcement, by task id, while it has waiters.
        self._announced: dict[str, bytes] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def channel(self) -> str:
        """The channel on which every stored result's task id is published."""
        return f"{self.p}rdone"

    async def close(self) -> None:
        """Stop the waiters' listener, then close the client if this component made it."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        self._listening = asyncio.Event()
        self._epoch = None
        _LISTENING.discard(self)
        await super().close()

    async def _listen(self) -> None:
        """One subscription per component: wakes the waiters of each announced task id.
        On a lost connection it resubscribes and wakes every waiter to re-check."""
        while True:
            r = await self.redis()
            pubsub = r.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._confirmed(pubsub)
                self._epochs += 1
                self._epoch = self._epochs
                _LISTENING.add(self)
                self._listening.set()
                while True:
                    msg = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.block_limit()
                    )
                    if msg is not None:
                        self._on_announcement(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # connection lost: re-check everything, then resubscribe
                self._epoch = None
                log.debug("result listener lost its subscription: %s", e)
                for evs in self._waiters.values():
                    for ev in evs:
                        ev.set()
                await asyncio.sleep(0.2)
            finally:
                self._epoch = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _confirmed(self, pubsub: Any) -> None:
        """Wait for the server's confirmation of the subscription: from then on every
        result written is announced to this listener."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            if msg["type"] == "subscribe":
                return
            if msg["type"] == "message":
                self._on_announcement(msg["data"])
        raise ConnectionError(f"no confirmation of the subscription to {self.channel}")

    def mark_fresh(self, task_ids: Sequence[str], epoch: int) -> None:
        """Note tasks created after subscription ``epoch`` was confirmed: their results
        can only be written later, so they will be announced to this listener (unless
        it resubscribes meanwhile), and a waiter needs no first read of their keys."""
        fresh = self._fresh
        if len(fresh) + len(task_ids) > FRESH_MAX:
            fresh.clear()  # forgotten ids are read first, as any other
        for tid in task_ids:
            fresh[tid] = epoch

    def _on_announcement(self, message: bytes) -> None:
        """Wake the waiters of the announced task ids, keeping the result bytes that came
        with them (see :func:`announcement`; a bare id from older writers)."""
        waiting = self._waiters
        if not waiting:
            return
        for task_id, data in parse_announcements(message):
            waiters = waiting.get(task_id)
            if not waiters:
                continue
            if data:
                self._announced[task_id] = data
            else:
                self._announced.pop(task_id, None)
            for ev in waiters:
                ev.set()

    def _take_announced(self, task_id: str) -> TaskResult | None:
        """The result announced with its bytes since the waiter last looked, if any."""
        data = self._announced.get(task_id)
        if data is None:
            return None
        try:
            result = self._decode(task_id, data)
        except SerializationError:
            return None  # read it from its key instead
        return None if result.is_expired() else result

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait up to ``timeout`` seconds (None: forever), woken by the announcement of
        the result, which usually carries it (re-checked every second as well, in case an
        announcement was missed)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.ensure_future(self._listen())
        if not self._listening.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._listening.wait()
        ev = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(ev)
        deadline = None if timeout is None else time.monotonic() + timeout
        fresh = self._fresh.pop(task_id, None)
        try:
            # a task enqueued here after the subscription was confirmed, on a subscription
            # still the same: its result is announced later, no need to read it now
            skip = fresh is not None and fresh == self._epoch
            result = None if skip else await self.get(task_id)
            while result is None:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 1.0)):
                        await ev.wait()
                woken = ev.is_set()
                ev.clear()
                result = self._take_announced(task_id) if woken else None
                if result is None:
                    result = await self.get(task_id)
            return result
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[task_id]
                    self._announced.pop(task_id, None)

    def encode(self, result: TaskResult, now: float) -> tuple[bytes, str, str]:
        """(bytes, PX in ms or '', expires_at or '') of a result (raises
        SerializationError)."""
        return self.encoder()(result, now)

    def encoder(self) -> Callable[[TaskResult, float], tuple[bytes, str, str]]:
        """:meth:`encode` bound to the current serializer (for many results in a row)."""
        encode = self.serializer.encode_result

        def enc(result: TaskResult, now: float) -> tuple[bytes, str, str]:
            data = encode(result)
            if result.expires_at is None:
                return data, "", ""
            px = max(int((result.expires_at - now) * 1000), 1)
            return data, str(px), repr(result.expires_at)

        return enc

    def _write(
        self, pipe: Any, result: TaskResult, enc: tuple[bytes, str, str], now: float
    ) -> None:
        data, px, exp = enc
        key = f"{self.p}r:{result.task_id}"
        if px:
            pipe.set(key, data, px=int(px))
            pipe.zadd(f"{self.p}rexp", {result.task_id: float(exp)})
        else:
            pipe.set(key, data)
            pipe.zrem(f"{self.p}rexp", result.task_id)
        pipe.zadd(f"{self.p}results", {result.task_id: now})
        pipe.hdel(f"{self.p}t:{result.task_id}", "rs", "rx")  # this one replaces it
        pipe.publish(self.channel, announcement(result.task_id, data))

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id``."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store results in one transaction (all are encoded first)."""
        now = time.time()
        encode = self.encoder()
        encoded = [(r, encode(r, now)) for r in results]
        if not encoded:
            return
        r = await self.redis()
        async with r.pipeline(transaction=True) as pipe:
            for res, enc in encoded:
                self._write(pipe, res, enc, now)
            await pipe.execute()

    def _decode(self, task_id: str | None, data: Any) -> TaskResult:
        try:
            return self.serializer.decode_result(data)
        except SerializationError as e:
            which = f"of task {task_id} " if task_id else ""
            raise SerializationError(f"stored result {which}in redis {self.p}: {e}") from e

    async def get(self, task_id: str) -> TaskResult | None:
        """The result, or None when absent or expired."""
        script = await self.script("result_get", RESULT_GET)
        data = await script(keys=[f"{self.p}t:{task_id}", f"{self.p}r:{task_id}"])
        if data is None:
            return None
        result = self._decode(task_id, data)
        return None if result.is_expired() else result

    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""
        r = await self.redis()
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.p}r:{task_id}")
            pipe.hdel(f"{self.p}t:{task_id}", "rs", "rx")
            pipe.zrem(f"{self.p}results", task_id)
            pipe.zrem(f"{self.p}rexp", task_id)
            n, m, _, _ = await pipe.execute()
        return bool(n or m)

    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Unexpired results, oldest first, optionally of one status: the results in
        keys of their own (``results``) merged by time with those in task hashes (the
        queue's ``finished``, and ``finishedb``: lists of tasks that ended together, where
        a task counts only while its ``f`` is still that list's time)."""
        r = await self.redis()
        out: builtins.list[TaskResult] = []
        indexes = (f"{self.p}results", f"{self.p}finished", f"{self.p}finishedb")
        # a window of ``finishedb`` entries holds up to a completion batch of ids each
        windows = (BATCH, BATCH, LIST_WINDOW)
        buffers: builtins.list[builtins.list[tuple[float, str]]] = [[], [], []]
        starts = [0, 0, 0]
        ended = [False, False, False]
        seen: builtins.set[str] = set()
        while len(out) < limit:
            for i, index in enumerate(indexes):
                if not buffers[i] and not ended[i]:
                    size = windows[i]
                    rows: Any = await r.zrange(
                        index, starts[i], starts[i] + size - 1, withscores=True
                    )
                    starts[i] += size
                    ended[i] = len(rows) < size
                    if i < 2:
                        buffers[i] = [(float(score), _s(m)) for m, score in rows]
                    else:
                        buffers[i] = await self._expand(r, rows)
            if not any(buffers):
                break
            # what comes before the end of every window that may still grow, in order
            bound = min(
                (b[-1][0] for b, done in zip(buffers, ended, strict=True) if b and not done),
                default=float("inf"),
            )
            batch = sorted(
                (x[0], i, x[1]) for i, b in enumerate(buffers) for x in b if x[0] <= bound
            )
            buffers = [[x for x in b if x[0] > bound] for b in buffers]
            async with r.pipeline(transaction=False) as pipe:
                for _, i, tid in batch:
                    if i == 0:
                        pipe.get(f"{self.p}r:{tid}")
                    elif i == 1:
                        pipe.hget(f"{self.p}t:{tid}", "rs")
                    else:
                        pipe.hmget(f"{self.p}t:{tid}", "rs", "f")
                blobs = await pipe.execute()
            for (at, i, tid), blob in zip(batch, blobs, strict=True):
                if i == 2:  # listed at this time only while the task still ended then
                    blob = blob[0] if blob[1] is not None and float(blob[1]) == at else None
                if blob is None or tid in seen:
                    continue
                try:
                    res = self._decode(None, blob)
                except SerializationError as e:
                    log.warning("skipping an undecodable result: %s", e)
                    continue
                if res.is_expired() or (status is not None and res.status is not status):
                    continue
                seen.add(tid)
                out.append(res)
                if len(out) >= limit:
                    break
        return out

    async def _expand(self, r: Any, rows: Any) -> builtins.list[tuple[float, str]]:
        """The (time, task id) pairs of a window of ``finishedb`` entries."""
        if not rows:
            return []
        async with r.pipeline(transaction=False) as pipe:
            for m, _ in rows:
                pipe.lrange(f"{self.p}fb:{_s(m)}", 0, -1)
            lists = await pipe.execute()
        return [
            (float(score), _s(tid))
            for (_, score), ids in zip(rows, lists, strict=True)
            for tid in ids
        ]

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete results past their TTL (Redis drops their keys by itself; this also
        clears the indexes), in bounded batches (one script each); returns how many."""
        now = time.time() if now is None else now
        script = await self.script("results_sweep", RESULTS_SWEEP)
        total = 0
        while True:
            seen, n = await script(keys=[f"{self.p}rexp"], args=[self.p, repr(now), BATCH])
            total += int(n)
            if int(seen) < BATCH:
                return total
