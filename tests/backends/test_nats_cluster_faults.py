"""OmniQ on a 3-node JetStream cluster (R3) while nodes die: nothing lost, nothing doubled.

Two producers enqueue and two worker processes (``python -m omniq worker``, the fault
suite's app) run 3,000 tasks while the test SIGKILLs, one after the other, the tasks
stream's leader, the leader of the consumer the workers claim from, and the server a
worker is connected to, restarting each (same ports and store) once the others have
taken over. Then every task enqueued (producers retry a batch until acknowledged) must
have exactly one result, and runs beyond the first are bounded by what was in flight.

The cluster is this module's own (:mod:`tests.backends.nats_cluster`); the processes are
the fault suite's (:mod:`tests.faults.harness`), stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import TaskStatus
from tests.backends.nats_cluster import ClusterNode, NatsCluster, nats_cluster
from tests.faults.harness import RUN_TIMEOUT, NatsHarness, Proc, wait_until

pytestmark = pytest.mark.slow

#: The workers' lease: longer than an R3 election (5-7 s measured), so a claim held by a
#: worker whose server died is not given to the other worker while it still runs.
LEASE = 15.0
#: Tasks per producer (two producers); ``OMNIQ_NATS_CLUSTER_TASKS`` sets the total.
PER_PRODUCER = int(os.environ.get("OMNIQ_NATS_CLUSTER_TASKS", "3000")) // 2
CONCURRENCY = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with nats_cluster(Path(tmp_path_factory.mktemp("nats-cluster-faults"))) as c:
        yield c


class NatsClusterHarness(NatsHarness):
    """The fault suite's NATS harness on the cluster, R3, with a prefix of its own."""

    def __init__(self, workdir: Path, cluster: NatsCluster) -> None:
        self.cluster = cluster
        super().__init__(workdir, cluster.url)

    def url(self, *, lease: float | None = None) -> str:
        return super().url(lease=lease) + "&replicas=3"

    def _close_store(self) -> None:
        from tests.backends import test_nats_support as support

        try:
            asyncio.run(support.drop_namespace(self.prefix, self.cluster.urls[0]))
        except Exception:
            pass


# --- who leads what, who is connected where ---------------------------------------------


async def _api(cluster: NatsCluster, subject: str) -> dict[str, Any]:
    import nats

    servers = [n.url for n in cluster.nodes if n.alive]
    nc = await nats.connect(servers=servers, connect_timeout=2, max_reconnect_attempts=2)
    try:
        reply = await nc.request(subject, b"", timeout=3)
        data: dict[str, Any] = json.loads(reply.data)
        return data
    finally:
        await nc.close()


def leader_of(cluster: NatsCluster, subject: str) -> ClusterNode:
    """The node leading the stream or consumer whose INFO ``subject`` returns."""
    deadline = time.monotonic() + 60
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            info = asyncio.run(_api(cluster, subject))
        except Exception as e:  # no answer during an election: ask again
            info = {"error": repr(e)}
        leader = (info.get("cluster") or {}).get("leader")
        if leader:
            return cluster.node(leader)
        time.sleep(0.2)
    raise AssertionError(f"no leader for {subject} within 60 s: {info}")


def replicas_current(cluster: NatsCluster, stream: str) -> bool:
    """True when the stream has a leader and both followers are current."""
    try:
        info = asyncio.run(_api(cluster, f"$JS.API.STREAM.INFO.{stream}"))
    except Exception:
        return False
    c = info.get("cluster") or {}
    replicas = c.get("replicas") or []
    return bool(c.get("leader")) and len(replicas) == 2 and all(r.get("current") for r in replicas)


