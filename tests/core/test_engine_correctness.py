"""Documented features that used to fail silently (issue 14): types through durable
backends, big ints, plugin serializers, unknown dependencies, the process executor with
custom task names and its timeout, cancelling a running task."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from omniq import OmniQ, TaskCancelledError, TaskFailedError, TaskStatus
from omniq.errors import SerializationError, TaskNotFoundError
from omniq.plugins import get_plugin_manager, hookimpl
from omniq.serialization import manager as serialization
from tests.backends import test_nats_support as nats_support

ROOT = Path(__file__).resolve().parents[2]


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Box(msgspec.Struct):
    when: datetime.date
    size: decimal.Decimal


@pytest.fixture(params=["memory", "sqlite", "nats"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OmniQ]:
    if request.param == "memory":
        url: Any = f"memory://types-{time.time_ns()}"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'types.db'}"
    else:
        nats_support.require_nats()
        url = {
            "type": "nats",
            "url": nats_support.URL,
            "options": {"stream_prefix": nats_support.new_prefix()},
        }
    oq = OmniQ(task_queue=url, worker="async", max_workers=4)
    with oq:
        yield oq
        if request.param == "nats":
            from omniq.sync import run_sync

            run_sync(nats_support.drop_namespace, url["options"]["stream_prefix"])


def test_arguments_and_results_arrive_as_annotated(app: OmniQ) -> None:
    seen: dict[str, Any] = {}

    @app.task
    def typed(
        pair: tuple[int, int],
        tags: set[str],
        day: datetime.date,
        ident: uuid.UUID,
        amount: decimal.Decimal,
        colour: Colour,
        point: Point,
        *,
        box: Box,
    ) -> tuple[Point, datetime.date, Colour]:
        seen.update(
            pair=pair, tags=tags, day=day, ident=ident, amount=amount, colour=colour,
            point=point, box=box,
        )  # fmt: skip
        return point, day, colour

    ident = uuid.uuid4()
    today = datetime.date(2026, 12, 7)
    box = Box(when=today, size=decimal.Decimal("2.50"))
    with app.start_worker_sync():
        h = typed.enqueue_sync(
            (1, 2), {"a", "b"}, today, ident, decimal.Decimal("1.25"), Colour.RED,
            Point(3, 4), box=box,
        )  # fmt: skip
        value = h.result_sync(timeout=30)
    expected = {
        "pair": (1, 2), "tags": {"a", "b"}, "day": today, "ident": ident,
        "amount": decimal.Decimal("1.25"), "colour": Colour.RED, "point": Point(3, 4),
        "box": box,
    }  # fmt: skip
    for name, want in expected.items():
        got = seen[name]
        assert got == want and type(got) is type(want), (
            f"argument {name} arrived as {got!r} ({type(got).__name__}), expected {want!r}"
        )
    assert value == (Point(3, 4), today, Colour.RED), f"result came back as {value!r}"


def test_big_ints_round_trip(app: OmniQ) -> None:
    @app.task
    def double(n: int) -> int:
        return 2 * n

    with app.start_worker_sync():
        assert double.enqueue_sync(2**70).result_sync(timeout=30) == 2**71
        assert double.enqueue_sync(-(2**90)).result_sync(timeout=30) == -(2**91)


def test_memory_refuses_what_a_durable_backend_refuses() -> None:
    with OmniQ(task_queue="memory://") as oq:

        @oq.task
        def f(x: Any) -> Any:
            return x

        serialization.set_default_manager(None)
        with pytest.raises(SerializationError, match="OMNIQ_SECRET_KEY"):
            f.enqueue_sync(lambda: 1)


def test_plugin_serializer_is_used_and_unknown_names_refused(tmp_path: Path) -> None:
    calls: list[str] = []

    class Reversed:
        name = "rev"

        def dumps(self, value: object) -> bytes:
            calls.append("dumps")
            return json.dumps(value).encode()[::-1]

        def loads(self, data: bytes) -> object:
            calls.append("loads")
            return json.loads(data[::-1])

    class Plugin:
        @hookimpl
        def omniq_serializers(self) -> list[object]:
            return [Reversed()]

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    serialization.set_default_manager(None)
    try:
        with OmniQ(task_queue=f"sqlite:///{tmp_path / 'ser.db'}", worker="async") as oq:

            @oq.task
            def echo(value: dict[str, int]) -> dict[str, int]:
                return value

            with oq.start_worker_sync():
                h = echo.options(serializer="rev").enqueue_sync({"a": 1})
                assert h.result_sync(timeout=30) == {"a": 1}
            assert calls.count("dumps") >= 1 and calls.count("loads") >= 1, (
                f"the chosen plugin serializer was not used: {calls}"
            )
            with pytest.raises(SerializationError, match=r"unknown serializer 'nope'.*rev"):
                echo.options(serializer="nope").enqueue_sync({"a": 1})
    finally:
        pm.unregister(plugin)
        serialization.set_default_manager(None)


def test_depending_on_an_unknown_task_is_refused(app: OmniQ) -> None:
    @app.task
    def f() -> int:
        return 1

    with pytest.raises(TaskNotFoundError, match="does not exist"):
        f.options(depends_on=["no-such-task"]).enqueue_sync()
    assert app.task_queue.count_sync() == 0, "the refused task must not be stored"
    first = f.enqueue_sync()
    second = f.options(depends_on=[first]).enqueue_sync()
    assert second.status_sync() is TaskStatus.WAITING


@pytest.fixture
def process_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OmniQ]:
    monkeypatch.syspath_prepend(str(ROOT))  # spawned children import tests.integration.*
    oq = OmniQ(task_queue=f"sqlite:///{tmp_path / 'proc.db'}", worker="process")
    with oq:
        yield oq


def test_process_executor_runs_tasks_with_custom_names(process_app: OmniQ) -> None:
    from tests.integration import correctness_app as mod

    add = process_app.task(name="e2e.add")(mod.add)
    with process_app.start_worker_sync(concurrency=2):
        assert add.enqueue_sync(2, 3).result_sync(timeout=60) == 5
        assert process_app.enqueue_sync("e2e.add", 4, 5).result_sync(timeout=60) == 9


def test_process_executor_timeout_covers_the_task_alone(process_app: OmniQ) -> None:
    from tests.integration import correctness_app as mod

    slow = process_app.task(name="slow")(mod.sleep_then_mark)
    quick = process_app.task(name="quick")(mod.quick)
    with process_app.start_worker_sync(concurrency=1, prefetch=0):
        stuck = slow.options(timeout=1).enqueue_sync(60, "/nonexistent/marker")
        # behind the killed child: each of these starts in a fresh child, whose
        # start-up must not count against their 1 s timeout
        behind = [quick.options(timeout=1).enqueue_sync(i) for i in range(3)]
        with pytest.raises(TaskFailedError, match="TaskTimeoutError"):
            stuck.result_sync(timeout=60)
        assert [h.result_sync(timeout=60) for h in behind] == [0, 1, 2]


def test_cancelling_a_running_task_on_the_process_executor_kills_it(
    process_app: OmniQ, tmp_path: Path
) -> None:
    from tests.integration import correctness_app as mod

    slow = process_app.task(name="slow")(mod.pid_then_sleep)
    marker, pid_file = tmp_path / "marker", tmp_path / "pid"
    with process_app.start_worker_sync(concurrency=1, heartbeat_interval=0.1):
        h = slow.enqueue_sync(str(pid_file), 60, str(marker))
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the task never started in a child"
            time.sleep(0.02)
        pid = int(pid_file.read_text())
        assert h.cancel_sync()
        with pytest.raises(TaskCancelledError):
            h.result_sync(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, f"child {pid} still runs the cancelled task"
            time.sleep(0.02)
    assert not marker.exists(), "a cancelled task's child process ran to the end"
    assert h.status_sync() is TaskStatus.CANCELLED
    res = process_app.get_result_sync(h.id)
    assert res is not None and res.status is TaskStatus.CANCELLED, (
        f"status CANCELLED but the stored result says {res!r}"
    )


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed child not yet reaped is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_cancelling_a_running_thread_task_keeps_status_and_result_agreeing(
    tmp_path: Path,
) -> None:
    import threading

    release = threading.Event()
    running = threading.Event()
    with OmniQ(task_queue=f"sqlite:///{tmp_path / 't.db'}", worker="thread") as oq:

        @oq.task
        def blocking() -> str:
            running.set()
            release.wait(30)
            return "finished anyway"

        with oq.start_worker_sync(concurrency=1, heartbeat_interval=0.05):
            h = blocking.enqueue_sync()
            assert running.wait(30), "the task never started"
            assert h.cancel_sync()
            release.set()  # the thread cannot be stopped: it returns a value
            with pytest.raises(TaskCancelledError):
                h.result_sync(timeout=30)
        assert h.status_sync() is TaskStatus.CANCELLED
        res = oq.get_result_sync(h.id)
        assert res is not None and res.status is TaskStatus.CANCELLED, (
            f"status CANCELLED but the stored result says {res!r}"
        )


@pytest.mark.anyio
async def test_seed_names_work_on_every_component(tmp_path: Path) -> None:
    from omniq.models import EventType, Schedule, Task, TaskEvent
    from omniq_sqlite import SQLiteBackend

    async with SQLiteBackend(f"sqlite:///{tmp_path / 'seed.db'}") as backend:
        queue = backend.task_queue
        await queue.enqueue(Task(id="t1", func="my_function"))
        assert [t.id for t in await queue.list_tasks()] == ["t1"]
        claimed = await queue.dequeue(["default"])  # no worker id: a default one
        assert claimed is not None and claimed.worker_id, "a claim needs a worker id"

        await backend.event_storage.log_event(
            TaskEvent(task_id="t1", event_type=EventType.COMPLETE)
        )
        assert [e.task_id for e in await backend.event_storage.query()] == ["t1"]

        schedule = Schedule.from_cron(
            cron_expression="*/5 * * * *", func="scheduled_task", args=("a",),
            queue_name="scheduled", start_at=time.time() - 3600,
        )  # fmt: skip
        assert schedule.cron == "*/5 * * * *" and schedule.queue == "scheduled"
        await backend.schedule_storage.save_schedule(schedule)
        assert [s.id for s in await backend.schedule_storage.list_schedules()] == [schedule.id]
        ready = await backend.schedule_storage.get_ready_schedules()
        assert [s.id for s in ready] == [schedule.id], "a schedule due an hour ago is ready"
        # reading does not claim: the scheduler still gets the due time exactly once
        assert len(await backend.schedule_storage.claim_due(time.time())) == 1
        assert await backend.result_storage.list_results() == []


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_retention_prunes_results_events_and_finished_tasks(
    backend: str, tmp_path: Path
) -> None:
    url = f"memory://prune-{time.time_ns()}" if backend == "memory" else (
        f"sqlite:///{tmp_path / 'prune.db'}"
    )
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
        assert counts["results"] == 5 and counts["tasks"] == 5 and counts["events"] >= 15, (
            f"expected every result, finished task and event pruned, got {counts}"
        )
        assert oq.task_queue.count_sync() == 0
        assert oq.get_result_sync(handles[0].id) is None
        assert oq.get_events_sync() == []
        assert oq.prune_sync(later) == {"results": 0, "events": 0, "tasks": 0}
