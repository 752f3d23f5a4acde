"""OpenTelemetry traces: the span of a task's run in the worker continues the trace of
its enqueue, and the tasks that follow it (enqueued from its body, callbacks,
dependants) continue the same trace. Real workers on SQLite; spans go to an in-memory
exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import from_thread
from anyio.lowlevel import current_token
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from omniq import AsyncOmniQ
from omniq.errors import TaskFailedError
from omniq.observability import otel
from omniq.observability.otel import METADATA_KEY, TracingPlugin, instrument, uninstrument
from omniq.plugins import PluginManager

pytestmark = pytest.mark.anyio


class Traced:
    """An app on SQLite with tracing on its own plugin manager, and the spans."""

    def __init__(
        self,
        oq: AsyncOmniQ,
        exporter: InMemorySpanExporter,
        provider: TracerProvider,
        plugin: TracingPlugin,
    ) -> None:
        self.oq = oq
        self.exporter = exporter
        self.tracer = trace.get_tracer("test", tracer_provider=provider)
        self.plugin = plugin

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    async def wait_span(self, name: str, timeout: float = 60) -> ReadableSpan:
        """The one finished span named ``name``, once it is exported."""
        deadline = time.monotonic() + timeout
        while not (found := self.spans(name)):
            assert time.monotonic() < deadline, f"span {name!r} was never exported"
            await anyio.sleep(0.02)
        assert len(found) == 1, f"one span {name!r}, got {len(found)}"
        return found[0]


def _traced(url: str, worker: str) -> AsyncIterator[Traced]:
    pm = PluginManager()
    pm.load_plugins({})  # backends from entry points; nothing from the environment
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plugin = instrument(pm, tracer_provider=provider)

    async def app() -> AsyncIterator[Traced]:
        oq = AsyncOmniQ(task_queue=url, plugins=pm, worker=worker)
        async with oq:
            yield Traced(oq, exporter, provider, plugin)
        uninstrument(pm)

    return app()


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[Traced]:
    async for t in _traced(f"sqlite:///{tmp_path / 't.db'}", "async"):
        yield t


@pytest.fixture(params=["memory", "sqlite"])
async def traced_threads(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Traced]:
    """Tracing with the thread executor, on both backends."""
    memory = f"memory://otel-{tmp_path.name}"
    url = memory if request.param == "memory" else f"sqlite:///{tmp_path / 'x.db'}"
    async for t in _traced(url, "thread"):
        yield t


def _check_continues(child: ReadableSpan, parent: ReadableSpan, what: str) -> None:
    assert child.context is not None and parent.context is not None
    assert child.context.trace_id == parent.context.trace_id, f"{what}: one trace"
    assert child.parent is not None and child.parent.span_id == parent.context.span_id, (
        f"{what}: {child.name} should be the child of {parent.name}"
    )


async def test_the_worker_span_continues_the_producer_trace(traced: Traced) -> None:
    oq = traced.oq

    @oq.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    handle = await add.enqueue(2, 3)
    stored = await oq.get_task(handle.id)
    assert stored is not None and "traceparent" in stored.metadata[METADATA_KEY], (
        "the W3C trace context travels in the stored task's metadata"
    )
    async with oq.start_worker(["default"]):
        assert await handle.result(timeout=60) == 5
        run = await traced.wait_span("omniq.run add")
    enqueue = traced.spans("omniq.enqueue add")
    assert len(enqueue) == 1, f"one producer span, got {enqueue}"
    producer = enqueue[0]
    assert producer.kind is SpanKind.PRODUCER and producer.parent is None, "a new trace"
    assert (producer.attributes or {}).get("omniq.task.status") == "pending", (
        "the producer span ends once the store accepted the task, with its stored status"
    )
    assert run.kind is SpanKind.CONSUMER
    _check_continues(run, producer, "producer -> worker")
    attrs = dict(run.attributes or {})
    assert attrs["messaging.system"] == "omniq"
    assert attrs["messaging.destination.name"] == "default"
    assert attrs["messaging.message.id"] == handle.id
    assert attrs["omniq.task.attempt"] == 1
    assert run.status.status_code is StatusCode.UNSET, "a successful run is no error"


async def test_each_task_of_a_batch_carries_its_own_context(traced: Traced) -> None:
    oq = traced.oq

    @oq.task(name="item")
    async def item(i: int) -> int:
        return i

    handles = await item.map(range(3))  # one batch: the tasks are copies of the first
    async with oq.start_worker(["default"]):
        assert [await h.result(timeout=60) for h in handles] == [0, 1, 2]
        deadline = time.monotonic() + 60
        while len(traced.spans("omniq.run item")) < 3:
            assert time.monotonic() < deadline, "three run spans"
            await anyio.sleep(0.02)
    producers = {
        (s.attributes or {})["messaging.message.id"]: s for s in traced.spans("omniq.enqueue item")
    }
    for run in traced.spans("omniq.run item"):
        task_id = (run.attributes or {})["messaging.message.id"]
        _check_continues(run, producers[task_id], f"task {task_id} of the batch")


async def test_enqueue_inside_a_span_joins_its_trace(traced: Traced) -> None:
    oq = traced.oq

    @oq.task(name="noop")
    async def noop() -> None:
        return None

    with traced.tracer.start_as_current_span("request") as request:
        handle = await noop.enqueue()
    async with oq.start_worker(["default"]):
        await handle.result(timeout=60)
        run = await traced.wait_span("omniq.run noop")
    producer = traced.spans("omniq.enqueue noop")[0]
    assert producer.parent is not None and producer.parent.span_id == (
        request.get_span_context().span_id
    ), "the enqueue span is a child of the caller's span"
    _check_continues(run, producer, "request -> worker")


async def test_tasks_that_follow_continue_the_trace(traced: Traced) -> None:
    oq = traced.oq

    @oq.task(name="child")
    async def child(x: int) -> int:
        return x * 10

    @oq.task(name="callback")
    async def callback(value: int) -> None:
        return None

    @oq.task(name="after")
    async def after() -> None:
        return None

    @oq.task(name="parent")
    async def parent(x: int) -> int:
        await child.enqueue(x)  # from the task's body: the run is the current span
        return x

    first = await parent.options(on_success=callback).enqueue(4)
    await after.options(depends_on=[first]).enqueue()  # enqueued with no span current
    async with oq.start_worker(["default"]):
        assert await first.result(timeout=60) == 4
        runs = {name: await traced.wait_span(f"omniq.run {name}") for name in
                ("parent", "child", "callback", "after")}  # fmt: skip
    enqueues = {name: traced.spans(f"omniq.enqueue {name}")[0] for name in runs}
    _check_continues(runs["parent"], enqueues["parent"], "producer -> worker")
    _check_continues(enqueues["child"], runs["parent"], "enqueued from the task's body")
    _check_continues(runs["child"], enqueues["child"], "the child's run")
    _check_continues(enqueues["callback"], runs["parent"], "on_success callback")
    _check_continues(runs["callback"], enqueues["callback"], "the callback's run")
    _check_continues(enqueues["after"], enqueues["parent"], "a dependant")
    _check_continues(runs["after"], enqueues["after"], "the dependant's run")


async def test_a_failed_run_records_the_error(traced: Traced) -> None:
    oq = traced.oq

    @oq.task(name="boom")
    async def boom() -> None:
        raise ValueError("boom!")

    handle = await boom.enqueue()
    async with oq.start_worker(["default"]):
        with pytest.raises(TaskFailedError, match="boom!"):
            await handle.result(timeout=60)
        run = await traced.wait_span("omniq.run boom")
    assert run.status.status_code is StatusCode.ERROR, "a failed run is an error span"
    kinds = [(e.name, (e.attributes or {}).get("exception.message")) for e in run.events]
    assert ("exception", "boom!") in kinds, f"the exception is recorded, got {kinds}"


async def test_a_run_stopped_at_shutdown_ends_its_span(traced: Traced) -> None:
    oq = traced.oq

    @oq.task(name="sleepy")
    async def sleepy() -> None:
        await anyio.sleep(3600)

    handle = await sleepy.enqueue()
    worker = await oq.start_worker(["default"], shutdown_grace=0.05)
    try:
        with anyio.fail_after(60):
            while not worker.worker.running_tasks:
                await anyio.sleep(0.02)
    finally:
        await worker.stop()
    run = await traced.wait_span("omniq.run sleepy")
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "interrupted: stopped", run.status.description
    assert run.attributes is not None and run.attributes["messaging.message.id"] == handle.id


async def test_a_run_whose_claim_is_lost_ends_its_span(traced: Traced) -> None:
    oq = traced.oq

    @oq.task(name="sleepy")
    async def sleepy() -> None:
        await anyio.sleep(3600)

    handle = await sleepy.enqueue()
    async with oq.start_worker(["default"], lease=5, heartbeat_interval=0.05) as worker:
        with anyio.fail_after(60):
            while not worker.worker.running_tasks:
                await anyio.sleep(0.01)
        assert await oq.cancel(handle.id), "a running task can be cancelled"
        run = await traced.wait_span("omniq.run sleepy")  # before the worker stops
    assert run.status.status_code is StatusCode.ERROR, "an interrupted run is an error span"
    assert run.status.description == "interrupted: claim_lost", run.status.description


async def test_a_sync_task_in_a_thread_continues_the_trace(traced_threads: Traced) -> None:
    """The run's span is current in the thread running a sync task: a task it enqueues
    is a child of the run."""
    traced = traced_threads
    oq = traced.oq
    token = current_token()

    @oq.task(name="leaf")
    async def leaf(x: int) -> int:
        return x

    @oq.task(name="branch")
    def branch(x: int) -> str:
        current = trace.get_current_span().get_span_context()
        assert current.is_valid, "the run's span is current in the task's thread"
        child = from_thread.run(leaf.enqueue, x, token=token)
        return child.id

    handle = await branch.enqueue(3)
    async with oq.start_worker(["default"]):
        child_id = await handle.result(timeout=60)
        assert await oq.wait_result(child_id, timeout=60) is not None
        runs = {name: await traced.wait_span(f"omniq.run {name}") for name in ("branch", "leaf")}
    [child_enqueue] = traced.spans("omniq.enqueue leaf")
    _check_continues(child_enqueue, runs["branch"], "enqueued from a sync task in a thread")
    _check_continues(runs["leaf"], child_enqueue, "the child's run")


async def test_an_unconfirmed_enqueue_span_ends_with_an_error(
    traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer span whose store write never succeeded ends once it is too old."""
    oq = traced.oq

    @oq.task(name="lost")
    async def lost() -> None: ...

    async def refuse(task: Any) -> Any:
        raise ConnectionError("store down")

    monkeypatch.setattr(oq.task_queue, "enqueue", refuse)
    with pytest.raises(ConnectionError):
        await lost.enqueue()
    assert not traced.spans("omniq.enqueue lost"), "not ended before the write"
    monkeypatch.undo()  # the store works again; the next enqueue ends the old span
    monkeypatch.setattr(otel, "ENQUEUE_TIMEOUT", -1.0)

    @oq.task(name="found")
    async def found() -> None: ...

    await found.enqueue()
    [failed] = traced.spans("omniq.enqueue lost")
    assert failed.status.status_code is StatusCode.ERROR, "an unconfirmed enqueue is an error"
    assert failed.status.description == "the store never confirmed it"
    assert traced.spans("omniq.enqueue found"), "a confirmed enqueue ends normally"


