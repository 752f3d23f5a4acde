"""Worker claim loop under faults: a claim that is cut off yields no tasks and never
hands the previous batch to the runners again (issue 13, defect 3)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from omniq import AsyncOmniQ, TaskStatus
from omniq.models import Task
from omniq.storage.memory import AsyncMemoryQueue

pytestmark = pytest.mark.anyio


class HangingClaims(AsyncMemoryQueue):
    """Every claim after the first ``ok`` ones hangs until its caller gives up, as a
    claim does when another process holds the SQLite write lock for seconds."""

    def __init__(self, url: str, ok: int) -> None:
        super().__init__(url)
        self.ok = ok
        self.calls = 0
        self.cut_off = 0

    async def dequeue_many(self, queues: Sequence[str], limit: int, **kw: Any) -> list[Task]:
        self.calls += 1
        if self.calls > self.ok and self.calls <= self.ok + 3:
            try:
                await anyio.sleep_forever()
            finally:
                self.cut_off += 1
        return await super().dequeue_many(queues, limit, **kw)


@pytest.mark.parametrize("ok", [0, 1], ids=["first-claim-cut-off", "later-claim-cut-off"])
async def test_a_cut_off_claim_yields_nothing_and_reruns_nothing(
    ok: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = HangingClaims(f"memory://cutoff-{time.time_ns()}", ok)
    queue.claim_grace = 0.05  # type: ignore[misc]
    runs: Counter[tuple[str, int]] = Counter()
    async with AsyncOmniQ(task_queue=queue, worker="async") as oq:

        @oq.task
        async def work(i: int) -> int:
            return i

        handles = await work.map([(i,) for i in range(20)])
        original = oq.task_queue.complete_with_results

        async def record(batch: Any, results: Any) -> list[bool]:
            for task, _ in batch:
                runs[(task.id, task.attempt)] += 1
            return await original(batch, results)  # type: ignore[no-any-return]

        oq.task_queue.complete_with_results = record
        async with oq.start_worker(concurrency=4, prefetch=0, poll_interval=0.01):
            with anyio.fail_after(30):
                values = [await h.result(timeout=30) for h in handles]
        assert values == list(range(20)), "every task must finish with its own value"
        assert queue.cut_off == 3, f"expected 3 claims cut off, saw {queue.cut_off}"
        twice = {k: n for k, n in runs.items() if n > 1}
        assert not twice, f"a cut-off claim handed an earlier batch to the runners again: {twice}"
        for h in handles:
            task = await oq.get_task(h.id)
            assert task is not None and task.status is TaskStatus.SUCCESS
            assert task.attempt == 1, f"task {h.id} ran on attempt {task.attempt}, expected 1"


class SlowResults(AsyncMemoryQueue):
    """Writing a batch of results takes longer than a lease, as on a slow object store."""

    write_seconds = 1.0

    async def complete_with_results(self, finished: Any, results: Any) -> list[bool]:
        await anyio.sleep(self.write_seconds)
        return await super().complete_with_results(finished, results)


async def test_a_finished_task_keeps_its_claim_while_its_result_is_written() -> None:
    queue = SlowResults(f"memory://slow-results-{time.time_ns()}")
    runs: Counter[str] = Counter()
    async with AsyncOmniQ(task_queue=queue, worker="async") as oq:

        @oq.task
        async def once(i: int) -> int:
            runs[f"{i}"] += 1
            return i

        handles = await once.map([(i,) for i in range(3)])
        # lease 0.3 s, heartbeats every 0.05 s, a result write of 1 s: without the
        # heartbeats of finished tasks their leases lapse and they are claimed again
        async with oq.start_worker(concurrency=3, prefetch=0, lease=0.3, poll_interval=0.01):
            with anyio.fail_after(30):
                values = [await h.result(timeout=30) for h in handles]
    assert values == [0, 1, 2]
    assert runs == Counter({"0": 1, "1": 1, "2": 1}), f"each task runs once, ran {runs}"
