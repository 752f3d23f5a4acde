"""Object-store emulators for the file backend's cloud tests (no tests here).

:func:`server_process` starts one emulator as a subprocess on a free 127.0.0.1 port,
polls until it listens (never a fixed sleep) and stops the process it started, by PID.
:class:`CloudFixtures` is the conformance fixture contract shared by the S3, GCS and
Azure modules (each adds its ``backend_url``), :func:`claim_race` the concurrency check
and :func:`check_conditional_writes` what the claims rest on. A missing emulator skips
(:func:`unavailable`), and fails under ``OMNIQ_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import NoReturn

import anyio
import pytest
from omniq_file import (
    AsyncFileQueue,
)
from omniq_file._objects import ObjectStore

from omniq import TaskStatus
from omniq.testing import make_task
from tests.backends.test_file import FileFixtures

__all__ = [
    "HOST",
    "CloudFixtures",
    "check_conditional_writes",
    "claim_race",
    "free_port",
    "server_process",
    "unavailable",
]

HOST = "127.0.0.1"
#: Seconds an emulator may take to listen (a loaded 2-core machine starts node slowly).
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under ``OMNIQ_REQUIRE_SERVICES=1``."""
    if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (OMNIQ_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@contextlib.contextmanager
def server_process(
    name: str, argv: list[str], port: int, cwd: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends, once it listens on ``HOST:port``; its output
    goes to a temporary file, shown when it exits early. Kills the process by PID."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    socket.create_connection((HOST, port), 0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        log.seek(0)
                        output = log.read()[-2000:].decode(errors="replace")
                        pytest.fail(f"{name} exited at start ({proc.returncode}): {output}")
                    assert time.monotonic() < deadline, (
                        f"{name} did not listen on {HOST}:{port} in {START_TIMEOUT:.0f} s"
                    )
                    time.sleep(0.05)
            yield proc
        finally:
            proc.kill()
            proc.wait(30)


class CloudFixtures(FileFixtures):
    """Fixture contract of omniq.testing (the local file fixtures: factories, process
    spec, corrupt record); subclasses yield a fresh ``backend_url`` (a new key prefix)
    per test."""


async def claim_race(url: str, tasks: int = 120, consumers: int = 4) -> None:
    """Enqueue ``tasks`` tasks at ``url``, let ``consumers`` queues claim and complete
    them concurrently (3 at a time), and check each task was claimed exactly once."""
    producer = AsyncFileQueue(url)
    await producer.connect()
    made = [make_task(i) for i in range(tasks)]
    await producer.enqueue_many(made)
    queues = [AsyncFileQueue(url) for _ in range(consumers)]
    claims: list[str] = []

    async def consume(q: AsyncFileQueue, n: int) -> None:
        await q.connect()
        idle = 0
        while idle < 3:
            got = await q.dequeue_many(["default"], 3, worker_id=f"w{n}", lease=120)
            if not got:
                idle += 1
                continue
            idle = 0
            for t in got:
                claims.append(t.id)
                assert await q.complete(t), "the complete of a fresh claim was refused"

    try:
        async with anyio.create_task_group() as tg:
            for n, q in enumerate(queues):
                tg.start_soon(consume, q, n)
        dupes = [t for t, c in Counter(claims).items() if c > 1]
        assert not dupes, f"expected each task claimed once, {len(dupes)} claimed twice"
        assert sorted(claims) == sorted(t.id for t in made), "every task claimed once"
        done = await producer.count(status=TaskStatus.SUCCESS)
        assert done == tasks, f"expected {tasks} SUCCESS tasks, counted {done}"
    finally:
        for q in (producer, *queues):
            await q.close()


def check_conditional_writes(store: ObjectStore) -> None:
    """What the claims rest on, asked of the server itself: a second create-if-absent
    of a key and a delete of a stale version are refused, and of two moves of one
    version exactly one succeeds."""
    assert store.create("a", b"one"), "the first create-if-absent of a new key succeeds"
    assert not store.create("a", b"two"), "a create-if-absent of an existing key must fail"
    assert store.read("a") == b"one", "a refused create must leave the object as it was"
    version = store._version("a")
    assert version is not None, "an existing object has a version"
    store.write("a", b"three")
    assert not store._delete_if("a", version), "a delete of a stale version must fail"
    assert store.read("a") == b"three", "a refused delete must leave the object"
    assert store.move("a", "b"), "the first move of a version succeeds"
    assert not store.move("a", "c"), "a second move of the same source must fail"
    assert store.read("b") is not None and store.read("a") is None, "a moved to b"
