"""NATS-specific behaviour against real servers: restarts, auth, no JetStream, payload
limits, secrets, crash recovery (SIGKILL), the connection pool, dead letters, plugin.

Tests that stop or configure a server run their own nats-server (free port, own store
directory, stopped by PID); the others use the shared server on 127.0.0.1:4222.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from omniq.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    PayloadTooLargeError,
)
from omniq.models import TaskResult, TaskStatus
from omniq.testing import make_task
from tests.backends import test_nats_support as support

pytestmark = pytest.mark.anyio

PASSWORD = "pw-Zq81-never-shown"
TOKEN = "tok-Kx93-never-shown"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    support.require_nats()
    p = support.new_prefix()
    yield p
    await support.drop_namespace(p)


@pytest.fixture
def sync_prefix() -> Any:
    support.require_nats()
    p = support.new_prefix()
    yield p
    asyncio.run(support.drop_namespace(p))


async def _drain(q: Any, expected: int, deadline: float = 60.0) -> list[Any]:
    """Claim and complete until ``expected`` tasks are SUCCESS; returns the claims."""
    claims: list[Any] = []
    end = time.monotonic() + deadline
    while await q.count(status=TaskStatus.SUCCESS) < expected:
        assert time.monotonic() < end, "tasks were lost: not all completed in time"
        for t in await q.dequeue_many(["default"], 50, worker_id="w2", lease=30, wait=1.0):
            claims.append(t)
            assert await q.complete(t)
    return claims


# --- server restarts -------------------------------------------------------------------


async def test_server_restart_loses_no_task(tmp_path: Path) -> None:
    from omniq_nats import AsyncNATSQueue

    with support.nats_server(tmp_path / "store") as server:
        q = AsyncNATSQueue(
            server.url,
            name_prefix="restart",
            reconnect_time_wait=0.2,
            max_reconnect_attempts=-1,
            retry_window=60,
        )
        await q.connect()
        try:
            before = [make_task(i) for i in range(300)]
            await q.enqueue_many(before)
            for t in await q.dequeue_many(["default"], 100, worker_id="w1"):
                assert await q.complete(t)
            in_flight = await q.dequeue_many(["default"], 20, worker_id="w1", lease=60)
            assert len(in_flight) == 20

            await anyio.to_thread.run_sync(server.stop)
            during = [make_task(1000 + i) for i in range(50)]
            async with anyio.create_task_group() as tg:
                tg.start_soon(q.enqueue_many, during)  # retried until the server is back
                await anyio.sleep(1.0)
                await anyio.to_thread.run_sync(server.start)

            for t in in_flight:  # claims made before the restart are still valid
                assert await q.complete(t)
            claims = await _drain(q, 350)
            assert not {t.id for t in claims} & {t.id for t in in_flight}
            assert await q.count() == 350
            assert await q.count(status=TaskStatus.SUCCESS) == 350
        finally:
            await q.close()


# --- authentication and secrets ---------------------------------------------------------


async def test_token_auth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from omniq_nats import AsyncNATSQueue, AsyncNATSResultStorage

    caplog.set_level(logging.DEBUG)
    with support.nats_server(tmp_path / "store", "--auth", TOKEN) as server:
        url = f"nats://{TOKEN}@127.0.0.1:{server.port}"
        q = AsyncNATSQueue(url, name_prefix="auth")
        assert TOKEN not in repr(q) and TOKEN not in repr(q.settings)
        async with q:
            assert await q.enqueue(make_task(1)) is TaskStatus.PENDING
            assert await q.count() == 1
        by_option = AsyncNATSResultStorage(server.url, token=TOKEN, name_prefix="auth")
        async with by_option:
            await by_option.set(TaskResult(task_id="a", status=TaskStatus.SUCCESS, result=1))
        for bad in (
            AsyncNATSQueue(server.url, name_prefix="auth"),
            AsyncNATSQueue(server.url, token="wrong-" + TOKEN, name_prefix="auth"),
        ):
            with pytest.raises(BackendError, match="authorization") as info:
                await bad.connect()
            _assert_hidden(TOKEN, info.value)
    assert TOKEN not in caplog.text


async def test_user_password_auth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from omniq_nats import AsyncNATSQueue, create_nats_backend

    caplog.set_level(logging.DEBUG)
    with support.nats_server(tmp_path / "store", "--user", "bob", "--pass", PASSWORD) as server:
        url = f"nats://bob:{PASSWORD}@127.0.0.1:{server.port}"
        q = AsyncNATSQueue(url, name_prefix="auth", reconnect_time_wait=0.2)
        assert PASSWORD not in repr(q)
        async with q:
            await q.enqueue(make_task(1))
            await anyio.to_thread.run_sync(server.restart)  # reconnect with credentials
            assert await q.count() == 1
        backend = create_nats_backend(
            {"servers": [server.url], "user": "bob", "password": PASSWORD, "name_prefix": "auth"}
        )
        assert PASSWORD not in repr(backend)
        async with backend:
            assert await backend.task_queue.count() == 1
        bad = AsyncNATSQueue(f"nats://bob:wrong-{PASSWORD}@127.0.0.1:{server.port}")
        with pytest.raises(BackendError, match="authorization") as info:
            await bad.connect()
        _assert_hidden(PASSWORD, info.value)
    assert PASSWORD not in caplog.text
    assert "wrong-" not in caplog.text


def _assert_hidden(secret: str, exc: BaseException) -> None:
    chain: BaseException | None = exc
    while chain is not None:
        assert secret not in str(chain) and secret not in repr(chain)
        chain = chain.__cause__ or chain.__context__
    import traceback

    assert secret not in "".join(traceback.format_exception(exc))


def test_secrets_hidden_in_reprs_and_config_errors() -> None:
    from omniq_nats import NATSBackend, NATSQueue
    from omniq_nats._config import NATSSettings

    url = f"nats://bob:{PASSWORD}@127.0.0.1:4222,nats://127.0.0.1:4223?queue_group=g"
    for obj in (NATSBackend(url), NATSQueue(url), NATSSettings.from_url(url)):
        assert PASSWORD not in repr(obj)
    s = NATSSettings.from_url(f"nats://{TOKEN}@h:1")
    assert s.token == TOKEN and s.servers == ("nats://h:1",) and TOKEN not in repr(s)
    assert TOKEN not in s.scrub(f"x nats://{TOKEN}@h:1 {TOKEN}")
    s = NATSSettings.from_url(url)
    assert PASSWORD not in s.scrub(f"x nats://bob:{PASSWORD}@h:1 {PASSWORD}")
    with pytest.raises(ConfigurationError) as info:
        NATSSettings.from_url(url, max_reconnect_attempts="many")
    assert PASSWORD not in str(info.value)


# --- server capabilities ---------------------------------------------------------------


async def test_server_without_jetstream_gives_clear_error(tmp_path: Path) -> None:
    from omniq_nats import AsyncNATSQueue

    with support.nats_server(tmp_path / "store", jetstream=False) as server:
        with pytest.raises(BackendError, match="-js") as info:
            await AsyncNATSQueue(server.url).connect()
        assert "JetStream is not enabled" in str(info.value)


async def test_unreachable_server_fails_fast() -> None:
    from omniq_nats import AsyncNATSQueue

    port = support.free_port()
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{port}"):
        await AsyncNATSQueue(f"nats://127.0.0.1:{port}", connect_timeout=1).connect()
    assert time.monotonic() - started < 10


async def test_payload_over_max_payload(prefix: str) -> None:
    from omniq_nats import AsyncNATSQueue, AsyncNATSResultStorage

    async with AsyncNATSQueue(support.URL, name_prefix=prefix) as q:
        big = make_task(1, kwargs={"blob": b"x" * (2 * 1024 * 1024)})
        with pytest.raises(PayloadTooLargeError, match="max_payload"):
            await q.enqueue(big)
        with pytest.raises(PayloadTooLargeError, match=big.id):
            await q.enqueue_many([make_task(2), big])
        assert await q.count() == 0  # nothing of a refused batch is stored
        assert await q.enqueue(make_task(3)) is TaskStatus.PENDING  # others go on
    async with AsyncNATSResultStorage(support.URL, name_prefix=prefix) as r:
        with pytest.raises(PayloadTooLargeError):
            await r.set(TaskResult(task_id="b", status=TaskStatus.SUCCESS, result=b"y" * 2**21))


async def test_configured_max_payload(tmp_path: Path) -> None:
    from omniq_nats import AsyncNATSQueue

    config = tmp_path / "nats.conf"
    config.write_text("max_payload: 8192\n")
    with support.nats_server(tmp_path / "store", "-c", str(config)) as server:
        async with AsyncNATSQueue(server.url, name_prefix="mp") as q:
            await q.enqueue(make_task(1, kwargs={"small": "x" * 1000}))
            with pytest.raises(PayloadTooLargeError, match="8192"):
                await q.enqueue(make_task(2, kwargs={"big": "x" * 10_000}))


# --- crash recovery ----------------------------------------------------------------------

_DOOMED_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from omniq_nats import AsyncNATSQueue

    async def main():
        url, prefix = sys.argv[1], sys.argv[2]
        lease, ack_wait = float(sys.argv[3]), float(sys.argv[4])
        q = AsyncNATSQueue(url, name_prefix=prefix, ack_wait=ack_wait)
        await q.connect()
        done = 0
        while done < 40:
            for t in await q.dequeue_many(["default"], 10, worker_id="doomed", lease=lease, wait=5):
                assert await q.complete(t)
                done += 1
        in_flight = await q.dequeue_many(["default"], 10, worker_id="doomed", lease=lease, wait=5)
        print(json.dumps([t.id for t in in_flight]), flush=True)
        while True:  # a live worker: keeps its leases until it is killed
            for t in in_flight:
                await q.heartbeat(t, lease)
            await asyncio.sleep(lease / 3)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    ("lease", "ack_wait"),
    [(1.0, 30.0), (1.5, 1.5)],
    ids=["lease-by-nak-delay", "lease-is-ack_wait"],
)
async def test_sigkill_worker_tasks_in_flight_recovered(
    prefix: str, lease: float, ack_wait: float
) -> None:
    from omniq_nats import AsyncNATSQueue

    async with AsyncNATSQueue(support.URL, name_prefix=prefix, ack_wait=ack_wait) as q:
        tasks = [make_task(i) for i in range(100)]
        await q.enqueue_many(tasks)
        proc = subprocess.Popen(
            [sys.executable, "-c", _DOOMED_WORKER, support.URL, prefix, str(lease), str(ack_wait)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            with anyio.fail_after(60):
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line, proc.stderr.read() if proc.stderr else "worker died"
            in_flight = set(json.loads(line))
            assert len(in_flight) == 10
            await anyio.sleep(lease)  # it has heartbeated at least once
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        claims = await _drain(q, 100)
        reclaimed = {t.id for t in claims if t.attempt > 1}
        assert reclaimed == in_flight, "re-runs must be exactly the tasks in flight"
        assert len(claims) == 60, "a task completed by the killed worker ran again"
        assert all(t.attempt == 2 for t in claims if t.id in in_flight)
        for t in tasks:
            stored = await q.get(t.id)
            assert stored is not None and stored.status is TaskStatus.SUCCESS


async def test_dead_letter_after_max_deliver(prefix: str) -> None:
    from omniq_nats import AsyncNATSQueue

    async with AsyncNATSQueue(support.URL, name_prefix=prefix, max_deliver=2) as q:
        t = make_task(1)
        await q.enqueue(t)
        first = await q.dequeue(["default"], worker_id="crashy", lease=0.3)
        assert first is not None and first.attempt == 1
        second = await q.dequeue(["default"], worker_id="crashy", lease=0.3, wait=5)
        assert second is not None and second.attempt == 2
        assert await q.dequeue(["default"], worker_id="w", lease=0.3, wait=1.5) is None
        stored = await q.get(t.id)
        assert stored is not None and stored.status is TaskStatus.FAILED
        assert "dead-lettered" in (stored.error or "")
        st = await q._state()
        info = await st.conn.js.stream_info(
            q.settings.tasks_stream_name, subjects_filter=f"{q.settings.dead_letter_prefix}.>"
        )
        assert info.state.subjects == {f"{q.settings.dead_letter_prefix}.default": 1}


# --- pool, plugin, sync ----------------------------------------------------------------------


async def test_components_of_a_backend_share_one_connection(prefix: str) -> None:
    from omniq_nats import AsyncNATSQueue, NATSBackend
    from omniq_nats._connection import pool_size

    before = pool_size()
    backend = NATSBackend(support.URL, name_prefix=prefix)
    async with backend:
        loop = id(asyncio.get_running_loop())
        conns = {id(c._conns[loop]) for c in backend.components}
        clients = {id(c._conns[loop].nc) for c in backend.components}
        assert len(conns) == 1 and len(clients) == 1
        assert pool_size() == before + 1
        async with AsyncNATSQueue(support.URL, name_prefix=prefix) as same:
            assert same._conns[loop] is backend.task_queue._conns[loop]
        async with AsyncNATSQueue(support.URL, name_prefix=prefix, shared=False) as own:
            assert own._conns[loop] is not backend.task_queue._conns[loop]
        nc = backend.task_queue._conns[loop].nc
        await backend.task_queue.enqueue(make_task(1))
        assert await backend.result_storage.get("nothing") is None
    assert nc.is_closed and pool_size() == before


def test_sync_twins_and_backend(sync_prefix: str) -> None:
    prefix = sync_prefix
    from omniq_nats import NATSBackend, NATSQueue, NATSResultStorage

    with NATSQueue(support.URL, name_prefix=prefix) as q:
        t = make_task(1)
        assert q.enqueue_sync(t) is TaskStatus.PENDING
        c = q.dequeue_sync(["default"], worker_id="w")
        assert c is not None and q.complete_sync(c)
    with NATSResultStorage(support.URL, name_prefix=prefix) as r:
        r.set_sync(TaskResult(task_id=t.id, status=TaskStatus.SUCCESS, result=3))
        got = r.wait_sync(t.id, timeout=5)
        assert got is not None and got.result == 3
    with NATSBackend(support.URL, name_prefix=prefix) as b:
        assert b.sync_task_queue.count_sync(status=TaskStatus.SUCCESS) == 1


def test_plugin_registers_without_importing_the_driver() -> None:
    code = (
        "import sys, omniq_nats.plugin as p; specs = p.omniq_backends();"
        "assert 'nats' not in sys.modules, 'driver imported at plugin load';"
        "assert specs[0].schemes == ('nats', 'tls');"
        "from omniq.plugins import create_component;"
        "q = create_component('task_queue', url='nats://127.0.0.1:4222');"
        "assert type(q).__name__ == 'AsyncNATSQueue'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_url_parsing_and_options() -> None:
    from omniq_nats._config import NATSSettings

    s = NATSSettings.from_url("nats://a:4222,b,nats://c:5000?ack_wait=5&max_deliver=3&tls=yes")
    assert s.servers == ("nats://a:4222", "nats://b:4222", "nats://c:5000")
    assert s.ack_wait == 5.0 and s.max_deliver == 3 and s.tls is True
    assert NATSSettings.from_url("tls://h").uses_tls
    s = NATSSettings.from_url(None, servers=["nats://x:1"], queue_group="g", name_prefix="p")
    assert s.consumer_prefix == "p_g" and s.tasks_stream_name == "p_OMNIQ_TASKS"
    assert s.tasks_subject_prefix == "p.omniq.tasks" and s.results_bucket_name == "p_omniq_results"
    for bad in ("127.0.0.1:4222", "redis://h", "nats://h:notaport"):
        with pytest.raises(ConfigurationError, match="NATS URL"):
            NATSSettings.from_url(bad)
    with pytest.raises(ConfigurationError, match="unknown NATS backend option"):
        NATSSettings.from_url("nats://h", ack_wiat=3)


async def test_new_priority_level_from_another_instance_is_seen(prefix: str) -> None:
    from omniq_nats import AsyncNATSQueue

    async with (
        AsyncNATSQueue(support.URL, name_prefix=prefix, level_refresh=3600) as consumer,
        AsyncNATSQueue(support.URL, name_prefix=prefix, shared=False) as producer,
    ):
        await producer.enqueue(make_task(1, priority=0))
        first = await consumer.dequeue(["default"], worker_id="w")
        assert first is not None and await consumer.complete(first)
        await producer.enqueue_many([make_task(2, priority=0), make_task(3, priority=7)])
        await anyio.sleep(0.2)  # the consumer-created advisory arrives
        got = await consumer.dequeue(["default"], worker_id="w")
        assert got is not None and got.args[0] == 3


async def test_results_are_announced_on_the_results_subject(prefix: str) -> None:
    from omniq_nats import AsyncNATSResultStorage

    async with AsyncNATSResultStorage(support.URL, name_prefix=prefix) as r:
        conn = r._conns[id(asyncio.get_running_loop())]
        seen: asyncio.Queue[Any] = asyncio.Queue()

        async def cb(msg: Any) -> None:
            seen.put_nowait(msg)

        sub = await conn.nc.subscribe(f"{r.settings.results_subject_prefix}.>", cb=cb)
        await r.set(TaskResult(task_id="announced", status=TaskStatus.SUCCESS, result=1))
        msg = await asyncio.wait_for(seen.get(), 5)
        assert msg.subject == f"{prefix}.omniq.results.announced" and msg.data == b""
        await sub.unsubscribe()


async def test_same_id_enqueued_again_after_purge_is_claimable(prefix: str) -> None:
    from omniq_nats import AsyncNATSQueue

    async with AsyncNATSQueue(support.URL, name_prefix=prefix) as q:
        t = make_task(1)
        await q.enqueue(t)
        assert await q.purge() == 1
        assert await q.enqueue(t.copy()) is TaskStatus.PENDING  # not taken for a duplicate
        got = await q.dequeue(["default"], worker_id="w")
        assert got is not None and got.id == t.id


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_with_ca_option_and_tls_scheme(tmp_path: Path) -> None:
    from omniq_nats import AsyncNATSQueue

    cert, key = _self_signed(tmp_path)
    args = ("--tls", "--tlscert", str(cert), "--tlskey", str(key))
    with support.nats_server(tmp_path / "store", *args) as server:
        for url in (server.url, f"tls://127.0.0.1:{server.port}"):
            async with AsyncNATSQueue(url, tls_ca=str(cert), name_prefix="tls") as q:
                assert await q.enqueue(make_task(1)) in (TaskStatus.PENDING,)
                await q.purge()
        with pytest.raises(BackendUnavailableError):  # an unknown CA is refused
            await AsyncNATSQueue(f"tls://127.0.0.1:{server.port}", connect_timeout=1).connect()
