"""AsyncOmniQ and OmniQ: the public entry points (DESIGN §3).

``AsyncOmniQ`` composes a task queue, result storage, event storage (optional) and
schedule storage, each chosen independently (type, URL, dict or instance), and offers
enqueueing, results, cancellation, schedules, events and workers. ``OmniQ`` is its
blocking twin: the same methods with a ``_sync`` suffix.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, overload

import msgspec

from omniq.config import ComponentConfig, OmniQConfig, load_config
from omniq.errors import ConfigurationError
from omniq.events import AsyncEventLogger
from omniq.models import (
    CatchUp,
    EventType,
    Schedule,
    ScheduleState,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    new_ids,
)
from omniq.options import SCHEDULE_OPTIONS, check_options, resolve_options, seconds
from omniq.plugins import COMPONENTS, PluginManager, find_backend, get_plugin_manager
from omniq.plugins.specs import load_object
from omniq.queue.dependencies import check_dependencies
from omniq.queue.scheduler import AsyncScheduler
from omniq.serialization import SerializationManager, default_manager, set_default_manager
from omniq.sync import SyncWrapper, portal, run_sync
from omniq.tasks import TaskDecorator, TaskFunction, TaskHandle, delay_to_run_at, task_name
from omniq.workers.resolve import resolve_task
from omniq.workers.runner import AsyncWorkerHandle, WorkerHandle, make_worker

log = logging.getLogger("omniq")

#: Seconds between TTL sweeps (expired tasks are never claimed in between; the sweep
#: records them as EXPIRED and cancels their dependents).
TTL_SWEEP_INTERVAL = 5.0
#: Seconds between sweeps for WAITING tasks whose dependencies already ended.
DEPENDENCY_SWEEP_INTERVAL = 10.0
#: Seconds between retention sweeps (expired results, old events, old finished tasks).
RETENTION_SWEEP_INTERVAL = 60.0
#: Rows deleted per call in a retention sweep (each call is one short write).
PRUNE_BATCH = 1000
R = TypeVar("R")
P = ParamSpec("P")


def _unwrap(component: Any) -> Any:
    return component.async_ if isinstance(component, SyncWrapper) else component


class AsyncOmniQ:
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
                instances[kind] = _unwrap(value)
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
        self._components = self._build_components(instances)
        self.events = AsyncEventLogger(self.event_storage, self.plugins)
        self.registry: dict[str, TaskFunction[Any, Any]] = {}
        self.scheduler = AsyncScheduler(self)
        self._connected = False
        self._flusher: asyncio.Task[None] | None = None
        self._last_sweep = 0.0
        self._last_dependency_sweep = time.time()
        self._last_prune = 0.0

    @classmethod
    def from_config(cls, source: OmniQConfig | dict[str, Any] | str, **overrides: Any) -> Self:
        """Build from a YAML path, a dict or an OmniQConfig (overrides win)."""
        return cls(config=source, **overrides)

    # --- components ------------------------------------------------------------------------

    def _build_components(self, instances: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        wanted: dict[str, ComponentConfig | None] = {
            "task_queue": cfg.task_queue,
            "result_storage": cfg.effective_result_storage(),
            "event_storage": cfg.event_storage,
            "schedule_storage": cfg.effective_schedule_storage(),
        }
        if "task_queue" in instances:
            # an instance given for the queue: results/schedules follow it unless configured
            if cfg.result_storage is None:
                wanted["result_storage"] = None
            if cfg.schedule_storage is None:
                wanted["schedule_storage"] = None
        built: dict[str, Any] = dict(instances)
        bundles: dict[tuple[str, str, str], Any] = {}
        for kind in COMPONENTS:
            if kind in built:
                continue
            cc = wanted[kind]
            if cc is None:
                built[kind] = self._follow_queue(kind, instances)
                continue
            spec = find_backend(cc.type, cc.url, pm=self.plugins)
            url = cc.url or spec.default_url
            if url is None:
                raise ConfigurationError(f"backend {spec.name!r} needs a URL for {kind}")
            if not spec.offers(kind):
                if kind == "event_storage":
                    raise ConfigurationError(
                        f"backend {spec.name!r} does not provide event storage; set "
                        "OMNIQ_EVENT_STORAGE_TYPE to one that does"
                    )
                raise ConfigurationError(f"backend {spec.name!r} does not provide {kind}")
            key = (spec.name, url, repr(sorted(cc.options.items())))
            if spec.bundle is not None:
                bundle = bundles.get(key)
                if bundle is None:
                    bundle_cls = load_object(spec.bundle, spec.name)
                    bundle = bundles[key] = bundle_cls.from_url(
                        url, **self._backend_options(bundle_cls, cc.options)
                    )
                built[kind] = getattr(bundle, kind)
            else:
                cls = spec.component(kind)
                assert cls is not None
                built[kind] = cls.from_url(url, **self._backend_options(cls, cc.options))
        return built

    def _backend_options(self, cls: type, options: dict[str, Any]) -> dict[str, Any]:
        """Options for a backend class, plus ``base_dir`` when its constructor takes one."""
        try:
            takes_base_dir = "base_dir" in inspect.signature(cls).parameters
        except (TypeError, ValueError):
            takes_base_dir = False
        if takes_base_dir and "base_dir" not in options:
            return {**options, "base_dir": self.config.base_dir}
        return options

    def _follow_queue(self, kind: str, instances: dict[str, Any]) -> Any:
        """Results/schedules of a queue given as an instance: same backend, in memory."""
        if kind == "event_storage":
            return None
        from omniq.storage import memory

        queue = instances.get("task_queue")
        url = getattr(queue, "url", None) if isinstance(queue, memory.AsyncMemoryQueue) else None
        return (
            memory.AsyncMemoryResultStorage(url)
            if kind == "result_storage"
            else memory.AsyncMemoryScheduleStorage(url)
        )

    @property
    def task_queue(self) -> Any:
        """The async task queue component."""
        return self._components["task_queue"]

    @property
    def result_storage(self) -> Any:
        """The async result storage component."""
        return self._components["result_storage"]

    @property
    def event_storage(self) -> Any:
        """The async event storage component, or None when events are off."""
        return self._components["event_storage"]

    @property
    def schedule_storage(self) -> Any:
        """The async schedule storage component."""
        return self._components["schedule_storage"]

    def _unique_components(self) -> list[Any]:
        seen: dict[int, Any] = {}
        for c in self._components.values():
            if c is not None:
                seen.setdefault(id(c), c)
        return list(seen.values())

    # --- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect every component (idempotent)."""
        if self._connected:
            return
        for c in self._unique_components():
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
        for c in self._unique_components():
            try:
                await c.close()
            except Exception:
                log.exception("closing %r failed", c)
        self._connected = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- tasks -----------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> TaskFunction[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def task(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        rate_limit: str | None = None,
        **options: Any,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        rate_limit: str | None = None,
        **options: Any,
    ) -> Any:
        """Register a function as a task: ``@oq.task`` or ``@oq.task(queue=..., ...)``."""
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

    def task_defaults(self) -> dict[str, float | int | None]:
        """Defaults from the configuration for tasks that do not set them."""
        c = self.config
        return {
            "timeout": c.task_timeout,
            "ttl": c.task_ttl,
            "retries": c.retry_attempts,
            "retry_delay": c.retry_delay,
        }

    def build_task(
        self, tf: TaskFunction[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Task:
        """The Task for one call of ``tf`` with its options and the configured defaults."""
        o = tf.defaults
        now = time.time()
        r = resolve_options(o, self.task_defaults())
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

    def build_tasks(
        self, tf: TaskFunction[Any, Any], calls: Iterable[tuple[Sequence[Any], dict[str, Any]]]
    ) -> list[Task]:
        """:meth:`build_task` for many calls: the options are resolved once and each
        further task is a copy of the first with its own id and arguments."""
        calls = list(calls)
        if not calls:
            return []
        first = self.build_task(tf, *calls[0])
        if len(calls) == 1 or tf.defaults.get("task_id"):
            return [first, *(self.build_task(tf, a, k) for a, k in calls[1:])]
        replace = msgspec.structs.replace
        out = [first]
        for (args, kwargs), task_id in zip(calls[1:], new_ids(len(calls) - 1), strict=True):
            t = replace(
                first,
                id=task_id,
                args=args if type(args) is tuple else tuple(args),
                kwargs=dict(kwargs) if kwargs else {},
            )
            if t.depends_on:  # mutable fields must not be shared between tasks
                t.depends_on = list(t.depends_on)
            if t.metadata:
                t.metadata = dict(t.metadata)
            out.append(t)
        return out

    async def enqueue(self, fn: Any, /, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        """Enqueue ``fn(*args, **kwargs)``: a task function, any callable, or a name."""
        return await self.enqueue_task(self._as_task_function(fn), args, kwargs)

    async def enqueue_task(
        self, tf: TaskFunction[Any, R], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> TaskHandle[R]:
        """Enqueue one call of a task function (what ``tf.enqueue`` does)."""
        task = self.build_task(tf, args, kwargs)
        await self.enqueue_prepared([task])
        return TaskHandle(self, task.id, tf.result_type)

    async def enqueue_many_tasks(
        self,
        tf: TaskFunction[Any, R],
        calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        *,
        batch_size: int = 500,
    ) -> list[TaskHandle[R]]:
        """Enqueue many calls of one task function, one round trip per batch."""
        calls = list(calls)
        if len(calls) <= batch_size:
            tasks = self.build_tasks(tf, calls)
            await self.enqueue_prepared(tasks)
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
                batch = self.build_tasks(tf, calls[i : i + batch_size])
                tasks.extend(batch)
                sent.append(asyncio.ensure_future(self.enqueue_prepared(batch)))
                await asyncio.sleep(0)
        finally:
            # every batch sent has ended (stored or failed) before an error is raised
            outcomes = await asyncio.gather(*sent, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [TaskHandle(self, t.id, tf.result_type) for t in tasks]

    async def enqueue_prepared(self, tasks: list[Task]) -> list[TaskStatus]:
        """Store ready-made tasks: hooks, cycle check, enqueue, events."""
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
                await self._record_end(t.id, TaskStatus.CANCELLED, "a dependency did not succeed")
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

    def result_expiry(self, task: Task) -> float | None:
        """When the task's result expires (its ``result_ttl`` or the configured one)."""
        ttl = task.result_ttl if task.result_ttl is not None else self.config.result_ttl
        return time.time() + ttl if ttl else None

    async def status(self, task_id: str) -> TaskStatus | None:
        """The task's status, or None when unknown."""
        task = await self.get_task(task_id)
        return task.status if task else None

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task: a queued one never runs; a running one is stopped at its next
        heartbeat. Dependents are cancelled too. False if unknown or already finished."""
        await self.connect()
        if not await self.task_queue.cancel(task_id, "cancelled by request"):
            return False
        await self._record_end(task_id, TaskStatus.CANCELLED, "cancelled by request")
        await self._release(task_id, succeeded=False)
        return True

    async def _record_end(self, task_id: str, status: TaskStatus, reason: str) -> None:
        task = await self.task_queue.get(task_id)
        await self.result_storage.set(
            TaskResult(
                task_id=task_id,
                status=status,
                error=reason,
                attempt=task.attempt if task else 0,
                expires_at=self.result_expiry(task) if task else None,
            )
        )
        kind = EventType.CANCELLED if status is TaskStatus.CANCELLED else EventType.EXPIRED
        self.events.emit(
            TaskEvent(
                event_type=kind,
                task_id=task_id,
                message=reason,
                queue=task.queue if task else None,
                func=task.func if task else None,
            )
        )

    async def _release(self, task_id: str, *, succeeded: bool) -> None:
        released = await self.task_queue.release_dependents(task_id, succeeded)
        for dep in released.cancelled:
            await self._record_end(
                dep, TaskStatus.CANCELLED, f"dependency {task_id} did not succeed"
            )

    async def after_finish(self, task: Task, *, succeeded: bool, value: Any) -> None:
        """Release or cancel dependents and enqueue callbacks (called by workers)."""
        await self.after_finish_many([(task, value)], succeeded=succeeded)

    async def after_finish_many(
        self, finished: Sequence[tuple[Task, Any]], *, succeeded: bool
    ) -> None:
        """:meth:`after_finish` for a batch: one dependents release for all of them."""
        if not finished:
            return
        ids = [t.id for t, _ in finished]
        released = await self.task_queue.release_dependents_many(ids, succeeded)
        for dep in released.cancelled:
            await self._record_end(dep, TaskStatus.CANCELLED, "a dependency did not succeed")
        callbacks = []
        for task, value in finished:
            callback = task.on_success if succeeded else task.on_failure
            if callback:
                args = (value,) if succeeded else (task.id, value)
                callbacks.append(
                    Task(
                        func=callback,
                        args=args,
                        queue=task.queue,
                        metadata={"callback_of": task.id},
                    )
                )
        if callbacks:
            await self.enqueue_prepared(callbacks)

    async def maintenance(self, *, run_scheduler: bool = True) -> None:
        """One round of background duties: scheduler tick, TTL sweep, event flush."""
        if run_scheduler:
            await self.scheduler.tick()
        now = time.time()
        if now - self._last_sweep >= TTL_SWEEP_INTERVAL:
            self._last_sweep = now
            for task_id in await self.task_queue.cleanup_expired():
                await self._record_end(task_id, TaskStatus.EXPIRED, "expired before it ran (TTL)")
                await self._release(task_id, succeeded=False)
        if now - self._last_dependency_sweep >= DEPENDENCY_SWEEP_INTERVAL:
            self._last_dependency_sweep = now
            await self.sweep_waiting()
        if now - self._last_prune >= RETENTION_SWEEP_INTERVAL:
            self._last_prune = now
            await self.prune(now)
        await self.events.flush()

    async def prune(self, now: float | None = None) -> dict[str, int]:
        """Delete what the retention settings no longer keep, in bounded batches:
        results past their TTL, events older than ``event_retention``, and finished
        tasks that ended more than ``result_ttl`` ago (a finished task is kept as long
        as its result). Workers run this every ``RETENTION_SWEEP_INTERVAL`` seconds.
        Returns how many of each were deleted."""
        await self.connect()
        now = time.time() if now is None else now
        cfg = self.config
        counts = {"results": await self.result_storage.cleanup_expired(now)}
        counts["events"] = 0
        if self.event_storage is not None and cfg.event_retention:
            await self.events.flush()
            counts["events"] = await self.event_storage.cleanup(now - cfg.event_retention)
        counts["tasks"] = 0
        if cfg.result_ttl:
            before = now - cfg.result_ttl
            while True:
                n = await self.task_queue.prune_finished(before, PRUNE_BATCH)
                counts["tasks"] += n
                if n < PRUNE_BATCH:
                    break
        if any(counts.values()):
            log.info("retention sweep deleted %s", counts)
        return counts

    async def sweep_waiting(self, limit: int = 1000) -> int:
        """Release (or cancel) WAITING tasks whose dependencies have all ended.

        Normally the worker that finishes a dependency releases its dependents at once;
        this catches the ones stranded by a worker killed between the two steps.
        Returns how many dependencies were re-released.
        """
        queue = self.task_queue
        released = 0
        for task in await queue.list(status=TaskStatus.WAITING, limit=limit):
            deps = [await queue.get(d) for d in task.depends_on]
            statuses = [d.status if d else None for d in deps]
            failed = [
                d.id
                for d in deps
                if d is not None and d.status.is_final and d.status is not TaskStatus.SUCCESS
            ]
            if failed:
                await self._release(failed[0], succeeded=False)
                released += 1
            elif deps and all(s is TaskStatus.SUCCESS for s in statuses):
                await self._release(task.depends_on[-1], succeeded=True)
                released += 1
        return released

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
        return await self.schedule_storage.delete(schedule_id)  # type: ignore[no-any-return]

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


class OmniQ:
    """The blocking API: every AsyncOmniQ method with a ``_sync`` suffix.

    Work runs on OmniQ's background event-loop thread (see :mod:`omniq.sync`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async = AsyncOmniQ(*args, **kwargs)

    @classmethod
    def from_config(cls, source: OmniQConfig | dict[str, Any] | str, **overrides: Any) -> OmniQ:
        """Build from a YAML path, a dict or an OmniQConfig (overrides win)."""
        return cls(config=source, **overrides)

    @property
    def async_(self) -> AsyncOmniQ:
        """The async twin (shares components and registered tasks)."""
        return self._async

    @property
    def config(self) -> OmniQConfig:
        return self._async.config

    @property
    def registry(self) -> dict[str, TaskFunction[Any, Any]]:
        return self._async.registry

    def _wrapped(self, kind: str) -> Any:
        component = self._async._components[kind]
        if component is None:
            return None
        return _sync_twin(component)

    @property
    def task_queue(self) -> Any:
        """The blocking twin of the task queue."""
        return self._wrapped("task_queue")

    @property
    def result_storage(self) -> Any:
        """The blocking twin of the result storage."""
        return self._wrapped("result_storage")

    @property
    def event_storage(self) -> Any:
        """The blocking twin of the event storage, or None."""
        return self._wrapped("event_storage")

    @property
    def schedule_storage(self) -> Any:
        """The blocking twin of the schedule storage."""
        return self._wrapped("schedule_storage")

    # lifecycle
    def connect_sync(self) -> None:
        run_sync(self._async.connect)

    def close_sync(self) -> None:
        run_sync(self._async.close)

    def __enter__(self) -> OmniQ:
        self.connect_sync()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_sync()

    # tasks
    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> TaskFunction[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def task(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        rate_limit: str | None = None,
        **options: Any,
    ) -> TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a task (same as :meth:`AsyncOmniQ.task`)."""
        return self._async.task(fn, **options) if fn is not None else self._async.task(**options)

    def enqueue_sync(self, fn: Any, /, *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        return run_sync(self._async.enqueue, fn, *args, **kwargs)

    def enqueue_task_sync(
        self, tf: TaskFunction[Any, R], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> TaskHandle[R]:
        return run_sync(self._async.enqueue_task, tf, args, kwargs)

    def enqueue_many_tasks_sync(
        self,
        tf: TaskFunction[Any, R],
        calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        *,
        batch_size: int = 500,
    ) -> list[TaskHandle[R]]:
        return run_sync(self._async.enqueue_many_tasks, tf, calls, batch_size=batch_size)

    def enqueue_prepared_sync(self, tasks: list[Task]) -> list[TaskStatus]:
        return run_sync(self._async.enqueue_prepared, tasks)

    def after_finish_sync(self, task: Task, *, succeeded: bool, value: Any) -> None:
        run_sync(self._async.after_finish, task, succeeded=succeeded, value=value)

    def sweep_waiting_sync(self, limit: int = 1000) -> int:
        return run_sync(self._async.sweep_waiting, limit)

    def after_finish_many_sync(
        self, finished: Sequence[tuple[Task, Any]], *, succeeded: bool
    ) -> None:
        run_sync(self._async.after_finish_many, finished, succeeded=succeeded)

    def prune_sync(self, now: float | None = None) -> dict[str, int]:
        return run_sync(self._async.prune, now)

    def maintenance_sync(self, *, run_scheduler: bool = True) -> None:
        run_sync(self._async.maintenance, run_scheduler=run_scheduler)

    def get_task_sync(self, task_id: str) -> Task | None:
        return run_sync(self._async.get_task, task_id)

    def get_result_sync(self, task_id: str) -> TaskResult | None:
        return run_sync(self._async.get_result, task_id)

    def wait_result_sync(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        return run_sync(self._async.wait_result, task_id, timeout)

    def status_sync(self, task_id: str) -> TaskStatus | None:
        return run_sync(self._async.status, task_id)

    def cancel_sync(self, task_id: str) -> bool:
        return run_sync(self._async.cancel, task_id)

    # schedules
    def schedule_sync(self, fn: Any, **kwargs: Any) -> str:
        return run_sync(self._async.schedule, fn, **kwargs)

    def pause_schedule_sync(self, schedule_id: str) -> bool:
        return run_sync(self._async.pause_schedule, schedule_id)

    def resume_schedule_sync(self, schedule_id: str) -> bool:
        return run_sync(self._async.resume_schedule, schedule_id)

    def list_schedules_sync(self, state: ScheduleState | None = None) -> list[Schedule]:
        return run_sync(self._async.list_schedules, state)

    def get_schedule_sync(self, schedule_id: str) -> Schedule | None:
        return run_sync(self._async.get_schedule, schedule_id)

    def delete_schedule_sync(self, schedule_id: str) -> bool:
        return run_sync(self._async.delete_schedule, schedule_id)

    # events
    def get_events_sync(self, task_id: str | None = None, **filters: Any) -> list[TaskEvent]:
        return run_sync(self._async.get_events, task_id, **filters)

    # workers
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

    def drain_sync(self, queues: Sequence[str] | None = None, **options: Any) -> None:
        run_sync(self._async.drain, queues, **options)


_TWINS: dict[type, type] = {}


def _sync_twin(component: Any) -> Any:
    """Wrap an async component in its sync twin (found by naming convention)."""
    cls = type(component)
    twin = _TWINS.get(cls)
    if twin is None:
        module = sys.modules[cls.__module__]
        name = cls.__name__.removeprefix("Async")
        twin = getattr(module, name, None)
        if twin is None or not issubclass(twin, SyncWrapper):
            twin = type(name, (SyncWrapper,), {}, async_class=cls)
        _TWINS[cls] = twin
    return twin.wrap(component)  # type: ignore[union-attr]
