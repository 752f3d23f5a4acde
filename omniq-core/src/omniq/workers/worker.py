"""AsyncWorker: the one claim loop behind every executor.

It claims tasks in batches (``dequeue_many``), runs each on the executor, renews the
leases of running tasks, enforces timeouts, retries with backoff, records results and
events, releases or cancels dependents, and runs the scheduler and TTL sweeps. On stop
(SIGTERM/SIGINT in ``omniq worker``) it stops claiming, lets running tasks finish within
the grace period, and hands the rest back (their leases are released to other workers).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio

from omniq import rules
from omniq.config.logging import LoggingConfig, ensure_logging
from omniq.conversion import Converter, argument_converter
from omniq.errors import (
    PayloadTooLargeError,
    SerializationError,
    TaskFailedError,
    TaskTimeoutError,
    UnknownTaskError,
    describe_exception,
    format_traceback,
)
from omniq.models import EventType, Task, TaskEvent, TaskResult, TaskStatus, new_id
from omniq.queue.retry import backoff_delay, should_retry
from omniq.workers.presence import run_presence
from omniq.workers.ratelimit import RateLimiter

if TYPE_CHECKING:
    from omniq.core import AsyncOmniQ
    from omniq.workers.executors import Executor

log = logging.getLogger("omniq.worker")

#: Adaptive prefetch holds about this many seconds of work per running slot ...
PREFETCH_HORIZON = 0.05
#: ... and at most this many tasks per running slot.
PREFETCH_MAX_FACTOR = 30

#: Extra claims allowed after lost leases before a task counts as poison (dead-lettered).
MAX_LOST_LEASES = 5
#: Seconds between reads of the paused queues.
PAUSE_REFRESH = 1.0
#: Seconds the stopped tasks get to unwind after the grace period (a child is killed).
STOP_BOUND = 5.0
#: Errors of one result that writing it again cannot fix: that task fails alone.
RESULT_ERRORS = (SerializationError, PayloadTooLargeError)


class AsyncWorker:
    """Claims and runs tasks until stopped (or, in burst mode, until the queues are empty)."""

    def __init__(
        self,
        oq: AsyncOmniQ,
        *,
        queues: list[str] | None = None,
        concurrency: int = 10,
        prefetch: int | None = None,
        executor: Executor,
        scheduler: bool = True,
        burst: bool = False,
        lease: float = 30.0,
        heartbeat_interval: float | None = None,
        shutdown_grace: float = 30.0,
        poll_interval: float = 1.0,
        maintenance_interval: float = 0.25,
    ) -> None:
        # the app's collaborators, taken once: the worker never calls back into the app
        self.queue = oq.task_queue
        self.results = oq.result_storage
        self.events = oq.events
        self.plugins = oq.plugins
        self.lifecycle = oq.lifecycle
        self._registry = oq.registry
        self._resolve = oq.resolve_function
        self._connect = oq.connect
        self._logging = LoggingConfig.from_config(oq.config)
        #: Seconds between the one-line stats logs (None: never).
        self.stats_interval: float | None = oq.config.worker_stats_interval
        self.queues = queues or ["default"]
        #: The worker's queues that are not paused (refreshed by ``_pause_loop``).
        self._claimable = list(self.queues)
        self._claimable_changed = anyio.Event()
        self.concurrency = max(1, concurrency)
        self._fixed_prefetch = None if prefetch is None else max(0, prefetch)
        self._avg_run: float | None = None  # moving average of task run time, seconds
        self.executor = executor
        self.run_scheduler = scheduler
        self.burst = burst
        self.lease = lease
        self.heartbeat_interval = heartbeat_interval or max(lease / 3, 0.05)
        self.shutdown_grace = shutdown_grace
        self.poll_interval = poll_interval
        self.maintenance_interval = maintenance_interval
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self.processed = 0
        self.failed = 0
        self._running: dict[str, tuple[Task, anyio.CancelScope]] = {}
        # claimed tasks not yet picked up by a runner
        self._pending: deque[Task] = deque()
        self._work = anyio.Event()
        self._stopping = anyio.Event()
        self._stopped = anyio.Event()
        self._limiters: dict[str, RateLimiter] = {}
        # finished tasks waiting to be written in one batch: (task, result)
        self._done: list[tuple[Task, TaskResult]] = []
        # the batch being written now: its claims are still held (and heartbeated)
        self._writing: list[tuple[Task, TaskResult]] = []
        self._done_ready = anyio.Event()
        self._unrecorded = 0  # finished tasks whose results are not written yet
        self._slot_freed = anyio.Event()
        # running tasks that cannot be stopped (a sync function in a thread)
        self._unstoppable: set[str] = set()
        #: Tasks left running in threads when the worker stopped (not handed back).
        self.abandoned: list[Task] = []

    # --- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop claiming and drain (safe to call more than once)."""
        self._stopping.set()
        self._slot_freed.set()  # the claim loop may be waiting for a busy slot

    @property
    def running_tasks(self) -> list[Task]:
        """The tasks running right now."""
        return [task for task, _ in self._running.values()]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`run` has returned."""
        await self._stopped.wait()

    async def run(self) -> None:
        """Run until :meth:`stop` (or until idle, in burst mode)."""
        ensure_logging(self._logging)
        await self._connect()
        await self.executor.start()
        await self.plugins.acall("omniq_worker_startup", worker=self)
        paused_known = await self._read_paused()
        log.info("worker %s started on queues %s", self.id, self.queues)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(run_presence, self)
                if paused_known:
                    tg.start_soon(self._pause_loop)
                tg.start_soon(self._maintenance_loop)
                tg.start_soon(self._completion_loop)
                if self.stats_interval:
                    tg.start_soon(self._stats_loop, self.stats_interval)
                async with anyio.create_task_group() as runners:
                    for _ in range(self.concurrency):
                        runners.start_soon(self._runner)
                    await self._claim_loop()
                    await self._drain()
                    runners.cancel_scope.cancel()
                await self._flush_completions()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.executor.stop()
                await self.plugins.acall("omniq_worker_shutdown", worker=self)
                await self.events.flush()
                self._stopped.set()
                log.info(
                    "worker %s stopped (%d processed, %d failed)",
                    self.id, self.processed, self.failed,
                )  # fmt: skip

    async def _drain(self) -> None:
        """Hand back claimed tasks that have not started; give running tasks the grace
        period, then stop and hand back the rest -- except tasks that cannot be stopped
        (sync functions in threads), which are left to their leases."""
        # taken out before the first await, so no runner starts one while it is handed back
        held = list(self._pending)
        self._pending.clear()
        await self._hand_back(held, started=False)
        with anyio.move_on_after(self.shutdown_grace):
            while self._running:
                await anyio.sleep(0.01)
        if not self._running:
            return
        running = list(self._running.values())
        stuck = [t for t, _ in running if t.id in self._unstoppable]
        stoppable = [(t, scope) for t, scope in running if t.id not in self._unstoppable]
        if stuck:
            self.abandoned = stuck
            log.warning(
                "grace period over: %d running task(s) are sync functions in threads, which "
                "cannot be stopped: %s. They are NOT handed back; their leases lapse and "
                "another worker runs them again (use the process executor for tasks that "
                "must be stoppable)",
                len(stuck),
                ", ".join(f"{t.id} ({t.func})" for t in stuck),
            )
        if not stoppable:
            await self._report_abandoned()
            return
        log.warning("grace period over: stopping, then handing back %d task(s)", len(stoppable))
        for _, scope in stoppable:
            scope.cancel()
        ids = {t.id for t, _ in stoppable}
        with anyio.move_on_after(STOP_BOUND):
            while ids & self._running.keys():
                await anyio.sleep(0.01)
        await self._hand_back([t for t, _ in stoppable], started=True)
        await self._report_abandoned()

    async def _report_abandoned(self) -> None:
        """Tell plugins about the tasks left running in threads (last: a sync function
        that returned meanwhile finished normally)."""
        for task in self.abandoned:
            if task.id in self._running:
                await self._interrupted(task, "abandoned")

    async def _interrupted(self, task: Task, reason: str) -> None:
        """Call ``omniq_task_interrupted`` (nothing to do when no plugin implements it)."""
        if self.plugins.implemented("omniq_task_interrupted"):
            await self.plugins.acall("omniq_task_interrupted", task=task, reason=reason)

    async def _hand_back(self, tasks: list[Task], *, started: bool) -> None:
        """Release the claims at once instead of waiting for the leases to lapse. A task
        that never started keeps its attempt (``unclaim``); one stopped mid-run counts."""
        queue = self.queue
        if tasks:
            log.info(
                "handing back %d %s task(s): %s",
                len(tasks), "stopped" if started else "claimed, not started",
                ", ".join(t.id for t in tasks[:10]) + (" ..." if len(tasks) > 10 else ""),
            )  # fmt: skip
        with anyio.CancelScope(shield=True):
            for task in tasks:
                ok = True  # if handing back fails, the lease lapses: same reason
                try:
                    if started:
                        ok = await queue.fail(task, time.time(), error=rules.WORKER_STOPPED)
                    else:
                        ok = await queue.unclaim(task)
                except Exception:
                    log.exception("could not hand back task %s; its lease will lapse", task.id)
                reason = ("stopped" if started else "handed_back") if ok else "claim_lost"
                await self._interrupted(task, reason)

    # --- claiming ------------------------------------------------------------------------

    @property
    def prefetch(self) -> int:
        """Claimed tasks held ready beyond the running ones, so claims come in bigger,
        cheaper batches. Fixed when configured; otherwise adaptive: about
        ``PREFETCH_HORIZON`` seconds of work per slot (none for long tasks, up to
        ``PREFETCH_MAX_FACTOR`` times the concurrency for very short ones)."""
        if self._fixed_prefetch is not None:
            return self._fixed_prefetch
        if self._avg_run is None:
            return self.concurrency
        per_slot = min(PREFETCH_MAX_FACTOR, PREFETCH_HORIZON / max(self._avg_run, 1e-6))
        return int(self.concurrency * per_slot)

    @property
    def _free(self) -> int:
        """Room for more claims: running slots plus the prefetch buffer, minus what is
        running or claimed and not started."""
        room = self.concurrency + self.prefetch
        # finished tasks whose results are not written yet would run again after a crash:
        # when writes fall behind by more than ``room`` of them, stop claiming until
        # they catch up
        backlog = max(0, self._unrecorded - room)
        return room - len(self._running) - len(self._pending) - backlog

    async def _claim_loop(self) -> None:
        queue = self.queue
        # claim in batches: with tasks still running, wait briefly for a quarter of the
        # room to free up rather than paying one round trip per finished task
        while not self.stopping:
            batch_min = max(1, (self.concurrency + self.prefetch) // 4)
            if self._free <= 0:
                await self._wait_for_slot_change()
                continue
            if self._free < batch_min and self._running:
                # runners still have held tasks to start: no hurry
                with anyio.move_on_after(0.005 if len(self._pending) < self.concurrency else 0.05):
                    while self._free < batch_min and self._running:
                        await self._wait_for_slot_change()
            wait = 0.0 if self.burst else self.poll_interval
            claimable = self._claimable
            if not claimable:  # every queue of this worker is paused
                if self.burst:
                    break
                await self._claimable_changed.wait()
                continue
            claimed: list[Task] = []  # a claim cut off below yields nothing
            with anyio.move_on_after(wait + queue.claim_grace):
                claimed = await queue.dequeue_many(
                    claimable, self._free, worker_id=self.id, lease=self.lease, wait=wait
                )
            if not claimed:
                if self.burst and await self._idle():
                    break
                if self.burst:
                    await anyio.sleep(0.05)
                continue
            self._pending.extend(claimed)
            work, self._work = self._work, anyio.Event()
            work.set()

    async def _wait_for_slot_change(self) -> None:
        self._slot_freed = anyio.Event()
        await self._slot_freed.wait()

    async def _runner(self) -> None:
        """One of ``concurrency`` long-lived runners: runs claimed tasks one at a time.

        A runner's tasks share one cancel scope (a scope per task costs more than a
        no-op task): stopping a running task cancels its runner's scope, and the
        runner opens a new scope for the next task.
        """
        pending = self._pending
        while True:
            with anyio.CancelScope() as scope:
                while not scope.cancel_called:
                    if not pending:
                        await self._work.wait()
                        continue
                    await self._run_task(pending.popleft(), scope)

    async def _idle(self) -> bool:
        """Burst mode: True when nothing runs here and nothing is pending or running."""
        if self._running or self._pending or self._unrecorded:
            return False  # finished tasks not yet recorded may still release dependents
        q = self.queue
        for name in self.queues:
            if await q.count(name, TaskStatus.PENDING) or await q.count(name, TaskStatus.RUNNING):
                return False
        return True

    # --- running one task ------------------------------------------------------------------

    async def _run_task(self, task: Task, scope: anyio.CancelScope) -> None:
        """Run one task; ``scope`` (its runner's) is what cancels it (see ``_runner``)."""
        self._running[task.id] = (task, scope)
        t0 = time.perf_counter()
        try:
            await self._execute(task)
            took = time.perf_counter() - t0
            avg = self._avg_run
            self._avg_run = took if avg is None else avg + 0.1 * (took - avg)
        except Exception:
            log.exception("internal error while handling task %s", task.id)
        except BaseException:
            if scope.cancel_called:
                log.info("task %s stopped: cancelled, or its claim was lost", task.id)
            raise
        finally:
            self._running.pop(task.id, None)
            self._unstoppable.discard(task.id)
            self._slot_freed.set()

    async def _execute(self, task: Task) -> None:
        if task.attempt > task.retries + 1 + MAX_LOST_LEASES:
            await self._finish_failed(task, rules.POISON_MESSAGE, None, None)
            return
        tf = self._registry.get(task.func)
        try:
            fn = tf.fn if tf is not None else self._resolve(task.func)
        except UnknownTaskError as e:
            log.error("task %s refused: %s", task.id, e, extra=_fields(task))
            await self._finish_failed(task, f"UnknownTaskError: {e}", None, None)
            return
        if tf is not None and tf.rate_limit:
            limiter = self._limiters.get(task.func)
            if limiter is None:
                limiter = self._limiters[task.func] = RateLimiter(tf.rate_limit)
            await limiter.acquire()
        started = time.time()
        if log.isEnabledFor(logging.DEBUG):  # no per-task fields dict when it is off
            log.debug(
                "task %s (%s) started, attempt %d", task.id, task.func, task.attempt,
                extra=_fields(task),
            )  # fmt: skip
        if self.events.enabled:
            self.events.emit(self._event(EventType.EXECUTING, task))
        plugins = self.plugins
        if plugins.implemented("omniq_task_started"):
            await plugins.acall("omniq_task_started", task=task)
        if not self.executor.can_stop(fn):
            self._unstoppable.add(task.id)
        args, kwargs = tuple(task.args), dict(task.kwargs)
        convert = _converter(fn)
        if convert is not None:  # restore the annotated types MessagePack lost
            args, kwargs = convert(args, kwargs)
        try:
            value = await self.executor.run(task.func, fn, args, kwargs, task.timeout)
        except Exception as e:
            await plugins.acall("omniq_task_finished", task=task, result=None, error=e)
            await self._handle_error(task, e, started)
            return
        if plugins.implemented("omniq_task_finished"):
            await plugins.acall("omniq_task_finished", task=task, result=value, error=None)
        await self._finish_success(task, value, started)

    async def _finish_success(self, task: Task, value: Any, started: float) -> None:
        """Queue the result for the next batch write (see :meth:`_completion_loop`)."""
        result = TaskResult(
            task_id=task.id,
            status=TaskStatus.SUCCESS,
            result=value,
            attempt=task.attempt,
            worker_id=self.id,
            started_at=started,
            expires_at=self.lifecycle.result_expiry(task),
        )
        self._done.append((task, result))
        self._unrecorded += 1
        self._done_ready.set()

    async def _completion_loop(self) -> None:
        """Write finished tasks in batches: one ``set_many`` and one ``complete_many`` for
        everything that finished while the previous batch was being written."""
        while True:
            await self._done_ready.wait()
            self._done_ready = anyio.Event()
            await anyio.sleep(0)  # let tasks finishing in the same loop turn join the batch
            await self._flush_completions()

    async def _flush_completions(self) -> None:
        while self._done:
            batch, self._done = self._done, []
            self._writing = batch
            with anyio.CancelScope(shield=True):
                try:
                    await self._write_batch(batch)
                    retry = []
                except Exception:
                    # one by one: one task's bad result must not hold up the others
                    retry = await self._write_each(batch)
                finally:
                    self._writing = []
                self._unrecorded -= len(batch) - len(retry)
                self._slot_freed.set()
                if retry:
                    self._done[:0] = retry
                    await anyio.sleep(0.5)

    async def _write_each(
        self, batch: list[tuple[Task, TaskResult]]
    ) -> list[tuple[Task, TaskResult]]:
        """Write finished tasks one at a time. A task whose result can never be written
        (it cannot be encoded, or it is too large) fails alone; the ones that failed for
        other reasons (the store is unreachable) are returned, to be retried."""
        retry: list[tuple[Task, TaskResult]] = []
        for item in batch:
            task, result = item
            try:
                await self._write_batch([item])
            except RESULT_ERRORS as e:
                log.error("the result of task %s cannot be stored: %s", task.id, e)
                try:
                    await self._handle_error(task, e, result.started_at or 0.0, retry=False)
                except Exception:
                    log.exception("could not record the failure of task %s; retrying", task.id)
                    retry.append(item)
            except Exception:
                log.exception("could not record finished task %s; retrying", task.id)
                retry.append(item)
        return retry

    async def _write_batch(self, batch: list[tuple[Task, TaskResult]]) -> None:
        accepted = await self.queue.complete_with_results(batch, self.results)
        finished: list[tuple[Task, Any]] = []
        events_on = self.events.enabled
        for (task, result), ok in zip(batch, accepted, strict=True):
            if not ok:
                log.warning(
                    "task %s (%s) finished but its claim was lost (attempt %d): cancelled, "
                    "or its lease lapsed and another worker took it; the result is dropped",
                    task.id, task.func, task.attempt,
                )  # fmt: skip
                await self._interrupted(task, "claim_lost")
                continue
            self.processed += 1
            if events_on:
                self.events.emit(self._event(EventType.COMPLETE, task))
            finished.append((task, result.result))
        await self.lifecycle.after_finish(finished, succeeded=True)

    async def _handle_error(
        self, task: Task, e: BaseException, started: float, *, retry: bool = True
    ) -> None:
        if isinstance(e, TaskFailedError) and e.error:
            error, tb = e.error, e.traceback
        else:
            error = describe_exception(e)
            tb = format_traceback(e)
        if retry and should_retry(task.attempt, task.retries):
            delay = backoff_delay(task.attempt, task.retry_delay)
            if await self.queue.fail(task, time.time() + delay, error=error):
                log.warning(
                    "task %s (%s) failed on attempt %d of %d: %s; retry in %.2f s",
                    task.id, task.func, task.attempt, task.retries + 1, error, delay,
                    extra=_fields(task, tb),
                )  # fmt: skip
                self.events.emit(
                    self._event(EventType.RETRY, task, message=f"{error}; retry in {delay:.2f} s")
                )
            else:
                log.warning(
                    "task %s (%s) failed on attempt %d, but its claim was lost: %s",
                    task.id, task.func, task.attempt, error,
                )  # fmt: skip
                await self._interrupted(task, "claim_lost")
            return
        await self._finish_failed(task, error, tb, started)

    async def _finish_failed(
        self, task: Task, error: str, tb: str | None, started: float | None
    ) -> None:
        if not await self.queue.fail(task, None, error=error):
            log.warning(
                "task %s (%s) failed on attempt %d, but its claim was lost: %s",
                task.id, task.func, task.attempt, error,
            )  # fmt: skip
            await self._interrupted(task, "claim_lost")
            return
        self.failed += 1
        self.processed += 1
        log.error(
            "task %s (%s) failed on attempt %d: %s",
            task.id, task.func, task.attempt, error, extra=_fields(task, tb),
        )  # fmt: skip
        await self.results.set(
            TaskResult(
                task_id=task.id,
                status=TaskStatus.FAILED,
                error=error,
                traceback=tb,
                attempt=task.attempt,
                worker_id=self.id,
                started_at=started,
                expires_at=self.lifecycle.result_expiry(task),
            )
        )
        kind = EventType.ERROR
        self.events.emit(self._event(kind, task, message=error))
        await self.lifecycle.after_finish([(task, error)], succeeded=False)

    def _event(self, kind: EventType, task: Task, message: str | None = None) -> TaskEvent:
        return TaskEvent(
            event_type=kind,
            task_id=task.id,
            queue=task.queue,
            func=task.func,
            worker_id=self.id,
            attempt=task.attempt,
            schedule_id=task.schedule_id,
            message=message,
        )

    # --- background loops ------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        queue = self.queue
        while True:
            await anyio.sleep(self.heartbeat_interval)
            # every claim still held: running, waiting to start, finished and waiting
            # for (or in) the write of its result -- a slow store must not let a
            # finished task's lease lapse, or another worker would run it again
            held: list[tuple[Task, anyio.CancelScope | None]] = [
                *self._running.values(),
                *((t, None) for t in self._pending),
                *((t, None) for t, _ in (*self._done, *self._writing)),
            ]
            for task, scope in held:
                try:
                    alive = await queue.heartbeat(task, self.lease)
                except Exception:
                    log.exception("heartbeat for task %s failed; retrying", task.id)
                    continue
                if alive:
                    continue
                finishing = any(t is task for t, _ in (*self._done, *self._writing))
                if not (task.id in self._running or task in self._pending or finishing):
                    continue  # it ended meanwhile (its result was written): nothing lost
                # cancelled by request, or the claim went elsewhere
                log.warning(
                    "lost the claim on %s task %s (%s), attempt %d: cancelled, or its "
                    "lease lapsed and another worker took it; %s",
                    "running" if scope is not None else "finished" if finishing else "claimed",
                    task.id, task.func, task.attempt,
                    "stopping it" if scope is not None
                    else "its result will be refused" if finishing else "dropping it",
                )  # fmt: skip
                if scope is not None and task.id in self._running:
                    scope.cancel()
                elif scope is None and task in self._pending:
                    self._pending.remove(task)
                else:
                    continue  # finished, or started since: its result's refusal tells
                await self._interrupted(task, "claim_lost")

    async def _stats_loop(self, interval: float) -> None:
        """Log one line every ``interval`` seconds: processed, failed, rate, queue depth."""
        last_processed, last_t = self.processed, time.monotonic()
        while True:
            await anyio.sleep(interval)
            now = time.monotonic()
            rate = (self.processed - last_processed) / max(now - last_t, 1e-9)
            last_processed, last_t = self.processed, now
            try:
                depth = sum([await self.queue.count(q, TaskStatus.PENDING) for q in self.queues])
                shown = str(depth)
            except Exception as e:
                shown = f"unknown ({type(e).__name__})"
            log.info(
                "worker %s: processed %d, failed %d, %.1f tasks/s, running %d, "
                "queue depth %s",
                self.id, self.processed, self.failed, rate, len(self._running), shown,
            )  # fmt: skip

    async def _pause_loop(self) -> None:
        """Follow paused queues: claims skip them within about PAUSE_REFRESH seconds."""
        while await self._read_paused():
            await anyio.sleep(PAUSE_REFRESH)

    async def _read_paused(self) -> bool:
        """Read which of the worker's queues are paused; False when the backend cannot
        pause queues (then every queue is claimed from)."""
        try:
            paused = await self.queue.paused_queues()
        except NotImplementedError:
            return False
        except Exception:
            log.exception("reading the paused queues failed; will retry")
            return True
        claimable = [q for q in self.queues if q not in paused]
        if claimable != self._claimable:
            if paused & set(self.queues):
                log.info(
                    "queues paused, not claimed from: %s",
                    ", ".join(q for q in self.queues if q in paused),
                )
            self._claimable = claimable
            changed, self._claimable_changed = self._claimable_changed, anyio.Event()
            changed.set()
        return True

    async def _maintenance_loop(self) -> None:
        while True:
            try:
                await self.lifecycle.maintenance(run_scheduler=self.run_scheduler)
            except Exception:
                log.exception("maintenance (scheduler / TTL sweep) failed; will retry")
            await anyio.sleep(self.maintenance_interval)


def _fields(task: Task, traceback: str | None = None) -> dict[str, Any]:
    """Fields of a task for structured (JSON) log lines: ``extra=`` of a log call. A
    failed task's traceback goes in as the record's exception text (see
    :class:`_TaskTraceback`)."""
    fields: dict[str, Any] = {
        "task_id": task.id, "task": task.func, "queue": task.queue, "attempt": task.attempt,
    }  # fmt: skip
    if traceback:
        fields["task_traceback"] = traceback
    return fields


class _TaskTraceback(logging.Filter):
    """Make a failed task's traceback (formatted in the worker, or in a child process)
    the record's exception text: every formatter prints it under the message, and JSON
    lines carry it as ``exc``, as for any logged exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        traceback = record.__dict__.pop("task_traceback", None)
        if traceback and not record.exc_text:
            record.exc_text = traceback
        return True


log.addFilter(_TaskTraceback())


def _converter(fn: Any) -> Converter | None:
    try:
        return argument_converter(fn)
    except TypeError:  # an unhashable callable object: its arguments go as they came
        return None


__all__ = ["AsyncWorker", "TaskTimeoutError"]
