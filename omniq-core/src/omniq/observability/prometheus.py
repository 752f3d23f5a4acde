"""Prometheus metrics from a worker (extra ``omniq-core[prometheus]``).

``omniq worker --metrics-port PORT`` (or :func:`serve_metrics`) registers a
:class:`WorkerMetrics` plugin on the app's plugin manager and serves its own
``CollectorRegistry`` over HTTP. What it counts:

* final states and retries from the lifecycle events (``omniq_on_event``): the worker
  emits them only once the store accepted the write, so they match the stored outcome;
* run durations from ``omniq_task_started`` / ``omniq_task_finished`` (in the worker's
  own process, whatever the executor);
* claims that ended without a result (claim lost, handed back or stopped at shutdown,
  abandoned) from ``omniq_task_interrupted``, as the worker reports them;
* running tasks from the worker's own list, at scrape time;
* queue depth by status, read with the storage's ``count`` at scrape time (at most once
  per ``depth_interval`` seconds), never per task.

``prometheus_client`` is imported only here, when metrics are enabled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from omniq.errors import ConfigurationError
from omniq.models import EventType, Task, TaskEvent, TaskStatus
from omniq.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from omniq.plugins import PluginManager
    from omniq.workers.worker import AsyncWorker

__all__ = ["DEFAULT_HOST", "DEPTH_STATUSES", "MetricsServer", "WorkerMetrics", "serve_metrics"]

log = logging.getLogger("omniq.metrics")

#: Where ``/metrics`` listens unless told otherwise (never every interface by default).
DEFAULT_HOST = "127.0.0.1"
#: The statuses of the queue depth gauge (the tasks still to run, or running).
DEPTH_STATUSES: tuple[TaskStatus, ...] = (
    TaskStatus.PENDING,
    TaskStatus.WAITING,
    TaskStatus.RUNNING,
)
#: Buckets of the run duration histogram, seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: Final states counted, by the event that records them.
FINAL_STATES = {
    EventType.COMPLETE: "success",
    EventType.ERROR: "failed",
    EventType.CANCELLED: "cancelled",
    EventType.EXPIRED: "expired",
}
EXTRA = "pip install 'omniq-core[prometheus]'"


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as e:
        raise ConfigurationError(
            f"Prometheus metrics need the prometheus-client package: {EXTRA} ({e})"
        ) from e
    return prometheus_client


class WorkerMetrics:
    """The metrics plugin of one worker, on its own ``CollectorRegistry``.

    Register it on the app's plugin manager before the worker starts; the first worker
    that starts with it is the one whose running tasks and queues it reports.
    """

    def __init__(
        self, registry: Any = None, *, depth_interval: float = 1.0, read_timeout: float = 5.0
    ) -> None:
        pc = _client()
        self.registry = pc.CollectorRegistry() if registry is None else registry
        self.depth_interval = depth_interval
        self.read_timeout = read_timeout
        reg = self.registry
        self.finished = pc.Counter(
            "omniq_tasks_finished",
            "Tasks that reached a final state, by queue and state "
            "(success, failed, cancelled, expired).",
            ["queue", "state"],
            registry=reg,
        )
        self.retries = pc.Counter(
            "omniq_task_retries",
            "Failed runs that were scheduled to run again, by queue.",
            ["queue"],
            registry=reg,
        )
        self.interrupted = pc.Counter(
            "omniq_task_runs_interrupted",
            "Claimed tasks that ended without a result of this worker, by queue and "
            "reason: claim_lost (cancelled, or the lease lapsed), handed_back (claimed, "
            "not started, given back at shutdown), stopped (running, stopped at "
            "shutdown), abandoned (a thread still running at shutdown).",
            ["queue", "reason"],
            registry=reg,
        )
        self.duration = pc.Histogram(
            "omniq_task_duration_seconds",
            "Run time of the task function, by queue and outcome (success, error).",
            ["queue", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        # (task id, attempt) -> (queue, perf_counter at start): the runs in progress
        self._runs: dict[tuple[str, int], tuple[str, float]] = {}
        self._worker: AsyncWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._depth: dict[tuple[str, str], int] = {}
        self._depth_at = float("-inf")
        reg.register(_LiveCollector(self))

    # --- hooks -----------------------------------------------------------------------------

    @hookimpl
    def omniq_worker_startup(self, worker: AsyncWorker) -> None:
        """Follow this worker (the first one to start)."""
        if self._worker is None:
            self._worker = worker
            self._loop = asyncio.get_running_loop()

    @hookimpl
    def omniq_worker_shutdown(self, worker: AsyncWorker) -> None:
        """Stop reading the worker's queues; forget the runs it left without a hook (a
        worker cancelled without its shutdown)."""
        if worker is self._worker:
            self._runs.clear()
            self._worker = self._loop = None
            self._depth = {}

    @hookimpl
    def omniq_on_event(self, event: TaskEvent) -> None:
        """Count final states and retries."""
        kind = event.event_type
        if kind is EventType.RETRY:
            self.retries.labels(event.queue or "").inc()
        elif (state := FINAL_STATES.get(kind)) is not None:
            self.finished.labels(event.queue or "", state).inc()

    @hookimpl
    def omniq_task_started(self, task: Task) -> None:
        """Start timing the run."""
        self._runs[(task.id, task.attempt)] = (task.queue, time.perf_counter())

    @hookimpl
    def omniq_task_finished(self, task: Task, result: Any, error: BaseException | None) -> None:
        """Record the run's duration."""
        run = self._runs.pop((task.id, task.attempt), None)
        if run is not None:
            outcome = "success" if error is None else "error"
            self.duration.labels(run[0], outcome).observe(time.perf_counter() - run[1])

    @hookimpl
    def omniq_task_interrupted(self, task: Task, reason: str) -> None:
        """Count a claim that ended without a result; its run (if any) is not timed."""
        self._runs.pop((task.id, task.attempt), None)
        self.interrupted.labels(task.queue, reason).inc()

    # --- live values (on the worker's loop) -------------------------------------------------

    async def _read(self) -> tuple[Tally[str], dict[tuple[str, str], int]] | None:
        worker = self._worker
        if worker is None:
            return None
        running = Tally(t.queue for t in worker.running_tasks)
        now = time.monotonic()
        if now - self._depth_at >= self.depth_interval:
            depth: dict[tuple[str, str], int] = {}
            try:
                for queue in worker.queues:
                    for status in DEPTH_STATUSES:
                        depth[(queue, status.value)] = await worker.queue.count(queue, status)
            except Exception as e:
                log.warning("reading the queue depth failed: %s: %s", type(e).__name__, e)
            else:
                self._depth, self._depth_at = depth, now
        return running, dict(self._depth)

    def live(self) -> tuple[Tally[str], dict[tuple[str, str], int]] | None:
        """Running tasks by queue and queue depth by (queue, status), read on the
        worker's loop from another thread (the HTTP server's); None when no worker runs
        or the read did not answer within ``read_timeout``."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        try:
            if asyncio.get_running_loop() is loop:
                return None  # called on the worker's own loop: waiting would block it
        except RuntimeError:
            pass
        future = asyncio.run_coroutine_threadsafe(self._read(), loop)
        try:
            return future.result(self.read_timeout)
        except Exception as e:
            future.cancel()
            log.warning("reading the live metrics failed: %s: %s", type(e).__name__, e)
            return None


class _LiveCollector:
    """The gauges read at scrape time: running tasks and queue depth."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # registering must not read the store

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        live = self.metrics.live()
        if live is None:
            return
        running, depth = live
        g = GaugeMetricFamily(
            "omniq_tasks_running", "Tasks running in this worker now, by queue.", labels=["queue"]
        )
        for queue, n in sorted(running.items()):
            g.add_metric([queue], n)
        yield g
        g = GaugeMetricFamily(
            "omniq_queue_depth",
            "Tasks of the worker's queues by status (pending, waiting, running), read "
            "from the store at scrape time.",
            labels=["queue", "status"],
        )
        for (queue, status), n in sorted(depth.items()):
            g.add_metric([queue, status], n)
        yield g