def _local_ports(pid: int) -> set[int]:
    """Local TCP ports of the process's sockets (Linux /proc)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def server_of(cluster: NatsCluster, proc: Proc) -> ClusterNode | None:
    """The node a process is connected to (its client port in the node's ``/connz``)."""
    ports = _local_ports(proc.pid)
    for node in cluster.nodes:
        if not node.alive:
            continue
        url = f"http://127.0.0.1:{node.monitor_port}/connz?limit=1024"
        with urllib.request.urlopen(url, timeout=5) as resp:
            connz = json.loads(resp.read())
        if any(c.get("port") in ports for c in connz.get("connections") or []):
            return node
    return None


def kill_and_restart(cluster: NatsCluster, node: ClusterNode, streams: list[str]) -> float:
    """SIGKILL ``node``, wait until the others have a meta leader and the streams a
    leader, restart it, and wait until every replica is current again. Returns the
    seconds until the streams had leaders again."""
    t0 = time.monotonic()
    node.kill(signal.SIGKILL)
    cluster.wait_ready()
    for stream in streams:
        leader_of(cluster, f"$JS.API.STREAM.INFO.{stream}")
    took = time.monotonic() - t0
    node.start()
    cluster.wait_ready()
    for stream in streams:
        wait_until(
            lambda s=stream: replicas_current(cluster, s),  # type: ignore[misc]
            what=f"every replica of {stream} current after restarting {node.name}",
        )
    return took


# --- the test --------------------------------------------------------------------------


def test_leaders_and_workers_server_killed_mid_run_lose_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    h = NatsClusterHarness(tmp_path, cluster)
    try:
        _run(h, cluster)
    finally:
        h.close()


def _run(h: NatsClusterHarness, cluster: NatsCluster) -> None:
    from omniq_nats._config import NATSSettings

    settings = NATSSettings.from_url(h.url())
    stream = settings.tasks_stream_name
    streams = [stream, f"KV_{settings.tasks_bucket_name}", f"KV_{settings.results_bucket_name}"]
    consumer = f"{settings.consumer_prefix}_default_p0"
    oq = h.client(lease=LEASE)
    workers = [h.worker(lease=LEASE, concurrency=CONCURRENCY, name=f"worker-{i}") for i in range(2)]
    # 30 batches of 50 each, 1 s apart: the run lasts through the three kills
    producers = [h.producer(p, PER_PRODUCER, 50, lease=LEASE, pause=1.0) for p in ("pa", "pb")]
    total = PER_PRODUCER * len(producers)
    expected = {f"{p}-{i:05d}" for p in ("pa", "pb") for i in range(PER_PRODUCER)}
    log = h.executions()
    t_start = time.monotonic()

    def victims() -> Iterator[tuple[str, ClusterNode]]:
        yield "stream leader", leader_of(cluster, f"$JS.API.STREAM.INFO.{stream}")
        yield (
            "consumer leader",
            leader_of(cluster, f"$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        )
        node = server_of(cluster, workers[0])
        assert node is not None, "worker-0 is connected to no node of the cluster"
        yield "worker-0's server", node

    wait_until(
        lambda: len(log.entries()) >= 200,
        what="200 runs before the first kill",
        alive=[*workers, *producers],
        timeout=RUN_TIMEOUT,
    )
    kills: list[str] = []
    for what, node in victims():  # each as soon as the cluster is whole again
        runs_now = len(log.entries())
        assert runs_now < total, f"the run was over before the {what} was killed"
        took = kill_and_restart(cluster, node, streams)
        kills.append(f"{what} {node.name} at {runs_now} runs (new leaders in {took:.1f}s)")

    for p in producers:
        rc = p.wait(RUN_TIMEOUT)
        assert rc == 0, f"{p.name} failed across the node kills:\n{p.output()}"
    wait_until(
        lambda: oq.task_queue.count_sync(status=TaskStatus.SUCCESS) >= total,
        what=lambda: (
            f"all {total} tasks to succeed (succeeded: "
            f"{oq.task_queue.count_sync(status=TaskStatus.SUCCESS)})"
        ),
        timeout=RUN_TIMEOUT,
        alive=workers,
    )
    elapsed = time.monotonic() - t_start
    for w in workers:
        assert w.running, f"{w.name} did not survive the node kills:\n{w.output()}"
        w.signal(signal.SIGTERM)
    for w in workers:
        rc = w.wait(60)
        assert rc == 0, f"{w.name} exited with {rc}:\n{w.output()}"

    stored = oq.task_queue.count_sync()
    runs = log.count("run")
    results = oq.result_storage.list_sync(limit=100_000)
    values = Counter(r.result for r in results if r.status is TaskStatus.SUCCESS)
    extra = sum(runs.values()) - len(runs)
    reconnects = sum(w.output(10**7).count("NATS reconnected to") for w in workers)
    print(
        f"cluster faults: {'; '.join(kills)}; {total} tasks in {elapsed:.1f}s, "
        f"runs={sum(runs.values())} unique={len(runs)} extra={extra} "
        f"results={len(results)} worker reconnects logged={reconnects}"
    )
    assert stored == total, f"expected {total} stored tasks (no loss, no duplicate), got {stored}"
    missing = sorted(expected - set(runs))
    assert not missing, f"{len(missing)} tasks never ran: {missing[:20]}"
    assert set(values) == expected, (
        f"results missing for {sorted(expected - set(values))[:20]}; "
        f"unexpected {sorted(set(values) - expected)[:20]}"
    )
    assert all(c == 1 for c in values.values()), "a task has more than one result"
    # a run beyond the first can only be a task in flight at a kill (claimed, its
    # completion not recorded): at most what the two workers hold, per kill
    in_flight = 2 * CONCURRENCY * 31  # concurrency + prefetch (at most 30 per slot)
    assert extra <= len(kills) * in_flight, f"{extra} runs beyond the first: {runs.most_common(5)}"
    assert reconnects >= 1, "a worker's reconnect after its server died must be logged"
