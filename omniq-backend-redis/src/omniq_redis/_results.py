"""AsyncRedisResultStorage: one key per result with PX expiry, indexes for listing."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from omniq.errors import SerializationError
from omniq.models import TaskResult, TaskStatus
from omniq.storage.base import BaseResultStorage
from omniq_redis._component import BATCH, RedisComponent


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


log = logging.getLogger("omniq.redis")


class AsyncRedisResultStorage(RedisComponent, BaseResultStorage):
    """Results as ``{prefix}:r:<task id>`` (``SET ... PX`` when they expire), listed
    through ``{prefix}:results``; ``{prefix}:rexp`` lets the sweep find expired ones."""

    blocking_wait: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._waiters: dict[str, set[asyncio.Event]] = {}
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
        await super().close()

    async def _listen(self) -> None:
        """One subscription per component: wakes the waiters of each announced task id.
        On a lost connection it resubscribes and wakes every waiter to re-check."""
        while True:
            r = await self.redis()
            pubsub = r.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self._listening.set()
                while True:
                    msg = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.block_limit()
                    )
                    if msg is not None:
                        for ev in self._waiters.get(_s(msg["data"]), ()):
                            ev.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # connection lost: re-check everything, then resubscribe
                log.debug("result listener lost its subscription: %s", e)
                for evs in self._waiters.values():
                    for ev in evs:
                        ev.set()
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait up to ``timeout`` seconds (None: forever), woken by the announcement of
        the result (re-checked every second as well, in case one was missed)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.ensure_future(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 5.0)
        ev = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(ev)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                ev.clear()
                result = await self.get(task_id)
                if result is not None:
                    return result
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(remaining, 1.0))
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[task_id]

    def encode(self, result: TaskResult, now: float) -> tuple[bytes, str, str]:
        """(bytes, PX in ms or '', expires_at or '') of a result (raises
        SerializationError)."""
        data = self.serializer.encode_result(result)
        if result.expires_at is None:
            return data, "", ""
        px = max(int((result.expires_at - now) * 1000), 1)
        return data, str(px), repr(result.expires_at)

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
        pipe.publish(self.channel, result.task_id)

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id``."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store results in one transaction (all are encoded first)."""
        now = time.time()
        encoded = [(r, self.encode(r, now)) for r in results]
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
        data = await (await self.redis()).get(f"{self.p}r:{task_id}")
        if data is None:
            return None
        result = self._decode(task_id, data)
        return None if result.is_expired() else result

    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""
        r = await self.redis()
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.p}r:{task_id}")
            pipe.zrem(f"{self.p}results", task_id)
            pipe.zrem(f"{self.p}rexp", task_id)
            n, _, _ = await pipe.execute()
        return bool(n)

    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Unexpired results, oldest first, optionally of one status."""
        r = await self.redis()
        out: builtins.list[TaskResult] = []
        start = 0
        while len(out) < limit:
            ids = await r.zrange(f"{self.p}results", start, start + BATCH - 1)
            if not ids:
                break
            start += BATCH
            blobs = await r.mget([f"{self.p}r:{_s(i)}" for i in ids])
            for blob in blobs:
                if blob is None:
                    continue
                try:
                    res = self._decode(None, blob)
                except SerializationError as e:
                    log.warning("skipping an undecodable result: %s", e)
                    continue
                if res.is_expired() or (status is not None and res.status is not status):
                    continue
                out.append(res)
                if len(out) >= limit:
                    break
        return out

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete results past their TTL (Redis drops their keys by itself; this also
        clears the indexes), in bounded batches; returns how many."""
        now = time.time() if now is None else now
        r = await self.redis()
        total = 0
        while True:
            ids = await r.zrangebyscore(f"{self.p}rexp", "-inf", now, start=0, num=BATCH)
            if not ids:
                return total
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(*[f"{self.p}r:{_s(i)}" for i in ids])
                pipe.zrem(f"{self.p}results", *ids)
                pipe.zrem(f"{self.p}rexp", *ids)
                await pipe.execute()
            total += len(ids)
            if len(ids) < BATCH:
                return total
