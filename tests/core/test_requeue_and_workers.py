"""Re-queueing ended tasks and the live-worker registry, through the app and a real
worker (the storage side of both is in the conformance suite)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, TaskStatus
from omniq.errors import TaskFailedError, TaskNotFinalError, TaskNotFoundError
from omniq.models import EventType

ATTEMPTS: dict[str, int] = {}


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OmniQ]:
    url: Any = (
        f"memory://requeue-{time.time_ns()}"
        if request.param == "memory"
        else f"sqlite:///{tmp_path / 'requeue.db'}"
    )
    oq = OmniQ(task_queue=url, event_storage=url, worker="async", max_workers=2)
    with oq:
        yield oq


def test_failed_task_requeued_runs_again_and_its_old_result_is_gone(app: OmniQ) -> None:
    @app.task(name="flaky")
    def flaky(key: str) -> str:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        if ATTEMPTS[key] == 1:
            raise ValueError("first run fails")
        return f"ok after {ATTEMPTS[key]}"

    key = f"k{time.time_ns()}"
    with app.start_worker_sync(queues=["default"]):
        handle = flaky.enqueue_sync(key)
        with pytest.raises(TaskFailedError, match="first run fails"):
            handle.result_sync(timeout=20)
        fresh = app.requeue_sync(handle.id)
        assert fresh.status is TaskStatus.PENDING and fresh.error is None
        assert handle.result_sync(timeout=20) == "ok after 2", "the re-queued run's result"
    kinds = [e.event_type for e in app.get_events_sync(task_id=handle.id)]
    assert EventType.REQUEUED in kinds, f"a requeued event is logged, got {kinds}"


def test_requeue_refuses_unknown_and_unfinished_tasks(app: OmniQ) -> None:
    @app.task(name="noop")
    def noop() -> None:
        return None

    with pytest.raises(TaskNotFoundError):
        app.requeue_sync("no-such-task")
    handle = noop.enqueue_sync()
    with pytest.raises(TaskNotFinalError, match="cancel it first or wait"):
        app.requeue_sync(handle.id)


def test_running_worker_is_listed_then_forgotten_when_it_stops(app: OmniQ) -> None:
    with app.start_worker_sync(queues=["high", "default"]) as worker:
        deadline = time.monotonic() + 20
        listed = app.list_workers_sync()
        while not listed and time.monotonic() < deadline:
            time.sleep(0.02)
            listed = app.list_workers_sync()
        assert [w.queues for w in listed] == [["high", "default"]], (
            f"the running worker should be listed with its queues, got {listed}"
        )
        info = listed[0]
        assert info.pid > 0 and info.host and info.is_live()
        assert info.id == worker.worker.id
    assert app.list_workers_sync() == [], "a worker that stopped cleanly is removed"


def test_paused_queue_is_not_claimed_until_resumed(app: OmniQ) -> None:
    @app.task(name="where")
    def where(tag: str) -> str:
        return tag

    app.pause_queue_sync("reports")
    assert app.paused_queues_sync() == {"reports"}
    held = where.options(queue="reports").enqueue_sync("report")
    with app.start_worker_sync(queues=["reports", "default"]):
        # the worker claims its queues in order: had "reports" not been paused, the
        # report task (enqueued first, first queue) would have been claimed no later
        done = where.enqueue_sync("mail")
        assert done.result_sync(timeout=20) == "mail"
        assert app.status_sync(held.id) is TaskStatus.PENDING, "a paused queue is not claimed"
        app.resume_queue_sync("reports")
        assert held.result_sync(timeout=20) == "report", "resumed: the task runs"
    assert app.paused_queues_sync() == set()
    kinds = [e.event_type for e in app.get_events_sync(limit=1000) if e.queue == "reports"]
    assert EventType.QUEUE_PAUSED in kinds and EventType.QUEUE_RESUMED in kinds, kinds
