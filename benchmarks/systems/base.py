"""The small interface every benchmarked system implements.

A system owns its names (key prefix, stream, schema, file) and cleans them up. The
harness drives it from the benchmark process; its workers are real subprocesses started
from :meth:`System.worker_cmd` (each library's own worker command, or a tiny ``python -m``
entry for raw loops), killed by PID at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCRATCH = Path(os.environ.get("BENCH_SCRATCH", "/tmp/omniq-bench"))

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

#: Tasks in flight per worker process, for every system that has such a knob.
CONCURRENCY = 10

#: Where file-based systems put the directories they are done with during a run.
TRASH = SCRATCH / "trash"


def discard_dir(path: str | Path) -> None:
    """Move a directory out of the way, into :data:`TRASH` (emptied by
    :func:`empty_trash` when the run ends), instead of deleting it now.

    Deleting tens of thousands of files between two measured drains would bill the next
    system: on ext4 without a journal (this machine's scratch disk) every file created
    in the next ~30 s scans past each recently freed inode (0.2-0.5 ms a file measured),
    so a bulk enqueue right after another system's cleanup ran several times slower.
    """
    import uuid

    TRASH.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(path, TRASH / uuid.uuid4().hex)
    except FileNotFoundError:
        pass


def prepare_scratch() -> str:
    """Create :data:`SCRATCH` and mark it a top of directory hierarchies (``chattr +T``),
    best effort; returns what was done, for the report.

    On ext4 without a journal (this machine's disk), creating a file scans past every
    inode of its block group freed in the last 1-6 minutes (``recently_deleted()`` in
    Linux ``fs/ext4/ialloc.c``; up to 0.5 ms a file, measured with ``perf``). Files go
    to their directory's group, and a new directory goes next to its parent: so a
    system's bulk enqueue ran up to 10 times slower when an earlier system (or its own
    earlier drain) had just deleted files nearby, and which row paid was luck. Under a
    ``+T`` directory, ext4 spreads new subdirectories over groups with free room, so
    each run's fresh directory starts in a group of its own, for every system alike.
    """
    import subprocess

    SCRATCH.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["chattr", "+T", str(SCRATCH)], capture_output=True, check=False)
    except OSError:
        return "chattr not found: scratch directories placed by the default allocator"
    if done.returncode:
        return f"chattr +T failed ({done.stderr.decode(errors='replace').strip()})"
    return "scratch directory marked +T: each run's directories in free block groups"


def empty_trash() -> None:
    """Delete what :func:`discard_dir` set aside (after the last measurement)."""
    import shutil

    shutil.rmtree(TRASH, ignore_errors=True)


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


class Unavailable(Exception):
    """The system cannot run here; the message says why (it goes in the report row)."""


class System:
    """One row of the report: a library (or raw loop) on one server."""

    name: ClassVar[str] = ""
    server: ClassVar[str] = ""  # memory | sqlite | nats | redis | postgres
    kind: ClassVar[str] = "peer"  # omniq | peer | raw
    dist: ClassVar[str] = ""  # distribution whose version is reported
    #: True when enqueue_bulk uses the library's bulk API; bulk_note says which.
    bulk: ClassVar[bool] = False
    bulk_note: ClassVar[str] = "one call per task"
    #: How the worker is started and configured (shown in the report).
    worker_note: ClassVar[str] = ""
    #: What remaining() counts (shown in the report's method section).
    progress_note: ClassVar[str] = ""
    #: In-process backend: the workload runs inside one subprocess (OmniQ on memory).
    inproc: ClassVar[bool] = False
    #: Systems that cannot run several worker processes on one store.
    multi_process: ClassVar[bool] = True
    #: A second row of the same system on the same server differs by this (e.g.
    #: ``synchronous=normal``); OmniQ rows are compared with the raw row of equal variant.
    variant: ClassVar[str] = ""
    #: What a finished task survives (shown in the report beside each row).
    durability: ClassVar[str] = ""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- helpers -------------------------------------------------------------------------

    def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this system's own loop (connections persist across calls)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def close_loop(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            self._loop = None

    def env(self) -> dict[str, str]:
        """Environment of the worker subprocesses (the prefix and server URLs)."""
        env = dict(os.environ)
        env.update(
            BENCH_PREFIX=self.prefix,
            BENCH_REDIS_URL=REDIS_URL,
            BENCH_NATS_URL=NATS_URL,
            BENCH_PG_DSN=PG_DSN,
            BENCH_SCRATCH=str(SCRATCH),
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        return env

    @property
    def label(self) -> str:
        variant = f", {self.variant}" if self.variant else ""
        return f"{self.name} ({self.server}{variant})"

    def versions(self) -> dict[str, str]:
        return {self.dist: version(self.dist)} if self.dist else {}

    # --- the interface -------------------------------------------------------------------

    def check(self) -> None:
        """Raise Unavailable when the system cannot run (missing package, no server)."""

    def setup(self) -> None:
        """Create / empty this system's storage."""

    def teardown(self) -> None:
        """Delete everything this system created."""

    def enqueue_bulk(self, n: int) -> None:
        """Enqueue ``n`` no-op tasks (the harness times this call)."""
        raise NotImplementedError

    def remaining(self) -> int:
        """Tasks enqueued and not yet finished (polled while workers drain)."""
        raise NotImplementedError

    def worker_cmd(self) -> list[str]:
        """argv of one worker process."""
        raise NotImplementedError

    def latency(self, n: int, warmup: int) -> list[float]:
        """With one warm worker running: ``warmup`` untimed then ``n`` timed round trips
        (enqueue one task, wait for its result); seconds per round trip."""
        raise NotImplementedError

    def run_inproc(self, workload: str, n: int) -> list[str]:
        """argv of a subprocess running a whole workload in-process (inproc systems)."""
        raise NotImplementedError
