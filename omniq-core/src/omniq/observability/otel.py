"""OpenTelemetry traces (extra ``omniq-core[otel]``): one trace from the producer to the
worker and on to the tasks that follow.

Enable it in every process that enqueues or works, with ``OMNIQ_PLUGINS=omniq.observability.otel``
(this module is the plugin), or in code with :func:`instrument`. Spans go to the tracer
provider configured with the OpenTelemetry SDK (the global one unless one is given).

* ``omniq_before_enqueue`` / ``omniq_after_enqueue``: a PRODUCER span
  ``omniq.enqueue <task>``, child of the current span, whose W3C trace context
  (``traceparent``/``tracestate``, through the global propagator) is written into
  ``task.metadata["otel"]``. It ends once the store accepted the task, so it covers the
  write; one whose write failed ends with an error after ``ENQUEUE_TIMEOUT`` seconds.
* ``omniq_task_started`` / ``omniq_task_finished`` (in the worker's process): a CONSUMER
  span ``omniq.run <task>`` whose parent is the context carried by the task, with the
  error recorded when the run fails. It is the current span while the task runs (a
  coroutine, or a sync function in the worker's threads), so tasks it enqueues continue
  the trace. ``omniq_task_interrupted`` ends the span of a run that ends without a
  result (claim lost, stopped at shutdown, abandoned) with status ERROR
  ``interrupted: <reason>``.
* A task enqueued without a current span continues the trace of the task it follows,
  when this process saw that task: an ``on_success``/``on_failure`` callback (its
  ``callback_of``) or a task that ``depends_on`` another.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from contextvars import Token
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "OpenTelemetry tracing needs opentelemetry-api: pip install 'omniq-core[otel]'"
    ) from e

from omniq.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from omniq.models import Task, TaskStatus
    from omniq.plugins import PluginManager
    from omniq.workers.worker import AsyncWorker

__all__ = ["METADATA_KEY", "TracingPlugin", "instrument", "uninstrument"]

#: The key of ``Task.metadata`` that carries the trace context.
METADATA_KEY = "otel"
#: Name of the plugin that :func:`instrument` registers.
PLUGIN_NAME = "omniq.otel"
#: Task ids remembered to continue the trace of callbacks and dependants.
REMEMBERED = 10_000
#: Seconds after which an enqueue span whose store write was never confirmed (the write
#: failed) ends, with status ERROR.
ENQUEUE_TIMEOUT = 300.0

SYSTEM = "omniq"


class TracingPlugin:
    """Spans around enqueue and execution; register one per plugin manager."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        # task id -> (producer span, monotonic start): enqueues waiting for the store
        self._sending: OrderedDict[str, tuple[trace.Span, float]] = OrderedDict()
        # (task id, attempt) -> (consumer span, token of its attachment)
        self._runs: dict[tuple[str, int], tuple[trace.Span, Token[otel_context.Context]]] = {}
        # task id -> the span context its follow-ups continue (run, else enqueue)
        self._seen: OrderedDict[str, trace.SpanContext] = OrderedDict()
        self._workers: list[AsyncWorker] = []  # the workers running now

    @property
    def tracer(self) -> trace.Tracer:
        """The ``omniq`` tracer (from the provider given, else the global one)."""
        if self._tracer is None:
            self._tracer = trace.get_tracer("omniq", tracer_provider=self._provider)
        return self._tracer

    def _remember(self, task_id: str, ctx: trace.SpanContext) -> None:
        seen = self._seen
        seen[task_id] = ctx
        seen.move_to_end(task_id)
        while len(seen) > REMEMBERED:
            seen.popitem(last=False)

    def _parent(self, task: Task) -> otel_context.Context | None:
        """The current context when a span is current, else the trace of the task this
        one follows (when known), else None (a new trace)."""
        if trace.get_current_span().get_span_context().is_valid:
            return None  # the current context
        follows = [task.metadata.get("callback_of"), *task.depends_on]
        for task_id in follows:
            ctx = self._seen.get(task_id) if isinstance(task_id, str) else None
            if ctx is not None:
                return trace.set_span_in_context(trace.NonRecordingSpan(ctx))
        return None

    @hookimpl
    def omniq_before_enqueue(self, task: Task) -> None:
        """A PRODUCER span; its context goes into the task's metadata. It ends in
        :meth:`omniq_after_enqueue`."""
        span = self.tracer.start_span(
            f"omniq.enqueue {task.func}",
            context=self._parent(task),
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "send",
                "messaging.destination.name": task.queue,
                "messaging.message.id": task.id,
                "omniq.task.name": task.func,
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        # a new dict: the tasks of one enqueue_many may share their (empty) metadata
        task.metadata = {**task.metadata, METADATA_KEY: carrier}
        self._remember(task.id, span.get_span_context())
        sending = self._sending
        now = time.monotonic()
        stale = sending.pop(task.id, None)  # the same id enqueued again
        if stale is not None:
            _end_error(stale[0], "enqueued again before the store confirmed it")
        # the oldest first: the enqueues whose write failed (no confirmation came)
        while sending and now - next(iter(sending.values()))[1] > ENQUEUE_TIMEOUT:
            _end_error(sending.popitem(last=False)[1][0], "the store never confirmed it")
        sending[task.id] = (span, now)

    @hookimpl
    def omniq_after_enqueue(self, tasks: list[Task], statuses: list[TaskStatus]) -> None:
        """End the PRODUCER spans of the tasks the store accepted, with the status each
        was stored with."""
        sending = self._sending
        for task, status in zip(tasks, statuses, strict=True):
            found = sending.pop(task.id, None)
            if found is not None:
                span = found[0]
                span.set_attribute("omniq.task.status", str(status.value))
                span.end()

    @hookimpl
    def omniq_task_started(self, task: Task) -> None:
        """A CONSUMER span, child of the context the task carries; made current."""
        carrier = task.metadata.get(METADATA_KEY)
        # from the carrier alone: no span left current in the runner by an earlier run
        parent = propagate.extract(carrier if isinstance(carrier, dict) else {})
        span = self.tracer.start_span(
            f"omniq.run {task.func}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": task.queue,
                "messaging.message.id": task.id,
                "omniq.task.name": task.func,
                "omniq.task.attempt": task.attempt,
            },
        )
        key = (task.id, task.attempt)
        stale = self._runs.pop(key, None)
        if stale is not None:
            _end_error(stale[0], "interrupted: run again before its first run ended")
        token = otel_context.attach(trace.set_span_in_context(span))
        self._runs[key] = (span, token)
        self._remember(task.id, span.get_span_context())

    @hookimpl
    def omniq_task_finished(self, task: Task, result: Any, error: BaseException | None) -> None:
        """End the run's span, with the error when it failed."""
        run = self._runs.pop((task.id, task.attempt), None)
        if run is None:
            return
        span, token = run
        if error is not None:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}"))
        span.end()
        otel_context.detach(token)

    @hookimpl
    def omniq_task_interrupted(self, task: Task, reason: str) -> None:
        """End the span of a run that ended without a result (a task interrupted before
        it started has none), with status ERROR ``interrupted: <reason>``. The span
        stays attached in the runner until its next run replaces it."""
        run = self._runs.pop((task.id, task.attempt), None)
        if run is not None:
            _end_error(run[0], f"interrupted: {reason}")

    @hookimpl
    def omniq_worker_startup(self, worker: AsyncWorker) -> None:
        """Note the worker (see :meth:`omniq_worker_shutdown`)."""
        self._workers.append(worker)

    @hookimpl
    def omniq_worker_shutdown(self, worker: AsyncWorker) -> None:
        """End the spans of runs no worker runs any longer and no hook ended: a worker
        cancelled without its shutdown (every other end of a run has its hook)."""
        if worker in self._workers:
            self._workers.remove(worker)
        live = {(t.id, t.attempt) for w in self._workers for t in w.running_tasks}
        for key in [k for k in self._runs if k not in live]:
            _end_error(self._runs.pop(key)[0], "interrupted: stopped")


