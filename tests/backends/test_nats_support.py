"""Helpers for the NATS backend tests (no tests here): service check, private servers.

The shared server is nats-server with JetStream on 127.0.0.1:4222. Tests that stop,
restart or configure a server start their own ``/usr/sbin/nats-server`` on a free port
with its own store directory, and stop it by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
PORT = 4222
URL = f"nats://{HOST}:{PORT}"
NATS_SERVER = (
    os.environ.get("OMNIQ_NATS_SERVER_BIN")
    or shutil.which("nats-server")
    or ("/usr/sbin/nats-server")
)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(4096).startswith(b"INFO")
    except OSError:
        return False


def require_nats() -> None:
    """Skip without the shared server; fail instead under OMNIQ_REQUIRE_SERVICES=1."""
    if _reachable(HOST, PORT):
        return
    message = f"NATS server with JetStream not reachable at {URL}"
    if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (OMNIQ_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def require_nats_binary() -> None:
    """Skip (or fail under OMNIQ_REQUIRE_SERVICES=1) without a nats-server binary."""
    if Path(NATS_SERVER).exists():
        return
    message = f"nats-server binary not found ({NATS_SERVER})"
    if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def new_prefix() -> str:
    """A unique name prefix for one test's streams, buckets and subjects."""
    return "t" + uuid.uuid4().hex[:12]


async def stream_names(nc: Any) -> list[str]:
    """The name of every stream on the server. ``js.streams_info()`` returns only the
    first page (256 streams): on a shared server that has seen many test runs, a test's
    own streams are often not on it."""
    names: list[str] = []
    while True:
        request = json.dumps({"offset": len(names)}).encode()
        reply = await nc.request("$JS.API.STREAM.NAMES", request, timeout=5)
        page = json.loads(reply.data)
        names += page.get("streams") or []
        if not page.get("streams") or len(names) >= page.get("total", 0):
            return names


async def drop_namespace(prefix: str, url: str = URL) -> None:
    """Delete every stream of a test prefix (tasks, events, KV buckets)."""
    import nats

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        for name in await stream_names(nc):
            if name.startswith((f"{prefix}_", f"KV_{prefix}_")):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
    finally:
        await nc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A private nats-server process (own port and store dir), stopped by PID."""

    def __init__(self, store: Path, *args: str, jetstream: bool = True) -> None:
        self.port = free_port()
        self.store = store
        self.args = list(args)
        self.jetstream = jetstream
        self.proc: subprocess.Popen[bytes] | None = None
        store.mkdir(parents=True, exist_ok=True)
        self.log = store.parent / f"nats-{self.port}.log"

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> NatsServer:
        cmd = [NATS_SERVER, "-a", HOST, "-p", str(self.port), "-l", str(self.log), *self.args]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"nats-server exited: {log}")
            if _reachable(HOST, self.port):
                if self.jetstream:
                    time.sleep(0.2)  # JetStream finishes recovering its store
                return self
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start within 10 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def nats_server(store: Path, *args: str, jetstream: bool = True) -> Iterator[NatsServer]:
    """Run a private nats-server for the block."""
    require_nats_binary()
    server = NatsServer(store, *args, jetstream=jetstream).start()
    try:
        yield server
    finally:
        server.stop()
