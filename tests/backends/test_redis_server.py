"""The Redis backend against servers of the test's own: TLS with a CA made by the test,
and an ACL user with a password (never shown)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq.models import TaskStatus
from omniq.testing import make_task
from tests.backends import test_redis_support as support

pytestmark = pytest.mark.anyio

PASSWORD = "pw-never-shown-7f3a"


anyio_backend = support.asyncio_only


def _start(args: list[str], directory: Path) -> subprocess.Popen[bytes]:
    support.require_redis_binary()
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [support.REDIS_SERVER, *args, "--bind", support.HOST, "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_ready(url: str, proc: subprocess.Popen[bytes], **options: object) -> None:
    import redis

    deadline = time.monotonic() + 20
    while True:
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=1, **options)  # type: ignore[arg-type]
            try:
                client.ping()
                return
            finally:
                client.close()
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found (needed to make the test CA)")
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "1", "-subj", "/CN=omniq-test-ca", cwd=certs)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=certs)  # fmt: skip
    (certs / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "1",
             "-extfile", "san.ext", cwd=certs)  # fmt: skip
    port = support.free_port()
    proc = _start(
        ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
         "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file",
         str(certs / "ca.crt"), "--tls-auth-clients", "no"],
        tmp_path / "data",
    )  # fmt: skip
    url = f"rediss://{support.HOST}:{port}/0"
    try:
        _wait_ready(url, proc, ssl_ca_certs=str(certs / "ca.crt"))
        yield url, certs / "ca.crt"
    finally:
        _stop(proc)


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[str]:
    port = support.free_port()
    proc = _start(
        ["--port", str(port), "--user", "default", "off",
         "--user", "omniq", "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        tmp_path / "data",
    )  # fmt: skip
    url = f"redis://omniq:{PASSWORD}@{support.HOST}:{port}/0"
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        _stop(proc)


async def test_tls_with_the_test_ca(tls_server: tuple[str, Path]) -> None:
    from omniq_redis import RedisBackend

    url, ca = tls_server
    async with RedisBackend(f"{url}?ssl_ca_certs={ca}&prefix=tls") as b:
        t = make_task(1)
        assert await b.task_queue.enqueue(t) is TaskStatus.PENDING
        c = await b.task_queue.dequeue(["default"], worker_id="w")
        assert c is not None and await b.task_queue.complete(c)
        assert await b.task_queue.count(status=TaskStatus.SUCCESS) == 1


async def test_tls_refuses_an_unknown_ca(tls_server: tuple[str, Path]) -> None:
    import redis
    from omniq_redis import AsyncRedisQueue

    url, _ = tls_server
    q = AsyncRedisQueue(url, prefix="tls", retry=None)
    await q.connect()
    try:
        with pytest.raises(redis.ConnectionError):
            await q.count()
    finally:
        await q.close()


async def test_acl_user_and_password_never_shown(acl_server: str) -> None:
    from omniq_redis import AsyncRedisQueue, RedisBackend

    q = AsyncRedisQueue(acl_server, prefix="acl")
    await q.connect()
    try:
        await q.enqueue(make_task())
        assert await q.count() == 1
        shown = [repr(q), q.url, str(q), repr(RedisBackend(acl_server, prefix="acl"))]
        assert all(PASSWORD not in s for s in shown), shown
    finally:
        await q.close()
    env = {"OMNIQ_TASK_QUEUE_TYPE": "redis", "OMNIQ_TASK_QUEUE_URL": acl_server}
    out = subprocess.run(
        [sys.executable, "-m", "omniq", "config", "show"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    assert "omniq:***@" in out.stdout.replace("\n", "") or "***" in out.stdout


async def test_unix_socket_url(tmp_path: Path) -> None:
    from omniq_redis import AsyncRedisQueue
    from omniq_redis._component import split_url

    sock = tmp_path / "redis.sock"
    proc = _start(["--port", "0", "--unixsocket", str(sock)], tmp_path / "data")
    url = f"unix://{sock}?db=1&prefix=sock&default_lease=9"
    try:
        _wait_ready(split_url(url)[0], proc)
        q = AsyncRedisQueue.from_url(url)
        await q.connect()
        try:
            assert q.prefix == "sock" and q.default_lease == 9.0
            await q.enqueue(make_task())
            assert await q.count() == 1
        finally:
            await q.close()
    finally:
        _stop(proc)
    assert split_url("rediss://h/0?ssl_ca_certs=/a b.pem&prefix=p") == (
        "rediss://h/0?ssl_ca_certs=%2Fa%20b.pem",
        {"prefix": "p"},
    )
