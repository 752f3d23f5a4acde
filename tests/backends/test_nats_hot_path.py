"""NATS hot path: tickets fetched ahead of a busy worker's next claim, replies taken
straight from nats-py's reader, immediate retries, and scans that stream a bucket.

A worker back for more soon after its previous claim gets its next batch of work-queue
messages fetched while it runs the current one. Those are tickets only (the records stay
PENDING): the claim still decides, and tickets not claimed soon, or held when the
component closes, go back to the server at once instead of after ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from omniq.models import TaskStatus
from omniq.testing import make_task
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


def _queue(prefix: str) -> Any:
    from omniq_nats import AsyncNATSQueue

    # ack_wait far above the test's time: a ticket back in time was handed back
    return AsyncNATSQueue(support.URL, name_prefix=prefix, shared=False, ack_wait=60)


async def _two_claims(q: Any) -> list[Any]:
    """Two back-to-back claims of 10: the second one fetches the next 10 ahead."""
    first = await q.dequeue_many(["default"], 10, worker_id="w1")
    second = await q.dequeue_many(["default"], 10, worker_id="w1")
    st = await q._state()
    assert ("default", 0) in st.ahead
    await anyio.sleep(0.1)  # the fetch ahead is answered
    return [*first, *second]


async def test_next_claim_uses_the_tickets_fetched_ahead(prefix: str) -> None:
    async with _queue(prefix) as q:
        await q.enqueue_many([make_task(i) for i in range(30)])
        claimed = await _two_claims(q)
        third = await q.dequeue_many(["default"], 10, worker_id="w1")
        assert [t.args[0] for t in [*claimed, *third]] == list(range(30))  # FIFO
        assert all(t.status is TaskStatus.RUNNING for t in third)


async def test_tickets_fetched_ahead_are_handed_back_when_not_claimed(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import omniq_nats._claim

    monkeypatch.setattr(omniq_nats._claim, "AHEAD_MAX_AGE", 0.5)
    async with _queue(prefix) as q1, _queue(prefix) as q2:
        await q1.enqueue_many([make_task(i) for i in range(30)])
        claimed = await _two_claims(q1)
        # the rest is held by q1's fetch ahead, for a moment
        assert await q2.dequeue_many(["default"], 30, worker_id="w2") == []
        start = time.monotonic()
        rest = await q2.dequeue_many(["default"], 30, worker_id="w2", wait=10)
        assert time.monotonic() - start < 5  # handed back, not redelivered after ack_wait
        assert sorted(t.args[0] for t in rest) == list(range(20, 30))
        assert sorted(t.args[0] for t in claimed) == list(range(20))
        st = await q1._state()
        assert st.ahead == {}


async def test_closing_hands_back_the_tickets_fetched_ahead(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import omniq_nats._claim

    monkeypatch.setattr(omniq_nats._claim, "AHEAD_MAX_AGE", 30.0)  # only close returns them
    async with _queue(prefix) as q2:
        async with _queue(prefix) as q1:
            await q1.enqueue_many([make_task(i) for i in range(30)])
            await _two_claims(q1)
        start = time.monotonic()
        rest = await q2.dequeue_many(["default"], 30, worker_id="w2", wait=10)
        assert time.monotonic() - start < 5
        assert sorted(t.args[0] for t in rest) == list(range(20, 30))


async def test_a_ticket_fetched_ahead_still_goes_through_the_claim(prefix: str) -> None:
    async with _queue(prefix) as q:
        tasks = [make_task(i) for i in range(30)]
        await q.enqueue_many(tasks)
        await _two_claims(q)
        assert await q.cancel(tasks[20].id)  # its ticket is held ahead
        third = await q.dequeue_many(["default"], 10, worker_id="w1")
        assert [t.args[0] for t in third] == list(range(21, 30))
        assert await q.dequeue_many(["default"], 10, worker_id="w1", wait=0.5) == []


async def test_a_caller_that_claims_rarely_gets_no_fetch_ahead(prefix: str) -> None:
    import omniq_nats._claim

    async with _queue(prefix) as q:
        await q.enqueue_many([make_task(i) for i in range(30)])
        await q.dequeue_many(["default"], 10, worker_id="w1")
        await anyio.sleep(omniq_nats._claim.AHEAD_MAX_AGE)
        await q.dequeue_many(["default"], 10, worker_id="w1")
        st = await q._state()
        assert st.ahead == {}


async def test_tickets_fetched_ahead_beyond_a_smaller_claim_are_kept(prefix: str) -> None:
    async with _queue(prefix) as q:
        await q.enqueue_many([make_task(i) for i in range(30)])
        claimed = await _two_claims(q)
        fewer = await q.dequeue_many(["default"], 4, worker_id="w1")
        st = await q._state()
        assert len(st.ahead[("default", 0)].msgs) == 6  # the rest waits for the next claim
        rest = await q.dequeue_many(["default"], 10, worker_id="w1")
        assert [t.args[0] for t in [*claimed, *fewer, *rest]] == list(range(30))


# --- replies and pulls without a subscription callback ----------------------------------


async def test_write_acks_and_pulls_bypass_subscription_tasks(prefix: str) -> None:
    """Pipelined writes' acks and pulled messages reach us without nats-py's queue and
    task per subscription (most of the client's time per message otherwise)."""
    from omniq_nats._natspy import delivers_directly
    from omniq_nats._publish import publisher

    async with _queue(prefix) as q:
        await q.enqueue_many([make_task(i) for i in range(5)])
        st = await q._state()
        sub = publisher(st.conn)._sub
        assert sub is not None and delivers_directly(sub)
        seen: list[Any] = []
        original = st.conn.nc.subscribe

        async def subscribe(subject: str, **kw: Any) -> Any:
            made = await original(subject, **kw)
            seen.append(made)
            return made

        st.conn.nc.subscribe = subscribe
        try:
            claimed = await q.dequeue_many(["default"], 5, worker_id="w")
        finally:
            del st.conn.nc.subscribe
        assert len(claimed) == 5 and await q.complete_many(claimed) == [True] * 5
        assert seen and all(delivers_directly(s) for s in seen)


async def test_installed_nats_py_is_the_tested_one() -> None:
    """The driver internals in ``_natspy`` were tested with the pinned range only."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    from omniq_nats._natspy import TESTED_RANGE

    pyproject = Path(__file__).parents[2] / "omniq-backend-nats" / "pyproject.toml"
    deps = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    pin = next(r for r in deps if r.name == "nats-py")
    assert str(pin.specifier) == str(Requirement(f"nats-py{TESTED_RANGE}").specifier)
    assert importlib.metadata.version("nats-py") in pin.specifier


# --- retries ---------------------------------------------------------------------------


async def test_retry_due_now_is_claimable_by_the_next_pull_elsewhere(prefix: str) -> None:
    async with _queue(prefix) as q1, _queue(prefix) as q2:
        await q1.enqueue(make_task(1))
        claim = await q1.dequeue(["default"], worker_id="w1")
        assert claim is not None
        assert await q1.fail(claim, time.time(), error="handed back")
        again = await q2.dequeue(["default"], worker_id="w2")  # no wait: at once
        assert again is not None and again.id == claim.id and again.attempt == 2
        assert await q2.complete(again)
        assert await q1.dequeue(["default"], worker_id="w1", wait=0.5) is None


# --- scans ------------------------------------------------------------------------------


async def test_scan_sees_keys_rewritten_while_it_runs(prefix: str) -> None:
    """Keys rewritten during a scan (their old message deleted, a new one appended) are
    read with their new value; the scan neither misses them nor hangs (on 2.9 a
    ``no_wait`` pull can go unanswered once messages it counted were deleted)."""
    from omniq_nats._kv import Bucket
    from omniq_nats._queue import AsyncNATSQueue

    async with AsyncNATSQueue(support.URL, name_prefix=prefix) as q:
        st = await q._state()
        bucket = await Bucket.ensure(st.conn, f"{prefix}_scan")
        await bucket.put_many([(f"k{i}", b"old") for i in range(2000)])
        stop = asyncio.Event()

        async def rewrite() -> None:
            n = 0
            while not stop.is_set():
                await bucket.put_many([(f"k{(n + j) % 2000}", b"new") for j in range(50)])
                n += 50

        writer = asyncio.ensure_future(rewrite())
        try:
            for _ in range(5):
                start = time.monotonic()
                entries = await bucket.scan()
                assert time.monotonic() - start < 5
                assert sorted(e.key for e in entries) == sorted(f"k{i}" for i in range(2000))
        finally:
            stop.set()
            await writer
        final = {e.key: e.value for e in await bucket.scan()}
        assert len(final) == 2000 and set(final.values()) <= {b"old", b"new"}
        for e in await bucket.scan():
            current = await bucket.get(e.key)
            assert current is not None and current.revision == e.revision