def _end_error(span: trace.Span, description: str) -> None:
    span.set_status(trace.Status(trace.StatusCode.ERROR, description))
    span.end()


_default = TracingPlugin()


# The module is a plugin too (``OMNIQ_PLUGINS=omniq.observability.otel``): its hooks are
# those of a TracingPlugin on the global tracer provider.


@hookimpl
def omniq_before_enqueue(task: Task) -> None:
    """See :meth:`TracingPlugin.omniq_before_enqueue`."""
    _default.omniq_before_enqueue(task)


@hookimpl
def omniq_after_enqueue(tasks: list[Task], statuses: list[TaskStatus]) -> None:
    """See :meth:`TracingPlugin.omniq_after_enqueue`."""
    _default.omniq_after_enqueue(tasks, statuses)


@hookimpl
def omniq_task_started(task: Task) -> None:
    """See :meth:`TracingPlugin.omniq_task_started`."""
    _default.omniq_task_started(task)


@hookimpl
def omniq_task_finished(task: Task, result: Any, error: BaseException | None) -> None:
    """See :meth:`TracingPlugin.omniq_task_finished`."""
    _default.omniq_task_finished(task, result, error)


@hookimpl
def omniq_task_interrupted(task: Task, reason: str) -> None:
    """See :meth:`TracingPlugin.omniq_task_interrupted`."""
    _default.omniq_task_interrupted(task, reason)


@hookimpl
def omniq_worker_startup(worker: AsyncWorker) -> None:
    """See :meth:`TracingPlugin.omniq_worker_startup`."""
    _default.omniq_worker_startup(worker)


@hookimpl
def omniq_worker_shutdown(worker: AsyncWorker) -> None:
    """See :meth:`TracingPlugin.omniq_worker_shutdown`."""
    _default.omniq_worker_shutdown(worker)


def instrument(
    plugins: PluginManager | None = None, tracer_provider: trace.TracerProvider | None = None
) -> TracingPlugin:
    """Trace enqueues and runs through ``plugins`` (default: the process-wide plugin
    manager, which apps use unless given their own). Idempotent: an already registered
    tracing plugin is returned as it is."""
    if plugins is None:
        from omniq.plugins import get_plugin_manager

        plugins = get_plugin_manager()
    found = plugins.get_plugin(PLUGIN_NAME)
    if isinstance(found, TracingPlugin):
        return found
    if plugins.has_plugin(__name__):
        return _default  # loaded through OMNIQ_PLUGINS
    plugin = TracingPlugin(tracer_provider)
    plugins.register(plugin, name=PLUGIN_NAME)
    return plugin


def uninstrument(plugins: PluginManager | None = None) -> None:
    """Undo :func:`instrument`."""
    if plugins is None:
        from omniq.plugins import get_plugin_manager

        plugins = get_plugin_manager()
    if plugins.has_plugin(PLUGIN_NAME):
        plugins.unregister(name=PLUGIN_NAME)
