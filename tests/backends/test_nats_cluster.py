"""The NATS backend on a 3-node JetStream cluster (own servers on 127.0.0.1, R3).

One cluster (:mod:`tests.backends.nats_cluster`) serves this module. The conformance
suite runs on it with ``replicas=3``; the other tests check what a cluster adds: the
``auto`` replica default, existing streams with other settings, consumers with the
stream's replica count, queue depth from the consumers. Fault tests (killing nodes)
are in ``test_nats_cluster_faults.py`` with a cluster of their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq.errors import ConfigurationError
from omniq.models import TaskStatus
from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
    eventually,
    make_task,
)
from tests.backends import test_nats_support as support
from tests.backends.nats_cluster import NatsCluster, nats_cluster

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with nats_cluster(Path(tmp_path_factory.mktemp("nats-cluster"))) as c:
        yield c


@pytest.fixture
async def prefix(cluster: NatsCluster) -> AsyncIterator[str]:
    p = support.new_prefix()
    yield p
    await support.drop_namespace(p, cluster.urls[0])


async def stream_info(cluster: NatsCluster, name: str) -> dict[str, Any]:
    """STREAM.INFO as the server sends it (config and cluster placement)."""
    import json

    import nats

    nc = await nats.connect(servers=cluster.urls)
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)
        data: dict[str, Any] = json.loads(reply.data)
        return data
    finally:
        await nc.close()


async def consumer_replicas(q: Any, queue: str) -> int:
    """The replica count of the queue's priority-0 consumer."""
    st = await q._state()
    info = await st.conn.js.consumer_info(
        q.settings.tasks_stream_name, q._claims.consumer(queue, 0)
    )
    return int(info.config.num_replicas or 0)


# --- the conformance suite on the cluster, R3 ----------------------------------------


def _factory(class_name: str) -> Any:
    @pytest.fixture
    async def make(
        self: Any, cluster: NatsCluster, prefix: str
    ) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        import omniq_nats

        cls = getattr(omniq_nats, class_name)
        made: list[Any] = []

        async def build() -> Any:
            component = cls(cluster.url, name_prefix=prefix, replicas=3, shared=False)
            await component.connect()
            made.append(component)
            return component

        yield build
        for component in made:
            await component.close()

    return make


class ClusterFixtures:
    make_task_queue = _factory("AsyncNATSQueue")
    make_result_storage = _factory("AsyncNATSResultStorage")
    make_event_storage = _factory("AsyncNATSEventStorage")
    make_schedule_storage = _factory("AsyncNATSScheduleStorage")

    @pytest.fixture
    def process_spec(self, cluster: NatsCluster, prefix: str) -> dict[str, Any]:
        return {
            kind: {
                "class": f"omniq_nats:{cls}",
                "url": cluster.url,
                "options": {"name_prefix": prefix, "replicas": 3},
            }
            for kind, cls in (
                ("task_queue", "AsyncNATSQueue"),
                ("result_storage", "AsyncNATSResultStorage"),
                ("event_storage", "AsyncNATSEventStorage"),
                ("schedule_storage", "AsyncNATSScheduleStorage"),
            )
        }

    @pytest.fixture
    def corrupt_task(self) -> Callable[[Any, str], Awaitable[None]]:
        async def corrupt(task_queue: Any, task_id: str) -> None:
            from omniq_nats._claim import task_key

            state = await task_queue._state()
            await state.bucket.put(task_key(task_id), b"\x00not a task record\xff")

        return corrupt


#: Left out of the default run (CI's time budget; ``OMNIQ_NATS_CLUSTER_FULL=1`` runs
#: them): the multi-process variants of claim and scheduler races whose in-process
#: twins run here (34 s and 19 s on the cluster), and the serializer round trips.
HEAVY = frozenset(
    {
        "test_exclusive_claim_across_processes",
        "test_three_scheduler_processes_fire_each_due_time_once",
        "test_round_trip_msgspec_types",
    }
)


def _light(suite: type) -> dict[str, Any]:
    """Class attributes hiding the suite's ``HEAVY`` tests (None is not collected)."""
    if os.environ.get("OMNIQ_NATS_CLUSTER_FULL") == "1":
        return {}
    return {name: None for name in dir(suite) if name in HEAVY}


class TestClusterQueue(TaskQueueConformance, ClusterFixtures):
    locals().update(_light(TaskQueueConformance))


class TestClusterResultStorage(ResultStorageConformance, ClusterFixtures):
    locals().update(_light(ResultStorageConformance))


class TestClusterEventStorage(EventStorageConformance, ClusterFixtures):
    pass


class TestClusterScheduleStorage(ScheduleStorageConformance, ClusterFixtures):
    locals().update(_light(ScheduleStorageConformance))


# --- what a cluster adds ---------------------------------------------------------------