class MetricsServer:
    """A :class:`WorkerMetrics` plugin registered on a plugin manager and served over
    HTTP; :meth:`close` stops serving and unregisters it."""

    def __init__(
        self, plugins: PluginManager, port: int, host: str = DEFAULT_HOST, **options: Any
    ) -> None:
        pc = _client()
        self.metrics = WorkerMetrics(**options)
        try:
            self._httpd, self._thread = pc.start_http_server(
                port, addr=host, registry=self.metrics.registry
            )
        except OSError as e:
            raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {e}") from e
        self.host = host
        self._plugins = plugins
        plugins.register(self.metrics)

    @property
    def port(self) -> int:
        """The port served (the one chosen by the system when 0 was asked)."""
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        """Where the metrics are scraped."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and unregister the plugin (idempotent)."""
        if self._plugins.is_registered(self.metrics):
            self._plugins.unregister(self.metrics)
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def serve_metrics(
    plugins: PluginManager, port: int, host: str = DEFAULT_HOST, **options: Any
) -> MetricsServer:
    """Count a worker's tasks and serve them at ``http://host:port/metrics``; what
    ``omniq worker --metrics-port`` does. Call it before the worker starts, with the
    app's plugin manager (``oq.plugins``); ``options`` go to :class:`WorkerMetrics`."""
    return MetricsServer(plugins, port, host, **options)