# --- producer and worker in two processes, enabled with OMNIQ_PLUGINS -----------------------

PROCESS = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    from omniq import OmniQ

    oq = OmniQ(task_queue="sqlite:///" + sys.argv[2], worker="async")

    @oq.task(name="ping")
    async def ping() -> str:
        return "pong"

    with oq:
        if sys.argv[1] == "produce":
            ping.enqueue_sync()
        else:
            oq.run_worker_sync(burst=True)
    print(json.dumps([
        {"name": s.name, "trace": s.context.trace_id, "span": s.context.span_id,
         "parent": s.parent.span_id if s.parent else None}
        for s in exporter.get_finished_spans()
    ]))
    """
)


def _run(tmp_path: Path, role: str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["OMNIQ_PLUGINS"] = "omniq.observability.otel"
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, role, str(tmp_path / "x.db")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return spans


def test_one_trace_across_producer_and_worker_processes(tmp_path: Path) -> None:
    produced = _run(tmp_path, "produce")
    worked = _run(tmp_path, "work")
    [producer] = [s for s in produced if s["name"] == "omniq.enqueue ping"]
    [run] = [s for s in worked if s["name"] == "omniq.run ping"]
    assert run["trace"] == producer["trace"], "the worker's span is in the producer's trace"
    assert run["parent"] == producer["span"], "the worker's span is the producer span's child"
