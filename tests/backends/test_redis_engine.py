"""OmniQ end to end on Redis: the engine-correctness tests of core with every component
on Redis, and the public API (priorities, delays, TTL, dependencies, cancel, retries,
schedules, retention) through a background worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, TaskStatus
from omniq.models import EventType
from tests.backends import test_redis_support as support
from tests.core.test_engine_correctness import (  # run here with the fixtures below
    test_arguments_and_results_arrive_as_annotated,
    test_big_ints_round_trip,
    test_cancelling_a_running_task_on_the_process_executor_kills_it,
    test_cancelling_a_running_thread_task_keeps_status_and_result_agreeing,
    test_depending_on_an_unknown_task_is_refused,
    test_process_executor_runs_tasks_with_custom_names,
    test_process_executor_timeout_covers_the_task_alone,
)

ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "test_arguments_and_results_arrive_as_annotated",
    "test_big_ints_round_trip",
    "test_cancelling_a_running_task_on_the_process_executor_kills_it",
    "test_cancelling_a_running_thread_task_keeps_status_and_result_agreeing",
    "test_depending_on_an_unknown_task_is_refused",
    "test_process_executor_runs_tasks_with_custom_names",
    "test_process_executor_timeout_covers_the_task_alone",
]


prefix = support.prefix


def _url(prefix: str) -> dict[str, Any]:
    return {"type": "redis", "url": support.URL, "options": {"prefix": prefix}}


@pytest.fixture
def app(prefix: str) -> Iterator[OmniQ]:
    with OmniQ(task_queue=_url(prefix), worker="async", max_workers=4) as oq:
        yield oq


@pytest.fixture
def process_app(prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[OmniQ]:
    monkeypatch.syspath_prepend(str(ROOT))  # spawned children import tests.integration.*
    with OmniQ(task_queue=_url(prefix), worker="process") as oq:
        yield oq


def test_every_component_is_redis_on_one_client(prefix: str) -> None:
    from omniq_redis import AsyncRedisEventStorage, AsyncRedisQueue, AsyncRedisResultStorage

    with OmniQ(task_queue=_url(prefix), event_storage=_url(prefix)) as oq:
        aoq = oq.async_
        assert isinstance(aoq.task_queue, AsyncRedisQueue)
        assert isinstance(aoq.result_storage, AsyncRedisResultStorage)
        assert isinstance(aoq.event_storage, AsyncRedisEventStorage)


def test_public_api_end_to_end(prefix: str) -> None:
    url = _url(prefix)
    with OmniQ(task_queue=url, event_storage=url, worker="thread", max_workers=4) as oq:
        order: list[str] = []
        attempts: list[int] = []

        @oq.task
        def record(tag: str) -> str:
            order.append(tag)
            return tag

        @oq.task(retries=2, retry_delay=0.05)
        def flaky() -> str:
            attempts.append(1)
            if len(attempts) < 3:
                raise ValueError("not yet")
            return "ok"

        @oq.task
        def boom() -> None:
            raise RuntimeError("boom")

        low = record.options(queue="low").enqueue_sync("low")
        high = [record.options(queue="high", priority=p).enqueue_sync(f"p{p}") for p in (1, 9)]
        late = record.options(queue="high", delay=0.5).enqueue_sync("late")
        gone = record.options(queue="high", ttl=0.05).enqueue_sync("gone")
        cancelled = record.options(queue="high", delay=30).enqueue_sync("cancelled")
        assert cancelled.cancel_sync()
        first = record.enqueue_sync("first")
        then = record.options(depends_on=[first.id]).enqueue_sync("then")
        bad = boom.enqueue_sync()
        skipped = record.options(depends_on=[bad.id]).enqueue_sync("skipped")
        retried = flaky.enqueue_sync()
        time.sleep(0.1)  # past the TTL before any worker runs
        with oq.start_worker_sync(queues=["high", "low", "default"], concurrency=1):
            assert [h.result_sync(timeout=30) for h in high] == ["p1", "p9"]
            assert low.result_sync(timeout=30) == "low"
            assert late.result_sync(timeout=30) == "late"
            assert then.result_sync(timeout=30) == "then"
            assert retried.result_sync(timeout=30) == "ok" and len(attempts) == 3
            assert bad.status_sync() is not None
            for _ in range(200):
                if skipped.status_sync() is TaskStatus.CANCELLED:
                    break
                time.sleep(0.05)
        assert order.index("p9") < order.index("p1") < order.index("low")
        assert gone.status_sync() is TaskStatus.EXPIRED and "gone" not in order
        assert cancelled.status_sync() is TaskStatus.CANCELLED and "cancelled" not in order
        assert bad.status_sync() is TaskStatus.FAILED
        assert skipped.status_sync() is TaskStatus.CANCELLED and "skipped" not in order
        events = oq.get_events_sync(task_id=retried.id)
        assert {EventType.ENQUEUED, EventType.RETRY, EventType.COMPLETE} <= {
            e.event_type for e in events
        }


def test_schedules_fire_through_the_worker(prefix: str) -> None:
    with OmniQ(task_queue=_url(prefix), worker="thread") as oq:
        fired: list[float] = []

        @oq.task
        def tick() -> None:
            fired.append(time.time())

        oq.schedule_sync(tick, interval=0.2)
        with oq.start_worker_sync(concurrency=2):
            deadline = time.monotonic() + 20
            while len(fired) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(fired) >= 3, f"the schedule fired {len(fired)} times"


def test_retention_prunes_results_events_and_finished_tasks(prefix: str) -> None:
    url = _url(prefix)
    with OmniQ(
        task_queue=url, event_storage=url, worker="async", result_ttl=1, event_retention=1
    ) as oq:

        @oq.task
        def f(x: int) -> int:
            return x

        with oq.start_worker_sync():
            handles = [f.enqueue_sync(i) for i in range(5)]
            assert [h.result_sync(timeout=30) for h in handles] == list(range(5))
        assert oq.get_events_sync(), "events were written"
        later = time.time() + 5  # past result_ttl and event_retention
        counts = oq.prune_sync(later)
        assert counts["results"] == 5 and counts["tasks"] == 5 and counts["events"] >= 15, counts
        assert oq.task_queue.count_sync() == 0
        assert oq.get_result_sync(handles[0].id) is None
        assert oq.get_events_sync() == []
        assert oq.prune_sync(later) == {"results": 0, "events": 0, "tasks": 0}
