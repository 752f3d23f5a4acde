"""huey on Redis (``RedisHuey``), on SQLite (``SqliteHuey``) and on files (``FileHuey``).

Worker: ``huey_consumer ... -w 10 -k thread``. huey has no bulk enqueue (one call per
task). ``store_none=True`` so that a no-op's result is stored, as every other system
here stores one; Redis uses ``notify_result=True`` (BLPOP wake-up for result waiters).
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

from benchmarks.systems.base import BIN, CONCURRENCY, REDIS_URL, SCRATCH, System, discard_dir
from benchmarks.systems.common import timed_loop
from benchmarks.systems.redis_common import POLL, RedisSystem

PREFIX = os.environ.get("BENCH_PREFIX", "bench-huey")
KIND = os.environ.get("BENCH_HUEY", "redis")


def make_huey(kind: str, prefix: str) -> Any:
    if kind == "file":
        from huey import FileHuey

        return FileHuey(name=prefix, path=str(SCRATCH / f"{prefix}-files"), store_none=True)
    if kind == "sqlite":
        from huey import SqliteHuey

        return SqliteHuey(name=prefix, filename=str(SCRATCH / f"{prefix}.db"), store_none=True)
    from huey import RedisHuey

    return RedisHuey(name=prefix, url=REDIS_URL, store_none=True, notify_result=True)


huey = make_huey(KIND, PREFIX)


@huey.task()
def noop() -> None:
    return None


class _Huey:
    bulk_note = "no bulk API: one call per task"
    worker_note = f"`huey_consumer -w {CONCURRENCY} -k thread`"
    progress_note = "`huey.pending_count()` (queued, not yet claimed)"
    huey_kind: ClassVar[str] = "redis"
    prefix: str

    def env(self) -> dict[str, str]:
        env = super().env()  # type: ignore[misc]
        env["BENCH_HUEY"] = self.huey_kind
        return env  # type: ignore[no-any-return]

    @property
    def h(self) -> Any:
        if not hasattr(self, "_h"):
            self._h = make_huey(self.huey_kind, self.prefix)

            def _noop() -> None:
                return None

            self._noop = self._h.task(name="noop")(_noop)
        return self._h

    def enqueue_bulk(self, n: int) -> None:
        self.h  # noqa: B018
        for _ in range(n):
            self._noop()

    def remaining(self) -> int:
        return int(self.h.pending_count())

    def worker_cmd(self) -> list[str]:
        cmd = [
            str(BIN / "huey_consumer"), "benchmarks.systems.peer_huey.huey",
            "-w", str(CONCURRENCY), "-k", "thread", "-q",
        ]  # fmt: skip
        if self.huey_kind in ("sqlite", "file"):
            cmd += ["-d", str(POLL), "-m", "0.05"]
        return cmd

    def latency(self, n: int, warmup: int) -> list[float]:
        self.h  # noqa: B018

        def one() -> None:
            self._noop().get(blocking=True, timeout=30, max_delay=POLL)

        return timed_loop(one, n, warmup)


class HueyRedis(_Huey, RedisSystem):
    name = "huey"
    dist = "huey"

    @property
    def patterns(self) -> list[str]:  # type: ignore[override]
        clean = re.sub("[^a-z0-9]", "", self.prefix.lower())  # how huey names its keys
        return [f"huey.*.{clean}", f"huey.*.{clean}.*"]


class HueySQLite(_Huey, System):
    name = "huey (SqliteHuey)"
    server = "sqlite"
    dist = "huey"
    huey_kind = "sqlite"
    worker_note = f"`huey_consumer -w {CONCURRENCY} -k thread -d {POLL} -m 0.05`"

    def path(self) -> Path:
        return SCRATCH / f"{self.prefix}.db"

    def setup(self) -> None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.h.flush()

    def teardown(self) -> None:
        self.h.flush()
        self.h.storage.close() if hasattr(self.h.storage, "close") else None
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path()) + suffix)
            if p.exists():
                p.unlink()
        del self._h

    def check(self) -> None:
        sqlite3.sqlite_version  # noqa: B018


class HueyFile(_Huey, System):
    name = "huey (FileHuey)"
    server = "file"
    dist = "huey"
    huey_kind = "file"
    durability = (
        "no fsync (every operation under one `flock`): survives a crash of the process, not "
        "of the machine; a task dequeued by a consumer that dies is lost"
    )
    worker_note = (
        f"`huey_consumer -w {CONCURRENCY} -k thread -d {POLL} -m 0.05`; huey's `FileStorage` "
        "on the scratch disk: every operation under one `flock`, a dequeue lists the queue "
        "dir, renames the first file, reads and deletes it; no fsync (a write survives a "
        "crash of the process, not of the machine), and a task dequeued by a consumer that "
        "dies is lost"
    )

    def path(self) -> Path:
        return SCRATCH / f"{self.prefix}-files"

    def setup(self) -> None:
        self.path().mkdir(parents=True, exist_ok=True)
        self.h.flush()

    def teardown(self) -> None:
        discard_dir(self.path())
        del self._h
