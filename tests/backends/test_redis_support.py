"""Helpers for the Redis backend tests (no tests here): service check, prefixes, cleanup,
the fixtures the Redis test modules share (``anyio_backend = support.asyncio_only``,
``prefix = support.prefix``, ``backend = support.backend``), and a private redis-server on
a free port for tests that stop and restart it.

The shared server is redis-server on 127.0.0.1:6379. Each test uses its own key prefix
and deletes its keys (``SCAN MATCH {prefix}:*``, never ``KEYS``) at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
PORT = 6379
URL = f"redis://{HOST}:{PORT}/0"
REDIS_SERVER = shutil.which("redis-server") or ""


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.settimeout(1)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _missing(message: str) -> None:
    if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (OMNIQ_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def require_redis() -> None:
    """Skip without the shared server; fail instead under OMNIQ_REQUIRE_SERVICES=1."""
    if not _reachable(HOST, PORT):
        _missing(f"Redis server not reachable at {URL}")


def require_redis_binary() -> None:
    """Skip (or fail under OMNIQ_REQUIRE_SERVICES=1) without a redis-server binary."""
    if not REDIS_SERVER or not Path(REDIS_SERVER).exists():
        _missing("redis-server binary not found on PATH")


def new_prefix() -> str:
    """A prefix no other test uses."""
    return f"omniq-test-{uuid.uuid4().hex[:12]}"


def drop_prefix(prefix: str, url: str = URL) -> int:
    """Delete every key of ``prefix`` (bounded SCAN batches); returns how many."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        n = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{{{prefix}}}:*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                n += int(client.unlink(*batch))
                batch = []
        if batch:
            n += int(client.unlink(*batch))
        return n
    finally:
        client.close()


def keys_of(prefix: str, url: str = URL) -> list[bytes]:
    """The keys of ``prefix`` now stored."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return list(client.scan_iter(match=f"{{{prefix}}}:*", count=500))
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test on its own port with AOF on (``appendfsync
    always``), started and stopped by PID."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not _reachable(HOST, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.kill()


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    """A started :class:`PrivateRedis`, stopped at the end."""
    require_redis_binary()
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- fixtures shared by the Redis test modules (assign them at module level) ---------------


@pytest.fixture
def asyncio_only() -> str:
    """``anyio_backend``: redis.asyncio runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh key prefix on the shared server; its keys are deleted afterwards."""
    require_redis()
    p = new_prefix()
    yield p
    drop_prefix(p)


@pytest.fixture
async def backend(prefix: str) -> AsyncIterator[Any]:
    """A connected RedisBackend under the test's prefix."""
    from omniq_redis import RedisBackend

    b = RedisBackend(URL, prefix=prefix)
    async with b:
        yield b


# --- helpers of the layout tests -----------------------------------------------------------


def ok_result(task: Any, value: Any, expires_at: float | None = None) -> Any:
    """A SUCCESS result of ``task``'s current attempt."""
    from omniq.models import TaskResult, TaskStatus

    return TaskResult(
        task_id=task.id, status=TaskStatus.SUCCESS, result=value, attempt=task.attempt,
        expires_at=expires_at,
    )  # fmt: skip


async def claim_new(q: Any, n: int, queue: str) -> list[Any]:
    """Enqueue ``n`` new tasks on ``queue`` and claim them all (sorted by id)."""
    from omniq.testing import make_task

    tasks = [make_task(i, queue=queue) for i in range(n)]
    await q.enqueue_many(tasks)
    claimed = await q.dequeue_many([queue], n, worker_id="w", lease=30)
    assert len(claimed) == n, f"expected {n} claims, got {len(claimed)}"
    return sorted(claimed, key=lambda t: t.id)


async def numbered_left(r: Any, p: str, name: str, counter: str) -> list[str]:
    """Which of the keys ``<p><name>:1`` .. ``<p><name>:<n>`` still exist, ``n`` being the
    value of the counter key ``<p><counter>`` (no SCAN: the server may hold many keys)."""
    n = int(await r.get(f"{p}{counter}") or 0)
    keys = [f"{p}{name}:{i}" for i in range(1, n + 1)]
    return [k for k in keys if await r.exists(k)]
