"""AsyncNATSResultStorage: results in the KV bucket ``omniq_results``.

Every write is also announced (headers only, by the bucket's RePublish) on
``{results_subject}.{task_id}`` (default ``omniq.results.<id>``) for outside observers.

The bucket's TTL (``result_ttl``, default 7 days; 2.9 has no per-key TTL) bounds how
long any result is kept; a result's own ``expires_at`` hides it from ``get`` and lets
``cleanup_expired`` delete it earlier. ``wait`` watches the key (a JetStream ordered
consumer that delivers the current value first, then updates), so it subscribes before
it reads and never polls; a slow re-read guards against a watch lost to a server restart.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import nats.errors

from omniq.errors import OmniQError, PayloadTooLargeError
from omniq.models import TaskResult, TaskStatus
from omniq.serialization import SerializationManager
from omniq.storage.base import BaseResultStorage
from omniq_nats._config import encode_token
from omniq_nats._connection import log
from omniq_nats._kv import Bucket, BucketComponent
from omniq_nats._natspy import key_value
from omniq_nats._publish import publisher

__all__ = ["AsyncNATSResultStorage"]

#: An encoded result: (KV key, value).
Encoded = tuple[str, bytes]

#: Seconds between safety re-reads while a wait() watches its key.
RECHECK = 5.0


class AsyncNATSResultStorage(BucketComponent, BaseResultStorage):
    """Result storage on a NATS KV bucket with notified waits."""

    blocking_wait: ClassVar[bool] = True
    cross_process: ClassVar[bool] = True
    item = "result"
    results = True

    def _bucket_spec(self) -> tuple[str, float | None, str]:
        s = self.settings
        return s.results_bucket_name, s.result_ttl or None, s.results_subject_prefix

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) a result."""
        bucket = await self._bucket()
        await bucket.put(encode_token(result.task_id), self._encode(bucket, result))

    def _encode(
        self, bucket: Bucket, result: TaskResult, ser: SerializationManager | None = None
    ) -> bytes:
        data = (ser or self.serializer).encode_result(result)
        if len(data) > bucket.conn.max_payload - 512:
            raise PayloadTooLargeError(
                f"result of task {result.task_id} encodes to {len(data)} bytes, over the NATS "
                f"server's max_payload of {bucket.conn.max_payload} bytes: raise max_payload in "
                "the nats-server config or return a reference to the data instead"
            )
        return data

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results in one pipelined round trip."""
        await self.put_encoded(await self.encode_many(results))

    async def encode_many(self, results: Sequence[TaskResult]) -> builtins.list[Encoded]:
        """Encode results for :meth:`put_encoded`; raises SerializationError or
        PayloadTooLargeError (naming the task) before anything is written."""
        bucket = await self._bucket()
        ser = self.serializer
        return [(encode_token(r.task_id), self._encode(bucket, r, ser)) for r in results]

    async def put_encoded(self, items: Sequence[Encoded]) -> None:
        """Write results from :meth:`encode_many` in one pipelined round trip."""
        if not items:
            return
        bucket = await self._bucket()
        acks = await publisher(bucket.conn).publish_many(
            [(bucket.pre + key, data, None) for key, data in items]
        )
        for (key, data), ack in zip(items, acks, strict=True):
            if isinstance(ack, BaseException):
                await bucket.put(key, data)

    async def put_fenced(self, items: Sequence[tuple[Encoded, int]]) -> builtins.list[int | None]:
        """Write encoded results, each ``((key, value), attempt)``, unless a result of
        the same or a newer attempt is stored (a newer claim finished, or the task was
        cancelled meanwhile): the new revision of each, or None where the stored one
        stands. One pipelined round trip when no result exists yet (the usual case)."""
        if not items:
            return []
        bucket = await self._bucket()
        revs = await bucket.create_many([encoded for encoded, _ in items])
        for i, rev in enumerate(revs):
            if rev is None:
                (key, value), attempt = items[i]
                revs[i] = await self._replace_older(bucket, key, value, attempt)
        return revs

    async def _replace_older(
        self, bucket: Bucket, key: str, value: bytes, attempt: int
    ) -> int | None:
        for _ in range(10):  # compare-and-set: retried while other writers get in between
            entry = await bucket.get(key)
            if entry is None or entry.value is None:
                rev = await bucket.create(key, value)
            else:
                try:
                    stored = self.serializer.decode_result(entry.value).attempt
                except OmniQError:
                    stored = -1  # a corrupt result: replace it
                if stored >= attempt:
                    return None
                rev = await bucket.cas(key, value, entry.revision)
            if rev is not None:
                return rev
        return None

    async def unwrite(self, written: Sequence[tuple[str, int]]) -> None:
        """Delete results written by :meth:`put_fenced` (``(key, revision)``) whose
        claims turned out stale, unless they were replaced meanwhile."""
        if not written:
            return
        bucket = await self._bucket()
        for key, rev in written:
            await bucket.delete_if(key, rev)

    async def get(self, task_id: str) -> TaskResult | None:
        """The result, or None when absent or expired."""
        bucket = await self._bucket()
        entry = await bucket.get(encode_token(task_id))
        if entry is None or entry.value is None:
            return None
        result = self.serializer.decode_result(entry.value)
        return None if result.is_expired() else result

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait for the result through a KV watch; None on timeout."""
        bucket = await self._bucket()
        deadline = None if timeout is None else time.monotonic() + timeout
        kv = key_value(bucket.conn.js, bucket.name, bucket.stream, bucket.pre)
        key = encode_token(task_id)
        try:
            watcher: Any = await bucket.conn.call(
                f"watching {bucket.name}/{key}", lambda: kv.watch(key, inactive_threshold=30.0)
            )
        except OmniQError:
            log.debug("KV watch unavailable, waiting by polling", exc_info=True)
            return await super().wait(task_id, timeout)
        try:
            while True:
                remaining = RECHECK if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    entry = await watcher.updates(timeout=min(remaining, RECHECK))
                except (TimeoutError, nats.errors.TimeoutError):
                    entry = None
                    # a watch can be lost to a server restart: re-read now and then
                    result = await self.get(task_id)
                    if result is not None:
                        return result
                    continue
                if entry is None or entry.value is None or entry.operation is not None:
                    continue  # "no value yet" marker, or a delete
                result = self.serializer.decode_result(entry.value)
                if not result.is_expired():
                    return result
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""
        bucket = await self._bucket()
        key = encode_token(task_id)
        entry = await bucket.get(key)
        if entry is None or entry.value is None:
            return False
        await bucket.delete(key)
        return True

    async def _all(self) -> builtins.list[tuple[str, TaskResult]]:
        return [(e.key, r) for e, r in await self._decoded(self.serializer.decode_result)]

    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Results, optionally of one status (expired ones hidden)."""
        now = time.time()
        rs = [r for _, r in await self._all() if not r.is_expired(now)]
        return [r for r in rs if status is None or r.status is status][:limit]

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete results past their ``expires_at``; returns how many."""
        bucket = await self._bucket()
        now = now or time.time()
        gone = [key for key, r in await self._all() if r.is_expired(now)]
        for i in range(0, len(gone), 256):
            await asyncio.gather(*(bucket.purge_key(k) for k in gone[i : i + 256]))
        return len(gone)
