"""A 3-node NATS JetStream cluster on 127.0.0.1 for tests (no tests here).

:class:`NatsCluster` writes one config file per node (own client, cluster and
monitoring ports, all free ones; routes to the other two; its own store directory under
the given directory), starts ``nats-server`` for each and waits until JetStream is
ready: every node reports the same meta leader and a meta group of three peers (the
``/jsz`` monitoring endpoint). Nodes can be killed (SIGKILL) and restarted on the same
ports and store; :meth:`NatsCluster.stop` stops only the processes it started, by PID.

Use :func:`nats_cluster` (a context manager) from a module- or session-scoped fixture;
without the nats-server binary it skips (fails under ``OMNIQ_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.backends.test_nats_support import HOST, NATS_SERVER, free_port, require_nats_binary

__all__ = ["ClusterNode", "NatsCluster", "nats_cluster"]

#: Seconds to wait for a node to listen, and for the cluster to elect its meta leader.
START_TIMEOUT = 30.0


class ClusterNode:
    """One server of the cluster: its ports, config file, store and process."""

    def __init__(self, root: Path, index: int, cluster_name: str) -> None:
        self.name = f"n{index}"
        self.port = free_port()
        self.cluster_port = free_port()
        self.monitor_port = free_port()
        self.dir = root / self.name
        self.store = self.dir / "store"
        self.store.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "server.conf"
        self.log = self.dir / "server.log"
        self.cluster_name = cluster_name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self, routes: list[int], extra: str = "") -> None:
        route_urls = ", ".join(f'"nats-route://{HOST}:{p}"' for p in routes)
        self.config.write_text(
            f"""
server_name: {self.name}
listen: {HOST}:{self.port}
http: {HOST}:{self.monitor_port}
jetstream {{
  store_dir: "{self.store}"
  max_memory_store: 256MB
  max_file_store: 2GB
}}
cluster {{
  name: {self.cluster_name}
  listen: {HOST}:{self.cluster_port}
  routes: [{route_urls}]
}}
{extra}
"""
        )

    def start(self) -> None:
        """Start the process and wait until it accepts clients (not JetStream-ready)."""
        if self.alive:
            return
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(self.config), "-l", str(self.log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited:\n{self.tail()}")
            if self.jsz() is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} did not listen within {START_TIMEOUT}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process (SIGKILL by default) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def jsz(self) -> dict[str, Any] | None:
        """The node's ``/jsz`` report, or None when it does not answer."""
        url = f"http://{HOST}:{self.monitor_port}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class NatsCluster:
    """Three JetStream servers routed to each other on loopback."""

    def __init__(self, root: Path, size: int = 3, extra_config: str = "") -> None:
        self.name = "omniq" + os.urandom(3).hex()
        self.nodes = [ClusterNode(root, i, self.name) for i in range(1, size + 1)]
        for node in self.nodes:
            others = [n.cluster_port for n in self.nodes if n is not node]
            node.write_config(others, extra_config)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """One OmniQ URL listing every node (``nats://h:p1,h:p2,h:p3``)."""
        return "nats://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        """Wait until every running node reports the same JetStream meta leader and a meta
        group of the cluster's size with every peer current; returns the leader's name."""
        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while time.monotonic() < deadline:
            seen = []
            for node in self.nodes:
                if not node.alive:
                    continue
                meta = (node.jsz() or {}).get("meta_cluster") or {}
                seen.append(
                    (
                        meta.get("leader"),
                        meta.get("cluster_size"),
                        all(p.get("current") for p in meta.get("replicas") or []),
                    )
                )
            leaders = {s[0] for s in seen}
            if (
                seen
                and len(leaders) == 1
                and None not in leaders
                and all(s[1] == len(self.nodes) and s[2] for s in seen)
            ):
                return str(seen[0][0])
            time.sleep(0.1)
        logs = "\n".join(f"--- {n.name}\n{n.tail()}" for n in self.nodes)
        raise RuntimeError(f"JetStream cluster not ready within {timeout}s: {seen}\n{logs}")

    def stop(self) -> None:
        """Stop every process this cluster started (SIGTERM, then SIGKILL), by PID."""
        for node in self.nodes:
            node.kill(signal.SIGTERM)


@contextlib.contextmanager
def nats_cluster(root: Path, size: int = 3) -> Iterator[NatsCluster]:
    """Run a JetStream cluster of ``size`` nodes for the block (stopped after)."""
    require_nats_binary()
    cluster = NatsCluster(root, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
