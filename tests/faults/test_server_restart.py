"""The backend's server killed with SIGKILL and restarted (same port, same store) while
two producers enqueue and two workers run: everyone reconnects, nothing is lost.

Each test runs a server of its own (``restartable_backend``); embedded backends (SQLite)
have no server and are skipped here: ``test_worker_killed_repeatedly_mid_write...`` in
test_worker_crashes.py is their crash test.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from omniq import TaskStatus
from tests.faults.harness import RUN_TIMEOUT, Harness, wait_until

pytestmark = pytest.mark.slow

LEASE = 5.0
PER_PRODUCER = 1500


def test_server_kill9_and_restart_mid_run_loses_nothing(restartable_backend: Harness) -> None:
    h = restartable_backend
    oq = h.client(lease=LEASE)
    workers = [h.worker(lease=LEASE, concurrency=4, name=f"worker-{i}") for i in range(2)]
    # 30 batches of 50, 0.1 s apart: the producers are mid-run when the server dies
    producers = [h.producer(p, PER_PRODUCER, 50, lease=LEASE, pause=0.1) for p in ("pa", "pb")]
    total = PER_PRODUCER * len(producers)
    expected = {f"{p}-{i:05d}" for p in ("pa", "pb") for i in range(PER_PRODUCER)}
    log = h.executions()

    wait_until(
        lambda: len(log.entries()) >= 300,
        what="300 tasks to run before the server is killed",
        alive=[*workers, *producers],
    )
    runs_at_kill = len(log.entries())
    h.kill_server()  # SIGKILL, while producers enqueue and workers run
    h.start_server()  # same port, same store directory

    for p in producers:
        rc = p.wait(RUN_TIMEOUT)
        assert rc == 0, f"{p.name} failed across the server restart:\n{p.output()}"
    wait_until(
        lambda: oq.task_queue.count_sync(status=TaskStatus.SUCCESS) >= total,
        what=f"all {total} tasks to succeed after the restart",
        timeout=RUN_TIMEOUT,
        alive=workers,
    )
    for w in workers:
        assert w.running, f"{w.name} did not survive the server restart:\n{w.output()}"
        w.signal(signal.SIGTERM)
    for w in workers:
        rc = w.wait(60)
        assert rc == 0, f"{w.name} exited with {rc}:\n{w.output()}"

    stored = oq.task_queue.count_sync()
    runs = log.count("run")
    results = oq.result_storage.list_sync(limit=100_000)
    values = Counter(r.result for r in results if r.status is TaskStatus.SUCCESS)
    print(
        f"restart reconciliation: runs_at_kill={runs_at_kill} stored={stored} "
        f"runs={sum(runs.values())} "
        f"unique={len(runs)} results={len(results)} success_values={len(values)}"
    )
    assert stored == total, f"expected {total} stored tasks (no loss, no duplicate), got {stored}"
    missing = sorted(expected - set(runs))
    assert not missing, f"{len(missing)} tasks never ran: {missing[:20]}"
    assert set(values) == expected, (
        f"results missing for {sorted(expected - set(values))[:20]}; "
        f"unexpected {sorted(set(values) - expected)[:20]}"
    )
    assert all(c == 1 for c in values.values()), "a task has more than one result"
