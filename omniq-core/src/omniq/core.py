"""AsyncOmniQ and OmniQ: the public entry points (DESIGN §3).

``AsyncOmniQ`` is a thin front: it builds its components (:mod:`omniq.components`),
registers tasks, builds and enqueues them (options resolved by :mod:`omniq.options`),
reads results and state, manages schedules, and starts workers. What happens around a
task's end and the periodic sweeps is :class:`~omniq.lifecycle.TaskLifecycle`; the
rules behind them are :mod:`omniq.rules`. ``OmniQ`` is its blocking twin, made by the
generic sync layer (:mod:`omniq.sync`): every coroutine method ``m`` as ``m_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Self, TypeVar

import msgspec

from omniq import rules
from omniq.components import ComponentAttribute, build_components, unique_components, unwrap
from omniq.config import ComponentConfig, OmniQConfig, load_config
from omniq.errors import ConfigurationError
from omniq.events import AsyncEventLogger
from omniq.lifecycle import TaskLifecycle
from omniq.models import Schedule, Task, TaskEvent, TaskResult, WorkerInfo, new_ids
from omniq.models.enums import CatchUp, EventType, ScheduleState, TaskStatus
from omniq.options import SCHEDULE_OPTIONS, check_options, resolve_options, seconds
from omniq.plugins import PluginManager, get_plugin_manager
from omniq.queue.dependencies import check_dependencies
from omniq.queue.scheduler import AsyncScheduler
from omniq.serialization import SerializationManager, default_manager, set_default_manager
from omniq.sync import AsyncResource, SyncWrapper, portal
from omniq.tasks import TaskFunction, TaskHandle, TaskRegistration, delay_to_run_at, task_name
from omniq.workers.resolve import resolve_task
from omniq.workers.runner import AsyncWorkerHandle, WorkerHandle, make_worker

__all__ = ["AsyncOmniQ", "OmniQ"]

log = logging.getLogger("omniq")

R = TypeVar("R")
P = ParamSpec("P")


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No automatic garbage collection while a bulk enqueue runs (``map()``). Its tasks,
    their lists and dicts and their handles are all alive until it returns, so each
    full collection the new objects trigger walks all of them, and every live object
    of the process, again: about half of ``map()``'s CPU time. Nothing of it is
    garbage; the collector runs again once the last bulk enqueue in progress ends (a
    state someone else set is left as it was)."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


class AsyncOmniQ(TaskRegistration, AsyncResource):
    """The async API. ``async with AsyncOmniQ(...) as oq:`` connects and closes."""

    def __init__(
        self,
        task_queue: Any = None,
        result_storage: Any = None,
        event_storage: Any = None,
        schedule_storage: Any = None,
        *,
        config: OmniQConfig | dict[str, Any] | str | None = None,
        worker: str | None = None,
        max_workers: int | None = None,
        plugins: PluginManager | None = None,
        **settings: Any,
    ) -> None:
        instances: dict[str, Any] = {}
        overrides: dict[str, Any] = dict(settings)
        given = {
            "task_queue": task_queue,
            "result_storage": result_storage,
            "event_storage": event_storage,
            "schedule_storage": schedule_storage,
        }
        for kind, value in given.items():
            if value is None:
                continue
            if isinstance(value, (str, dict, ComponentConfig)):
                overrides[kind] = value
            else:
                instances[kind] = unwrap(value)
        if worker is not None:
            overrides["default_worker"] = worker
        if max_workers is not None:
            overrides["max_workers"] = max_workers
        self.config: OmniQConfig = load_config(config, **overrides)
        self.plugins = plugins or get_plugin_manager()
        if self.config.secret_key:
            set_default_manager(
                SerializationManager(
                    self.config.secret_key,
                    self.config.old_secret_keys,
                    self.plugins.serializers(),
                )
            )
        self._components = build_components(self.config, self.plugins, instances)
        self.events = AsyncEventLogger(self.event_storage, self.plugins)
        self.registry: dict[str, TaskFunction[Any, Any]] = {}
        self.scheduler = AsyncScheduler(
            self.schedule_storage, enqueue=self._enqueue_prepared, defaults=self._task_defaults
        )
        self.lifecycle = TaskLifecycle(
            queue=self.task_queue,
            results=self.result_storage,
            event_storage=self.event_storage,
            events=self.events,
            config=self.config,
            scheduler=self.scheduler,
            enqueue=self._enqueue_prepared,
        )
        self._connected = False
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, source: OmniQConfig | dict[str, Any] | str, **overrides: Any) -> Self:
        """Build from a YAML path, a dict or an OmniQConfig (overrides win)."""
        return cls(config=source, **overrides)

    # --- components ------------------------------------------------------------------------

    task_queue = ComponentAttribute("task_queue")
    result_storage = ComponentAttribute("result_storage")
    event_storage = ComponentAttribute("event_storage")
    schedule_storage = ComponentAttribute("schedule_storage")

    # --- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect every component (idempotent)."""
        if self._connected:
            return
        for c in unique_components(self._components):
            await c.connect()
        self._connected = True
        if self.events.enabled and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self.events.run())

    async def close(self) -> None:
        """Flush events and close every component (idempotent)."""
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except (asyncio.CancelledError, Exception):
                pass
            self._flusher = None
        await self.events.flush()
        for c in unique_components(self._components):
            try:
                await c.close()
            except Exception:
                log.exception("closing %r failed", c)
        self._connected = False

    # --- tasks -----------------------------------------------------------------------------

    def _app(self) -> AsyncOmniQ:
        return self

    def _register_task(
        self,
        fn: Callable[..., Any] | None,
        name: str | None,
        rate_limit: str | None,
        options: dict[str, Any],
    ) -> Any:
        check_options(options)
        if rate_limit is not None:
            from omniq.workers.ratelimit import parse_rate

            parse_rate(rate_limit)

        def register(f: Callable[..., Any]) -> TaskFunction[Any, Any]:
            tf: TaskFunction[Any, Any] = TaskFunction(
                self, f, name or task_name(f), options, rate_limit
            )
            self.registry[tf.name] = tf
            return tf

        return register(fn) if fn is not None else register

    def resolve_function(self, name: str) -> Callable[..., Any]:
        """The function a worker runs for the task name ``name``: a task registered on
        this app, or (only for modules in ``task_import_allowlist``) one imported by
        ``module:qualname``. Raises UnknownTaskError otherwise, before importing anything
        (see :mod:`omniq.workers.resolve`)."""
        return resolve_task(name, self.registry, self.config.task_import_allowlist)

    def _as_task_function(self, fn: Any) -> TaskFunction[Any, Any]:
        if isinstance(fn, TaskFunction):
            return fn
        if isinstance(fn, str):
            tf = self.registry.get(fn)
            if tf is not None:
                return tf
            return TaskFunction(self, _unregistered(fn), fn, {})
        if callable(fn):
            return self._register_callable(fn)
        raise TypeError(
            f"expected a task function, a callable or a 'module:qualname' name, got {fn!r}"
        )

    def _register_callable(self, fn: Callable[..., Any]) -> TaskFunction[Any, Any]:
        """A plain callable enqueued (or named as a callback) in this process is this
        app's own code: it is registered, so a worker of this app runs it. Workers of
        other processes run it only if their app registers it too."""
        name = task_name(fn)
        tf = self.registry.get(name)
        if tf is None:
            tf = self.registry[name] = TaskFunction(self, fn, name, {})
        elif tf.fn is not fn and getattr(fn, "fn", None) is not tf.fn:
            raise ConfigurationError(
                f"two different functions have the task name {name!r} (lambdas or nested "
                "functions of one scope share a name); register each with "
                "@oq.task(name=...) and enqueue the registered task"
            )
        return tf

    def _callback_name(self, cb: Any) -> str | None:
        """The registered name of a callback (a plain callable is registered here)."""
        if cb is None or isinstance(cb, str):
            return cb
        if isinstance(cb, TaskFunction):
            return cb.name
        return self._register_callable(cb).name

    def _task_defaults(self) -> dict[str, float | int | None]:
        """Defaults from the configuration for tasks that do not set them."""
        c = self.config
        return {
            "timeout": c.task_timeout,
            "ttl": c.task_ttl,
            "retries": c.retry_attempts,
            "retry_delay": c.retry_delay,
        }

    def _build_task(
        self, tf: TaskFunction[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Task:
        """The Task for one call of ``tf`` with its options and the configured defaults."""
        o = tf.defaults
        now = time.time()
        r = resolve_options(o, self._task_defaults())
        fields: dict[str, Any] = {
            "func": tf.name,
            "args": tuple(args),
            "kwargs": dict(kwargs),
            "queue": r.queue,
            "priority": r.priority,
            "created_at": now,
            "run_at": delay_to_run_at(o.get("delay"), o.get("eta")),
            "expires_at": r.expires_at(now),
            "timeout": r.timeout,
            "retries": r.retries,
            "retry_delay": r.retry_delay,
            "depends_on": [getattr(d, "id", d) for d in o.get("depends_on") or []],
            "on_success": self._callback_name(o.get("on_success")),
            "on_failure": self._callback_name(o.get("on_failure")),
            "result_ttl": r.result_ttl,
            "metadata": r.metadata,
            "serializer": r.serializer,
        }
        if fields["serializer"] is not None:
            default_manager().check_format(fields["serializer"])
        if o.get("task_id"):
            fields["id"] = str(o["task_id"])
        return Task(**fields)

    def _build_tasks(
        self, tf: TaskFunction[Any, Any], calls: Iterable[tuple[Sequence[Any], dict[str, Any]]]
    ) -> list[Task]:
        """:meth:`_build_task` for many calls: the options are resolved once and each
        further task is a copy of the first with its own id and arguments."""
        calls = list(calls)
        if not calls:
            return []
        first = self._build_task(tf, *calls[0])
        if len(calls) == 1 or tf.defaults.get("task_id"):
            return [first, *(self._build_task(tf, a, k) for a, k in calls[1:])]
        replace = msgspec.structs.replace
        out = [first]
        for (args, kwargs), task_id in zip(calls[1:], new_ids(len(calls) - 1), strict=True):
            t = replace(
                first,
                id=task_id,
                args=args if type(args) is tuple else tuple(args),
                kwargs=dict(kwargs) if kwargs else {},
            )
            # mutable fields must not be shared between tasks: a before_enqueue hook
            # writing one task's (even empty) metadata would write every task's
            t.depends_on = list(t.depends_on)
            t.metadata = dict(t.metadata)
            out.append(t)
        return out

    async def enqueue(self, fn: Any, /, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        """Enqueue ``fn(*args, **kwargs)``: a task function, any callable, or a name."""
        return await self._enqueue_task(self._as_task_function(fn), args, kwargs)

    async def _enqueue_task(
        self, tf: TaskFunction[Any, R], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> TaskHandle[R]:
        """Enqueue one call of a task function (what ``tf.enqueue`` does)."""
        task = self._build_task(tf, args, kwargs)
        await self._enqueue_prepared([task])
        return TaskHandle(self, task.id, tf.result_type)

    async def _enqueue_many_tasks(
        self,
        tf: TaskFunction[Any, R],
        calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        *,
        batch_size: int = 500,
    ) -> list[TaskHandle[R]]:
        """Enqueue many calls of one task function, one round trip per batch."""
        with _gc_paused():
            return await self._enqueue_calls(tf, list(calls), batch_size)

    async def _enqueue_calls(
        self,
        tf: TaskFunction[Any, R],
        calls: list[tuple[Sequence[Any], dict[str, Any]]],
        batch_size: int,
    ) -> list[TaskHandle[R]]:
        if len(calls) <= batch_size:
            tasks = self._build_tasks(tf, calls)
            await self._enqueue_prepared(tasks)
            return [TaskHandle(self, t.id, tf.result_type) for t in tasks]
        tasks = []
        # each batch goes out as soon as it is built, while the next one is built: a
        # backend may pipeline them or, like SQLite, write the batches that wait for its
        # connection in one transaction
        sent: list[asyncio.Future[list[TaskStatus]]] = []
        try:
            for i in range(0, len(calls), batch_size):
                if any(f.done() and (f.cancelled() or f.exception()) for f in sent):
                    break  # a batch failed: send no more
                batch = self._build_tasks(tf, calls[i : i + batch_size])
                tasks.extend(batch)
                sent.append(asyncio.ensure_future(self._enqueue_prepared(batch)))
                await asyncio.sleep(0)
        finally:
            # every batch sent has ended (stored or failed) before an error is raised
            outcomes = await asyncio.gather(*sent, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [TaskHandle(self, t.id, tf.result_type) for t in tasks]

    async def _enqueue_prepared(self, tasks: list[Task]) -> list[TaskStatus]:
        """Store ready-made tasks: hooks before and after, cycle check, enqueue, events."""
        await self.connect()
        if self.plugins.implemented("omniq_before_enqueue"):
            for t in tasks:
                await self.plugins.acall("omniq_before_enqueue", task=t)
        if any(t.depends_on for t in tasks):
            await check_dependencies(tasks, self.task_queue.get)
        queue = self.task_queue
        statuses: list[TaskStatus] = (
            [await queue.enqueue(tasks[0])] if len(tasks) == 1 else await queue.enqueue_many(tasks)
        )
        if self.plugins.implemented("omniq_after_enqueue"):
            await self.plugins.acall("omniq_after_enqueue", tasks=tasks, statuses=statuses)
        events_on = self.events.enabled
        for t, st in zip(tasks, statuses, strict=True):
            if events_on:
                self.events.emit(
                    TaskEvent(
                        event_type=EventType.ENQUEUED,
                        task_id=t.id,
                        queue=t.queue,
                        func=t.func,
                        schedule_id=t.schedule_id,
                        metadata={"status": st.value},
                    )
                )
            if st is TaskStatus.CANCELLED:
                await self.lifecycle.record_end(t.id, TaskStatus.CANCELLED, rules.DEPENDENCY_FAILED)
        return statuses

    # --- results and state -----------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """The stored task, or None."""
        await self.connect()
        return await self.task_queue.get(task_id)  # type: ignore[no-any-return]

    async def get_result(self, task_id: str) -> TaskResult | None:
        """The task's result, or None while it has not finished. A task that ended
        without a stored result (failed at claim time, cancelled or expired before a
        worker saw it) gets one made from its stored state, with the reason."""
        await self.connect()
        res: TaskResult | None = await self.result_storage.get(task_id)
        return res if res is not None else await self._result_from_task(task_id)

    async def wait_result(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait for the result (notified by the backend where it can); None on timeout.

        A task that ended without a result gets one made from its stored state (see
        :meth:`get_result`), so waiters never hang on it.
        """
        await self.connect()
        deadline = None if timeout is None else time.monotonic() + timeout
        step = 0.25  # the first look at the task's state comes soon; then every 2 s
        while True:
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            res: TaskResult | None = await self.result_storage.wait(task_id, step)
            if res is not None:
                return res
            res = await self._result_from_task(task_id)
            if res is not None:
                return res
            if deadline is not None and time.monotonic() >= deadline:
                return None
            step = 2.0

    async def _result_from_task(self, task_id: str) -> TaskResult | None:
        """A result for a task that ended without one, made from the stored task: FAILED
        (e.g. at claim time: corrupt payload), CANCELLED or EXPIRED, with the reason.
        None while the task has not ended, or when it succeeded (its result follows its
        status change)."""
        task = await self.task_queue.get(task_id)
        if task is None:
            return None
        status = task.effective_status()
        if not status.is_final or status is TaskStatus.SUCCESS:
            return None
        # a worker writes the result right after the status: look once more
        res: TaskResult | None = await self.result_storage.get(task_id)
        if res is not None:
            return res
        return TaskResult(
            task_id=task_id,
            status=status,
            error=task.error or f"the task ended {status.value} without a recorded reason",
            attempt=task.attempt,
            worker_id=task.worker_id,
        )

    async def status(self, task_id: str) -> TaskStatus | None:
        """The task's status, or None when unknown."""
        task = await self.get_task(task_id)
        return task.status if task else None

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: a queued one never runs; a running one is stopped at its next
        heartbeat. Dependents are cancelled too. False if unknown or already finished."""
        await self.connect()
        return await self.lifecycle.cancel(task_id)

    async def requeue(self, task_id: str) -> Task:
        """Run a task that ended (failed, cancelled, expired or succeeded) again, at
        once, with a fresh retry budget; returns the re-queued task. Raises
        TaskNotFoundError for an unknown id, TaskNotFinalError for a task not ended."""
        await self.connect()
        return await self.lifecycle.requeue(task_id)

    async def pause_queue(self, queue: str) -> None:
        """Stop workers claiming from ``queue`` within about a second (running tasks
        finish; enqueues are still accepted). ``resume_queue`` undoes it."""
        await self.connect()
        await self.task_queue.pause_queue(queue)
        await self.events.log(TaskEvent(event_type=EventType.QUEUE_PAUSED, queue=queue))

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from a paused queue again."""
        await self.connect()
        await self.task_queue.resume_queue(queue)
        await self.events.log(TaskEvent(event_type=EventType.QUEUE_RESUMED, queue=queue))

    async def paused_queues(self) -> set[str]:
        """The queues paused now."""
        await self.connect()
        paused: set[str] = await self.task_queue.paused_queues()
        return paused

    async def list_workers(self) -> list[WorkerInfo]:
        """Live workers, as their heartbeats in the store say (oldest first)."""
        await self.connect()
        workers: list[WorkerInfo] = await self.task_queue.list_workers()
        return workers

    async def prune(self, now: float | None = None) -> dict[str, int]:
        """Delete what the retention settings no longer keep (results past their TTL,
        old events, finished tasks older than ``result_ttl``); workers do it every
        minute. Returns how many of each were deleted."""
        await self.connect()
        return await self.lifecycle.prune(now)

    # --- schedules -------------------------------------------------------------------------

    async def schedule(
        self,
        fn: Any,
        *,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        cron: str | None = None,
        interval: float | timedelta | None = None,
        at: float | datetime | None = None,
        timezone: str = "UTC",
        catch_up: str | CatchUp = CatchUp.COALESCE,
        schedule_id: str | None = None,
        start_at: float | datetime | None = None,
        **options: Any,
    ) -> str:
        """Create a cron, interval or one-shot schedule; returns its id."""
        await self.connect()
        tf = self._as_task_function(fn)
        check_options(options)
        o = {**tf.defaults, **options}
        # stored as given: each fired run resolves them against the defaults then
        fields: dict[str, Any] = {name: o.get(name) for name in SCHEDULE_OPTIONS}
        fields.update(
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            timezone=timezone,
            catch_up=CatchUp(catch_up),
            queue=o.get("queue") or "default",
            priority=int(o.get("priority") or 0),
            ttl=seconds(o.get("ttl")),
            result_ttl=seconds(o.get("result_ttl")),
            metadata=dict(o.get("metadata") or {}),
        )
        if schedule_id:
            fields["id"] = schedule_id
        if start_at is not None:
            fields["start_at"] = (
                start_at.timestamp() if isinstance(start_at, datetime) else start_at
            )
        try:
            s = Schedule.create(tf.name, cron=cron, interval=interval, at=at, **fields)
        except ValueError as e:
            raise ConfigurationError(str(e)) from e
        await self.schedule_storage.save(s)
        return s.id

    async def _set_schedule_state(self, schedule_id: str, state: ScheduleState) -> bool:
        await self.connect()
        s = await self.schedule_storage.get(schedule_id)
        if s is None:
            return False
        if s.state is state:
            return True
        new = s.paused() if state is ScheduleState.PAUSED else s.resumed()
        await self.schedule_storage.update(new)
        kind = (
            EventType.SCHEDULE_PAUSED
            if state is ScheduleState.PAUSED
            else EventType.SCHEDULE_RESUMED
        )
        await self.events.log(TaskEvent(event_type=kind, schedule_id=schedule_id, func=s.func))
        return True

    async def pause_schedule(self, schedule_id: str) -> bool:
        """Pause a schedule (due times accrue for its catch-up policy)."""
        return await self._set_schedule_state(schedule_id, ScheduleState.PAUSED)

    async def resume_schedule(self, schedule_id: str) -> bool:
        """Resume a paused schedule."""
        return await self._set_schedule_state(schedule_id, ScheduleState.ACTIVE)

    async def list_schedules(self, state: ScheduleState | None = None) -> list[Schedule]:
        """All schedules, optionally of one state."""
        await self.connect()
        return await self.schedule_storage.list(state)  # type: ignore[no-any-return]

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """One schedule, or None."""
        await self.connect()
        return await self.schedule_storage.get(schedule_id)  # type: ignore[no-any-return]

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule."""
        await self.connect()
        s = await self.schedule_storage.get(schedule_id)
        deleted: bool = await self.schedule_storage.delete(schedule_id)
        if deleted:
            await self.events.log(
                TaskEvent(
                    event_type=EventType.SCHEDULE_DELETED,
                    schedule_id=schedule_id,
                    func=s.func if s is not None else None,
                )
            )
        return deleted

    # --- events ----------------------------------------------------------------------------

    async def get_events(
        self,
        task_id: str | None = None,
        types: Iterable[EventType] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[TaskEvent]:
        """Stored events (empty when event storage is off), after flushing the buffer."""
        await self.connect()
        await self.events.flush()
        if self.event_storage is None:
            return []
        return await self.event_storage.query(  # type: ignore[no-any-return]
            task_id=task_id, types=types, since=since, until=until, limit=limit
        )

    # --- workers ---------------------------------------------------------------------------

    async def run_worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        worker: str | None = None,
        burst: bool = False,
        scheduler: bool = True,
        **options: Any,
    ) -> None:
        """Run a worker in this task until it is stopped (or idle, with ``burst``)."""
        w = make_worker(self, queues, concurrency, worker, burst, scheduler, **options)
        await w.run()

    def start_worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        worker: str | None = None,
        scheduler: bool = True,
        **options: Any,
    ) -> AsyncWorkerHandle:
        """Start a worker in the background: ``w = await oq.start_worker()`` then
        ``await w.stop()``, or ``async with oq.start_worker() as w:``."""
        return AsyncWorkerHandle(
            make_worker(self, queues, concurrency, worker, False, scheduler, **options)
        )

    async def drain(self, queues: Sequence[str] | None = None, **options: Any) -> None:
        """Work until the queues are empty, then return (burst mode)."""
        await self.run_worker(queues, burst=True, **options)


def _unregistered(name: str) -> Callable[..., Any]:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError(f"task {name!r} is not registered in this process")

    missing.__name__ = name
    return missing


class OmniQ(TaskRegistration, SyncWrapper[AsyncOmniQ], async_class=AsyncOmniQ):
    """The blocking API: every coroutine method ``m`` of :class:`AsyncOmniQ` as
    ``m_sync`` (made by :class:`~omniq.sync.SyncWrapper`), run on OmniQ's background
    event-loop thread (see :mod:`omniq.sync`). Other attributes (``config``,
    ``registry``, ``plugins``) are the async app's."""

    @classmethod
    def from_config(cls, source: OmniQConfig | dict[str, Any] | str, **overrides: Any) -> OmniQ:
        """Build from a YAML path, a dict or an OmniQConfig (overrides win)."""
        return cls(config=source, **overrides)

    def _app(self) -> AsyncOmniQ:
        return self._async

    task_queue = ComponentAttribute("task_queue", blocking=True)
    result_storage = ComponentAttribute("result_storage", blocking=True)
    event_storage = ComponentAttribute("event_storage", blocking=True)
    schedule_storage = ComponentAttribute("schedule_storage", blocking=True)

    # workers run on the background loop, so these are not plain blocking calls
    def run_worker_sync(self, queues: Sequence[str] | None = None, **options: Any) -> None:
        """Run a worker until stopped (Ctrl-C stops it gracefully)."""
        handle = self.start_worker_sync(queues, **options)
        try:
            handle.join_sync()
        except KeyboardInterrupt:
            handle.stop_sync()

    def start_worker_sync(
        self, queues: Sequence[str] | None = None, **options: Any
    ) -> WorkerHandle:
        """Start a worker on the background loop; ``with oq.start_worker_sync() as w:``."""
        burst = options.pop("burst", False)
        w = make_worker(
            self._async,
            queues,
            options.pop("concurrency", None),
            options.pop("worker", None),
            burst,
            options.pop("scheduler", True),
            **options,
        )
        return WorkerHandle.start(w, portal())
