"""OmniQ end to end on NATS: the public API with every component on JetStream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from omniq.components import unique_components
from omniq.models import EventType, TaskStatus
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


async def test_enqueue_work_and_results_through_omniq(prefix: str) -> None:
    from omniq import AsyncOmniQ
    from omniq_nats import AsyncNATSQueue, AsyncNATSResultStorage

    component = {"type": "nats", "url": support.URL, "options": {"stream_prefix": prefix}}
    async with AsyncOmniQ(
        task_queue=dict(component), event_storage=dict(component), worker="async"
    ) as oq:
        assert isinstance(oq.task_queue, AsyncNATSQueue)
        assert isinstance(oq.result_storage, AsyncNATSResultStorage)
        components = unique_components(oq._components)
        loop_conns = {id(c._conns.get(next(iter(c._conns)))) for c in components}
        assert len(loop_conns) == 1, "components of one backend share one connection"

        @oq.task
        async def add(x: int, y: int) -> int:
            return x + y

        first = await add.enqueue(1, 2)
        second = await add.options(depends_on=[first.id], priority=5).enqueue(3, 4)
        assert await second.status() is TaskStatus.WAITING
        # a background worker, not drain(): burst mode can stop between a completion
        # and the release of its dependents (see the report on core's _idle check)
        async with oq.start_worker(queues=["default"], concurrency=4):
            assert await first.result(timeout=20) == 3
            assert await second.result(timeout=20) == 7
        events = await oq.get_events(task_id=first.id)
        assert {EventType.ENQUEUED, EventType.COMPLETE} <= {e.event_type for e in events}


async def test_drain_runs_batches_retries_and_failures(prefix: str) -> None:
    from omniq import AsyncOmniQ
    from omniq.errors import TaskFailedError

    component = {"type": "nats", "url": support.URL, "options": {"name_prefix": prefix}}
    async with AsyncOmniQ(task_queue=component, worker="async") as oq:
        calls: list[int] = []

        @oq.task
        def square(x: int) -> int:
            return x * x

        @oq.task(retries=2, retry_delay=0.01)
        def flaky(n: int) -> int:
            calls.append(n)
            if len(calls) < 3:
                raise ValueError("not yet")
            return n

        @oq.task
        def broken() -> None:
            raise RuntimeError("always")

        handles = await square.map([(i,) for i in range(50)])
        retried = await flaky.enqueue(7)
        failed = await broken.enqueue()
        await oq.drain()
        assert [await h.result(timeout=10) for h in handles] == [i * i for i in range(50)]
        assert await retried.result(timeout=10) == 7 and len(calls) == 3
        with pytest.raises(TaskFailedError, match="always"):
            await failed.result(timeout=10)
        stored = await oq.task_queue.get(retried.id)
        assert stored is not None and stored.attempt == 3 and stored.status is TaskStatus.SUCCESS


async def test_drain_runs_a_dependency_chain_to_the_end(prefix: str) -> None:
    """drain() must not return while finished tasks still release their dependents."""
    from omniq import AsyncOmniQ

    component = {"type": "nats", "url": support.URL, "options": {"stream_prefix": prefix}}
    async with AsyncOmniQ(task_queue=dict(component), worker="async") as oq:

        @oq.task
        async def step(n: int) -> int:
            return n

        handles = [await step.enqueue(0)]
        for i in range(1, 5):
            handles.append(await step.options(depends_on=[handles[-1]]).enqueue(i))
        await oq.drain()
        for h in handles:
            assert await h.status() is TaskStatus.SUCCESS
