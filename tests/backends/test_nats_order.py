"""Claim order on NATS is enqueue order within a queue and priority (issue 14.10).

``map()`` sends its batches of 500 overlapping; each batch's records are written before
its messages are published, and the stream's order is the claim order. The batches must
publish in the order they were enqueued, however long each one's writes took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.backends import test_nats_support as support

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    support.require_nats()
    p = support.new_prefix()
    yield p
    await support.drop_namespace(p)


def _app(prefix: str) -> Any:
    from omniq import AsyncOmniQ

    # ack_wait far above the tests' time: nothing may come back by redelivery
    return AsyncOmniQ(task_queue=f"{support.URL}?name_prefix={prefix}&ack_wait=60")


async def _claim_all(oq: Any, n: int) -> list[str]:
    """Claim ``n`` tasks of the default queue through the queue component, in order."""
    out: list[str] = []
    deadline = time.monotonic() + 60
    while len(out) < n and time.monotonic() < deadline:
        claimed = await oq.task_queue.dequeue_many(
            ["default"], 100, worker_id="w", lease=60, wait=2
        )
        out += [t.id for t in claimed]
    return out


def _first_difference(got: list[int], expected: list[int]) -> str:
    i = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
    if i is None:
        return f"{len(got)} claimed of {len(expected)}"
    return f"position {i}: got task {got[i]}, expected {expected[i]}; around it {got[i : i + 5]}"


async def test_concurrent_enqueues_are_claimed_in_the_order_they_were_made(prefix: str) -> None:
    """Two enqueues at once: the first takes a round trip more (its tasks have a TTL,
    which writes an index entry first). Its tasks are older and must be claimed first."""
    async with _app(prefix) as oq:

        @oq.task
        def f(i: int) -> int:
            return i

        first, second = await asyncio.gather(
            f.options(ttl=3600).map([(i,) for i in range(300)]),
            f.map([(i,) for i in range(300, 600)]),
        )
        position = {h.id: i for i, h in enumerate([*first, *second])}
        claimed = [position[t] for t in await _claim_all(oq, 600)]
        assert claimed == list(range(600)), (
            "tasks of the first of two concurrent enqueues should be claimed first, each "
            "call's in its order; " + _first_difference(claimed, list(range(600)))
        )


async def test_map_runs_its_batches_in_order(prefix: str) -> None:
    """map() of 3,200 tasks on a worker running one task at a time with no prefetch:
    they run in the order given. The 7 batches overlap, and with 4 kB arguments a
    batch fills the client's 2 MB send buffer and waits for a flush mid-batch."""
    n = 3200
    async with _app(prefix) as oq:
        ran: list[int] = []

        @oq.task
        async def step(i: int, pad: str) -> None:
            ran.append(i)

        async with oq.start_worker(queues=["default"], concurrency=1, prefetch=0):
            await step.map([(i, "x" * 4000) for i in range(n)])
            deadline = time.monotonic() + 120
            while len(ran) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert ran == list(range(n)), (
            "map()'s tasks should run in the order given (one at a time, no prefetch); "
            + _first_difference(ran, list(range(n)))
        )
