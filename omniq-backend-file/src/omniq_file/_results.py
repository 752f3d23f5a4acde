"""AsyncFileResultStorage: one file per result, a TTL index for the sweep."""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Sequence
from typing import ClassVar

from omniq.errors import SerializationError
from omniq.models import TaskResult, TaskStatus
from omniq.storage.base import BaseResultStorage
from omniq_file import _final
from omniq_file import _layout as L
from omniq_file._component import FileComponent
from omniq_file._store import LocalStore, MemoryStore, Store

log = logging.getLogger("omniq.file")

#: Longest sleep between two polls of ``wait`` on a local directory (seconds).
LOCAL_WAIT_MAX = 0.05


#: First bytes of a TTL index entry that lists a batch of results (one id a line).
BATCH_INDEX = b"\xf2OQ results\n"


def write_batch_index(store: Store, entries: Sequence[tuple[float, str]]) -> None:
    """One TTL index entry for several results: ``rttl/<earliest expiry>-+<random>``
    listing their ids (a worker's completed batch: one file instead of one per result).
    Written before the results, as every index entry: the sweep must see them."""
    first = min(e for e, _ in entries)
    body = "\n".join(tid for _, tid in entries).encode()
    store.write(f"rttl/{L.ttl_name(first, '+' + uuid.uuid4().hex)}", BATCH_INDEX + body)


def batch_ids(data: bytes | None) -> builtins.list[str]:
    """The ids a batch index entry lists ([] when ``data`` is not one)."""
    if not data or not data.startswith(BATCH_INDEX):
        return []
    return [x for x in data[len(BATCH_INDEX) :].decode(errors="replace").split("\n") if x]


class AsyncFileResultStorage(FileComponent, BaseResultStorage):
    """Results as ``results/<task id>`` (core serializer: msgpack, signed dill for
    objects msgpack cannot hold), replaced atomically; ``rttl/<expires>-<id>`` lists
    the ones with a TTL in expiry order. ``wait`` polls with backoff (1 ms to 50 ms on
    a local directory)."""

    blocking_wait: ClassVar[bool] = False
    cross_process: ClassVar[bool] = True

    def _writes(self, result: TaskResult, data: bytes) -> builtins.list[tuple[str, bytes]]:
        """The files one result is stored as: the result and, with a TTL, its index entry."""
        out = [(f"results/{result.task_id}", data)]
        if result.expires_at is not None:
            out.append((f"rttl/{L.ttl_name(result.expires_at, result.task_id)}", b"t"))
        return out

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) the result of ``result.task_id``."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store results in one thread hop (all are encoded first)."""
        for r in results:
            if not L.safe_id(r.task_id):
                raise ValueError(f"task id {r.task_id!r} cannot be a file name")
        encoded = [(r, self.serializer.encode_result(r)) for r in results]
        store = self.store
        if isinstance(store, LocalStore):
            # one file per result, hard-linked as its TTL index entry too (written first)
            linked = [([p for p, _ in reversed(self._writes(r, d))], d) for r, d in encoded]

            def write() -> None:
                for paths, data in linked:
                    store.write_linked(paths, data)

            await self.run(write)
            return
        files = [f for r, d in encoded for f in self._writes(r, d)]
        if files:
            await self.run(self.store.map, lambda f: self.store.write(*f), files)

    def _decode(self, task_id: str, data: bytes) -> TaskResult:
        try:
            result = self.serializer.decode_result(_final.result_of(data))
        except (SerializationError, ValueError, TypeError) as e:
            raise SerializationError(f"stored result of task {task_id} in {self.url}: {e}") from e
        if result.task_id != task_id:  # a forged or misplaced file: not this task's result
            raise SerializationError(
                f"stored result of task {task_id} in {self.url} is of another task "
                f"({result.task_id!r})"
            )
        return result

    async def get(self, task_id: str) -> TaskResult | None:
        """The result, or None when absent or expired."""
        if not L.safe_id(task_id):
            return None
        data = await self.run(self.store.read, f"results/{task_id}")
        if data is None:
            return None
        result = self._decode(task_id, data)
        return None if result.is_expired() else result

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait up to ``timeout`` seconds (None: forever) for the result, polling. A local
        directory answers a poll with one failed ``open``: start at 1 ms and back off to
        50 ms (object stores keep the default schedule: each poll is a request)."""
        if not isinstance(self.store, (LocalStore, MemoryStore)):
            return await super().wait(task_id, timeout)
        return await self._poll_wait(task_id, timeout, 0.001, LOCAL_WAIT_MAX)

    async def delete(self, task_id: str) -> bool:
        """Delete a result; False when there was none."""
        if not L.safe_id(task_id):
            return False
        return await self.run(self.store.delete, f"results/{task_id}")

    async def list(
        self, status: TaskStatus | None = None, limit: int = 100
    ) -> builtins.list[TaskResult]:
        """Unexpired results, optionally of one status (undecodable ones are skipped)."""

        def scan() -> builtins.list[TaskResult]:
            out: builtins.list[TaskResult] = []
            for name in sorted(self.store.list("results")):
                data = self.store.read(f"results/{name}")
                if data is None:
                    continue
                try:
                    r = self._decode(name, data)
                except SerializationError as e:
                    log.warning("skipping an undecodable result: %s", e)
                    continue
                if r.is_expired() or (status is not None and r.status is not status):
                    continue
                out.append(r)
                if len(out) >= limit:
                    break
            return out

        return await self.run(scan)

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Delete results past their TTL (walking the TTL index); returns how many."""
        now = time.time() if now is None else now

        def sweep() -> int:
            n = 0
            now_us = int(now * 1_000_000)
            for name in sorted(self.store.list("rttl")):
                parsed = L.parse_ttl(name)
                if parsed is None:
                    continue
                exp_us, tid = parsed
                if exp_us > now_us:
                    break
                ids = [tid]
                batch = False
                if tid.startswith("+"):  # maybe one entry for a batch of results
                    listed = batch_ids(self.store.read(f"rttl/{name}"))
                    if listed:
                        ids, batch = listed, True
                later: builtins.list[tuple[float, str]] = []
                for rid in ids:
                    data = self.store.read(f"results/{rid}")
                    if data is None:
                        continue
                    try:
                        r = self._decode(rid, data)
                        expired = r.is_expired(now)
                    except SerializationError:
                        expired = True
                    if expired:
                        if self.store.delete(f"results/{rid}"):
                            n += 1
                    elif batch and r.expires_at is not None:
                        later.append((r.expires_at, rid))
                if later:  # the batch's results that expire later: indexed again
                    write_batch_index(self.store, later)
                self.store.delete(f"rttl/{name}")
            return n

        return await self.run(sweep)
