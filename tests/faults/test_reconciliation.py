"""3 worker processes and 2 producer processes over 20,000 tasks, reconciled exactly:
every task executed once, one SUCCESS result each, nothing lost or duplicated."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from omniq import TaskStatus
from tests.faults.harness import RUN_TIMEOUT, Harness, wait_until

pytestmark = pytest.mark.slow

WORKERS = 3
PRODUCERS = 2
PER_PRODUCER = 10_000


def test_three_workers_two_producers_20k_tasks_reconcile_exactly(
    backend: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    oq = backend.client()
    total = PRODUCERS * PER_PRODUCER
    names = [f"p{j}" for j in range(PRODUCERS)]
    expected = {f"{p}-{i:05d}" for p in names for i in range(PER_PRODUCER)}
    t0 = time.monotonic()
    workers = [backend.worker(concurrency=8, name=f"worker-{i}") for i in range(WORKERS)]
    producers = [backend.producer(p, PER_PRODUCER, 500) for p in names]
    for p in producers:
        rc = p.wait(RUN_TIMEOUT)
        assert rc == 0, f"{p.name} failed:\n{p.output()}"
    wait_until(
        lambda: oq.task_queue.count_sync(status=TaskStatus.SUCCESS) >= total,
        what=f"all {total} tasks to succeed",
        timeout=RUN_TIMEOUT,
        alive=workers,
        interval=0.2,
    )
    took = time.monotonic() - t0
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        rc = w.wait(60)
        assert rc == 0, f"{w.name} exited with {rc}:\n{w.output()}"

    log = backend.executions()
    runs = log.count("run")
    per_worker = Counter(pid for ev, _, pid, _ in log.entries() if ev == "run")
    stored = oq.task_queue.count_sync()
    succeeded = oq.task_queue.count_sync(status=TaskStatus.SUCCESS)
    results = oq.result_storage.list_sync(limit=10 * total)
    result_ids = Counter(r.task_id for r in results)
    values = Counter(r.result for r in results if r.status is TaskStatus.SUCCESS)
    duplicates = {k: c for k, c in runs.items() if c > 1}
    missing = expected - set(runs)
    unexpected = set(runs) - expected
    lines = [
        f"reconciliation [{backend.name}] in {took:.1f} s: enqueued={total} stored={stored} "
        f"success={succeeded}",
        f"  executions={sum(runs.values())} unique={len(runs)} duplicates={len(duplicates)} "
        f"missing={len(missing)} unexpected={len(unexpected)}",
        f"  results={len(results)} result_ids={len(result_ids)} "
        f"success_values={len(values)} per_worker={sorted(per_worker.values())}",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    report = "\n".join(lines)
    assert stored == total, f"expected {total} stored tasks\n{report}"
    assert succeeded == total, f"expected {total} SUCCESS tasks\n{report}"
    assert not missing, f"tasks never executed: {sorted(missing)[:20]}\n{report}"
    assert not duplicates, f"tasks executed more than once: {list(duplicates)[:20]}\n{report}"
    assert not unexpected, f"unknown keys executed: {sorted(unexpected)[:20]}\n{report}"
    assert len(results) == len(result_ids) == total, f"expected one result per task\n{report}"
    assert set(values) == expected and all(c == 1 for c in values.values()), (
        f"expected one SUCCESS result per task, holding its key\n{report}"
    )