async def test_auto_replicas_is_r3_on_a_cluster_of_three(cluster: NatsCluster, prefix: str) -> None:
    from omniq_nats import AsyncNATSQueue, AsyncNATSResultStorage

    async with (
        AsyncNATSQueue(cluster.url, name_prefix=prefix) as q,
        AsyncNATSResultStorage(cluster.url, name_prefix=prefix, results_replicas=1) as r,
    ):
        await q.enqueue(make_task(1))
        await r.get("nothing")
        tasks = await stream_info(cluster, f"{prefix}_OMNIQ_TASKS")
        assert tasks["config"]["num_replicas"] == 3, "auto replicas on 3 servers must be R3"
        assert len(tasks["cluster"]["replicas"]) == 2, tasks["cluster"]
        bucket = await stream_info(cluster, f"KV_{prefix}_omniq_tasks")
        assert bucket["config"]["num_replicas"] == 3
        results = await stream_info(cluster, f"KV_{prefix}_omniq_results")
        assert results["config"]["num_replicas"] == 1, "results_replicas=1 was asked for"
        st = await q._state()
        info = await st.conn.js.consumer_info(
            f"{prefix}_OMNIQ_TASKS", q._claims.consumer("default", 0)
        )
        assert info.config.num_replicas == 3, "the consumer must have the stream's replicas"


async def test_existing_r1_stream_with_replicas_3_warns_and_works(
    cluster: NatsCluster, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    from omniq_nats import AsyncNATSQueue

    first, second = make_task(1), make_task(2, queue="other")
    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=1) as q:
        await q.enqueue(first)
    caplog.set_level(logging.WARNING, "omniq.backends.nats")
    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=3, shared=False) as q:
        # before: "consumer config replica count exceeds parent stream (code 10126)"
        await q.enqueue(second)
        claimed = await q.dequeue_many(["default", "other"], 10, worker_id="w")
        assert sorted(t.id for t in claimed) == sorted([first.id, second.id])
        st = await q._state()
        info = await st.conn.js.consumer_info(
            f"{prefix}_OMNIQ_TASKS", q._claims.consumer("other", 0)
        )
        assert info.config.num_replicas == 1, "the consumer must follow the R1 stream"
    text = caplog.text
    assert f"{prefix}_OMNIQ_TASKS exists with replicas=1 (wanted 3)" in text, text
    assert "--replicas 3" in text, "the warning must name the fix"


async def test_existing_stream_mismatch_fails_with_strict_streams(
    cluster: NatsCluster, prefix: str
) -> None:
    from omniq_nats import AsyncNATSQueue

    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=1) as q:
        await q.enqueue(make_task(1))
    q = AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=3, strict_streams=True)
    with pytest.raises(ConfigurationError, match=r"replicas=1 \(wanted 3\)"):
        await q.connect()
    await q.close()


async def test_existing_r3_stream_with_auto_gets_r3_consumers(
    cluster: NatsCluster, prefix: str
) -> None:
    from omniq_nats import AsyncNATSQueue

    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=3) as q:
        await q.enqueue(make_task(1))
    # a consumer created by a component asking for R1 still follows the R3 stream
    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=1, shared=False) as q:
        await q.enqueue(make_task(2, queue="other"))
        st = await q._state()
        info = await st.conn.js.consumer_info(
            f"{prefix}_OMNIQ_TASKS", q._claims.consumer("other", 0)
        )
        assert info.config.num_replicas == 3


async def test_wrong_retention_fails_clearly(cluster: NatsCluster, prefix: str) -> None:
    import nats
    from nats.js import api

    from omniq_nats import AsyncNATSQueue

    nc = await nats.connect(cluster.urls[0])
    try:
        await nc.jetstream().add_stream(
            api.StreamConfig(name=f"{prefix}_OMNIQ_TASKS", subjects=[f"{prefix}.omniq.tasks.>"])
        )
    finally:
        await nc.close()
    q = AsyncNATSQueue(cluster.url, name_prefix=prefix)
    with pytest.raises(ConfigurationError, match="retention") as err:
        await q.connect()
    assert f"{prefix}_OMNIQ_TASKS" in str(err.value)
    await q.close()


async def test_depth_comes_from_the_consumers(cluster: NatsCluster, prefix: str) -> None:
    from omniq_nats import AsyncNATSQueue

    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=3) as q:

        async def depth_is(n: int, queue: str | None = None) -> bool:
            return await q.depth(queue) == n

        assert await q.depth() == 0
        await q.enqueue_many([make_task(i) for i in range(20)])
        await q.enqueue_many([make_task(i, queue="b", priority=5) for i in range(20, 25)])
        # the consumers' counts follow the stream a moment later (acks are one-way too)
        assert await eventually(lambda: depth_is(25)), "20 + 5 tasks enqueued"
        assert await depth_is(5, "b")
        claimed = await q.dequeue_many(["default"], 4, worker_id="w")
        assert await depth_is(25), "running tasks are still in the queue"
        assert await q.complete_many(claimed) == [True] * 4
        assert await eventually(lambda: depth_is(21)), "4 of 25 completed"
        assert await depth_is(16, "default")
        assert await q.count("b", TaskStatus.PENDING) == 5


