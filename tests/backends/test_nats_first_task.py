"""The first task after a worker starts runs at once, not after ``ack_wait`` (issue 14.1).

A worker that gives up a long poll (a claim cut off, a new consumer announced, another
level answered first) must not lose the message the server dispatched to it meanwhile:
JetStream 2.9 cannot withdraw a pull request, so the message is on its way to an inbox
the client may already have dropped, and the server would redeliver it only after
``ack_wait``. These tests make ``ack_wait`` far longer than the time they allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from omniq.models import Task
from tests.backends import test_nats_support as support

ACK_WAIT = 30.0
#: a healthy first task takes milliseconds; a lost one would take ACK_WAIT
FIRST_RESULT_WITHIN = 8.0


def test_first_task_enqueued_as_the_worker_starts_runs_at_once() -> None:
    """The README quick start on NATS, many times over with fresh streams: start a
    worker, enqueue at once, get the result well before ``ack_wait``."""
    support.require_nats()
    from omniq import OmniQ

    late: list[str] = []
    for i in range(20):
        prefix = support.new_prefix()
        try:
            oq = OmniQ(task_queue=f"{support.URL}?name_prefix={prefix}&ack_wait={ACK_WAIT}")

            @oq.task
            def add(x: int, y: int) -> int:
                return x + y

            with oq, oq.start_worker_sync(queues=["default"]):
                handle = add.enqueue_sync(i, 1)
                start = time.monotonic()
                try:
                    assert handle.result_sync(timeout=FIRST_RESULT_WITHIN) == i + 1
                except TimeoutError:
                    late.append(f"iteration {i} (prefix {prefix})")
                else:
                    took = time.monotonic() - start
                    assert took < FIRST_RESULT_WITHIN, f"iteration {i} took {took:.1f}s"
        finally:
            asyncio.run(support.drop_namespace(prefix))
    assert not late, (
        f"the first task should run within {FIRST_RESULT_WITHIN}s of being enqueued "
        f"(ack_wait={ACK_WAIT}s), but had no result in time in {len(late)} of 20 runs: "
        + ", ".join(late)
    )


# --- the mechanism, deterministically ------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    support.require_nats()
    p = support.new_prefix()
    yield p
    await support.drop_namespace(p)


async def _until(what: str, check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting until {what}"
        await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_message_dispatched_to_an_abandoned_long_poll_is_handed_back(prefix: str) -> None:
    """The server dispatches a task to a waiting long poll; before the client reads it,
    the poll's caller gives up. The task must be claimable again at once."""
    from omniq_nats import AsyncNATSQueue
    from omniq_nats._fetch import fetcher
    from omniq_nats._natspy import reader_transport

    worker = AsyncNATSQueue(support.URL, name_prefix=prefix, shared=False, ack_wait=ACK_WAIT)
    producer = AsyncNATSQueue(support.URL, name_prefix=prefix, shared=False, ack_wait=ACK_WAIT)
    async with worker, producer:
        st = await worker._state()
        await worker._claims.ensure_consumer(st, "default", 0)
        stream, consumer = worker.settings.tasks_stream_name, worker._claims.consumer("default", 0)
        js = (await producer._state()).conn.js  # the worker's reads will be paused

        async def waiting(n: int) -> bool:
            return bool((await js.consumer_info(stream, consumer)).num_waiting == n)

        async def dispatched() -> bool:
            info = await js.consumer_info(stream, consumer)
            return bool(info.num_ack_pending == 1 and info.num_waiting == 0)

        f = fetcher(st.conn)
        poll = asyncio.ensure_future(f.fetch(stream, consumer, 1, 10.0))
        await _until("the long poll waits on the server", lambda: waiting(1))
        reading = reader_transport(st.conn.nc)
        reading.pause_reading()
        try:
            await producer.enqueue(Task(func="noop", id="t-in-flight", args=(1,)))
            await _until("the server sent the task to the long poll", dispatched)
            poll.cancel()  # the caller gives up while the task is on its way
            with contextlib.suppress(asyncio.CancelledError):
                await poll
        finally:
            reading.resume_reading()
        start = time.monotonic()
        claimed = await worker.dequeue_many(["default"], 1, worker_id="w", wait=FIRST_RESULT_WITHIN)
        took = time.monotonic() - start
        assert [t.id for t in claimed] == ["t-in-flight"], (
            f"the task sent to the abandoned long poll should be claimable at once, but a "
            f"claim waiting {FIRST_RESULT_WITHIN}s got {[t.id for t in claimed]} "
            f"(ack_wait={ACK_WAIT}s)"
        )
        assert took < FIRST_RESULT_WITHIN
        assert f.lingering == 0, "the abandoned request's inbox should go once its batch came"