async def test_end_to_end_with_a_worker_on_the_cluster(cluster: NatsCluster, prefix: str) -> None:
    from omniq import AsyncOmniQ

    component = {
        "type": "nats",
        "url": cluster.url,
        "options": {"name_prefix": prefix, "replicas": 3},
    }
    async with AsyncOmniQ(
        task_queue=dict(component), event_storage=dict(component), worker="async"
    ) as oq:

        @oq.task
        async def add(x: int, y: int) -> int:
            return x + y

        handles = [await add.enqueue(i, i) for i in range(50)]
        last = await add.options(depends_on=[h.id for h in handles[:5]], priority=5).enqueue(1, 1)
        async with oq.start_worker(queues=["default"], concurrency=8):
            assert [await h.result(timeout=30) for h in handles] == [2 * i for i in range(50)]
            assert await last.result(timeout=30) == 2
        assert await oq.task_queue.count(status=TaskStatus.SUCCESS) == 51
        assert await oq.task_queue.count(status=TaskStatus.PENDING) == 0


def test_cluster_options_from_url_and_the_auto_default(caplog: pytest.LogCaptureFixture) -> None:
    from omniq_nats._cluster import choose_replicas, cluster_size
    from omniq_nats._config import NATSSettings

    s = NATSSettings.from_url(
        "nats://a:1,b:2?replicas=auto&results_replicas=1&placement_tags=ssd,eu-1"
    )
    assert (s.replicas, s.results_replicas, s.placement_tags) == (None, 1, ("ssd", "eu-1"))
    assert NATSSettings.from_url("nats://a:1", replicas=3).replicas == 3
    with pytest.raises(ConfigurationError, match="replicas=7"):
        NATSSettings.from_url("nats://a:1?replicas=7")
    three = {"cluster": "c", "connect_urls": ["a:1", "b:2", "c:3"]}
    assert cluster_size({}) == 0 and cluster_size(three) == 3
    assert choose_replicas(s, None, 0, "tasks") == 1, "a lone server: R1"
    assert choose_replicas(s, None, 3, "tasks") == 3, "a cluster of 3: R3"
    caplog.set_level(logging.WARNING, "omniq.backends.nats")
    assert choose_replicas(s, None, 2, "tasks") == 1
    assert "reports only 2 server(s)" in caplog.text, "R1 on a cluster must be warned about"


async def test_r1_consumer_on_an_r3_stream_is_scaled_up(
    cluster: NatsCluster, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    from nats.js import api

    from omniq_nats import AsyncNATSQueue

    task = make_task(1, queue="old")
    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=3) as q:
        await q.enqueue(task)
        st = await q._state()
        name = q._claims.consumer("old", 0)
        # what an older OmniQ created with the default replicas=1 on an R3 stream
        await st.conn.js.delete_consumer(q.settings.tasks_stream_name, name)
        await st.conn.js.add_consumer(
            q.settings.tasks_stream_name,
            api.ConsumerConfig(
                name=name,
                durable_name=name,
                filter_subject=q._claims.subject("old", 0),
                ack_policy=api.AckPolicy.EXPLICIT,
                max_deliver=-1,
                max_ack_pending=-1,
                max_waiting=4096,
                num_replicas=1,
            ),
        )
        assert await consumer_replicas(q, "old") == 1
    caplog.set_level(logging.WARNING, "omniq.backends.nats")
    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, shared=False) as q:
        (claimed,) = await q.dequeue_many(["old"], 1, worker_id="w", wait=5)
        assert claimed.id == task.id
        assert await consumer_replicas(q, "old") == 3, "acks on an R1 consumer stay local"
    assert "scaling it to 3 replicas" in caplog.text


async def test_pending_count_right_after_enqueue_is_exact(
    cluster: NatsCluster, prefix: str
) -> None:
    from omniq_nats import AsyncNATSQueue

    async with AsyncNATSQueue(cluster.url, name_prefix=prefix, replicas=3) as q:
        for i in range(1, 21):  # a consumer's counts lag a publish: never a false 0
            await q.enqueue(make_task(i, queue="fresh"))
            assert await q.count("fresh", TaskStatus.PENDING) == i
        assert await q.count("empty", TaskStatus.PENDING) == 0
        assert await q.count(status=TaskStatus.RUNNING) == 0
