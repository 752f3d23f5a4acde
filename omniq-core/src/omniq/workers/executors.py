"""Executors: where a claimed task's function actually runs.

* ``async``   — coroutine functions on the worker's event loop; sync functions in threads.
* ``thread``  — sync functions in a thread pool of ``concurrency`` threads.
* ``process`` — a pool of child processes; the only executor that can stop a stuck sync
  function: on timeout the child is killed and replaced, and the worker goes on.
* ``gevent``  — greenlets on a gevent hub in a helper thread (extra ``omniq-core[gevent]``).

A thread cannot be killed: on timeout the thread executors stop waiting and report a
TaskTimeoutError, but the function runs on in its thread until it returns. For the same
reason a worker never hands back a sync task running in a thread at the end of its
shutdown grace period (see :meth:`Executor.can_stop`).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from omniq.errors import ConfigurationError, TaskTimeoutError


class Executor(ABC):
    """Runs task functions with a timeout; at most ``concurrency`` at once."""

    name = "base"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)

    async def start(self) -> None:
        """Prepare resources (pools, child processes)."""

    async def stop(self) -> None:
        """Release resources."""

    def can_stop(self, fn: Callable[..., Any]) -> bool:
        """True when a run of ``fn`` ends for real if its caller is cancelled (a
        coroutine, a killable child process); False when it would run on (a thread).
        The worker hands back only tasks that can be stopped."""
        return True

    @abstractmethod
    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` (``name`` is its registered name); raise
        TaskTimeoutError after ``timeout`` seconds."""


def _timeout_error(name: str, timeout: float | None) -> TaskTimeoutError:
    return TaskTimeoutError(f"task {name} exceeded its timeout of {timeout} s")


class AsyncExecutor(Executor):
    """Coroutines on the loop, sync functions in threads."""

    name = "async"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._is_coro: dict[Callable[..., Any], bool] = {}

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="omniq-task")
        return self._pool

    async def _call_sync(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``fn`` in a pool thread, in a copy of the caller's context variables
        (``run_in_executor`` alone copies none): the function sees what the worker set
        for the run, e.g. the current span of a tracing plugin."""
        import asyncio

        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(
            self._thread_pool(), functools.partial(ctx.run, fn, *args, **kwargs)
        )

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        if timeout is None:
            return await self._call(fn, args, kwargs)
        try:
            with anyio.fail_after(timeout):
                return await self._call(fn, args, kwargs)
        except TimeoutError as e:
            raise _timeout_error(name, timeout) from e

    async def _call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._is_coroutine_function(fn):
            return await fn(*args, **kwargs)
        out = await self._call_sync(fn, args, kwargs)
        return await out if inspect.isawaitable(out) else out

    def can_stop(self, fn: Callable[..., Any]) -> bool:
        """Coroutines are cancelled; a sync function runs on in its thread."""
        return self._is_coroutine_function(fn)

    def _is_coroutine_function(self, fn: Callable[..., Any]) -> bool:
        try:
            known = self._is_coro.get(fn)
        except TypeError:  # an unhashable callable object
            return inspect.iscoroutinefunction(fn)
        if known is None:
            known = self._is_coro[fn] = inspect.iscoroutinefunction(fn)
        return known

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class ThreadExecutor(AsyncExecutor):
    """Sync functions in a pool of ``concurrency`` threads (coroutines still on the loop)."""

    name = "thread"


class GeventExecutor(AsyncExecutor):
    """Sync functions as greenlets in a gevent pool of ``concurrency``, run by a gevent hub
    in a helper thread (``omniq-gevent``).

    The helper thread's main greenlet dispatches runs; while it waits for one it sits in
    the hub, so the task greenlets keep running. Requests cross from the worker's event
    loop through thread-safe deques and a hub ``async_`` watcher, whose ``send()`` is safe
    from another thread: its callback, in the hub, kills greenlets asked to stop and wakes
    the dispatcher.

    Greenlets take turns only where they yield to the hub: gevent calls (``gevent.sleep``,
    gevent sockets), or blocking standard-library calls in a process monkey-patched before
    anything else was imported (``python -m gevent.monkey --module omniq worker ...``).
    Without patching, a task blocked in ``time.sleep`` or a plain socket blocks the hub,
    so such tasks run one at a time; :meth:`start` then logs a warning (once per process).

    A run that times out (or is cancelled) has its greenlet killed: ``GreenletExit`` is
    raised in it where it next yields. One that never yields runs on, as in a thread, so
    :meth:`can_stop` stays False for sync functions.
    """

    name = "gevent"
    _warned_unpatched = False  # once per process

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        try:
            import gevent.pool  # noqa: F401
        except ImportError as e:
            raise ConfigurationError(
                "the gevent worker needs gevent: pip install 'omniq-core[gevent]'"
            ) from e
        self._check_patched_in_time()
        self._hub: GeventExecutor._HubLink | None = None

    class _HubLink:
        """What the event loop's thread shares with one hub thread: requests go into the
        deques, then :meth:`send` wakes the hub (a no-op once the hub has ended)."""

        def __init__(self) -> None:
            import collections
            import threading

            self.runs: collections.deque[Any] = collections.deque()  # (future, fn); None: end
            self.kills: collections.deque[Any] = collections.deque()  # futures of runs to end
            self.lock = threading.Lock()
            self.watcher: Any = None  # the hub's async_ watcher, while the hub runs
            self.thread: Any = None

        def send(self) -> None:
            with self.lock:
                if self.watcher is not None:
                    self.watcher.send()

    async def start(self) -> None:
        self._start_hub()

    def _start_hub(self) -> GeventExecutor._HubLink:
        import threading

        if self._hub is not None:
            return self._hub
        self._warn_if_unpatched()
        from gevent import monkey

        link = GeventExecutor._HubLink()
        concurrency = self.concurrency
        # with threading patched, the "thread" below is a greenlet on the caller's hub,
        # which is not ours to destroy
        own_hub = not monkey.is_module_patched("threading")
        ready = threading.Event()
        failed: list[BaseException] = []

        def hub_main() -> None:
            try:
                import gevent
                import gevent.event
                import gevent.pool

                hub = gevent.get_hub()  # this thread's (the caller's if threads are greenlets)
                pool = gevent.pool.Pool(concurrency)
                wake = gevent.event.Event()
                running: dict[Any, Any] = {}  # future -> its greenlet

                def on_send() -> None:  # in the hub: must not block
                    while link.kills:
                        g = running.get(link.kills.popleft())
                        if g is not None:
                            g.kill(block=False)
                    wake.set()

                watcher = hub.loop.async_()
                watcher.start(on_send)
                link.watcher = watcher
            except BaseException as e:
                failed.append(e)
                ready.set()
                return
            ready.set()
            try:
                while True:
                    wake.wait()  # in the hub: the task greenlets run meanwhile
                    wake.clear()
                    while link.runs:
                        job = link.runs.popleft()
                        if job is None:
                            pool.join()
                            return
                        fut, fn = job
                        # all greenlets busy: wait for one (a timed-out run ends where
                        # it next yields)
                        pool.wait_available()
                        # no switch from here to `running`: a kill finds the greenlet
                        if not fut.set_running_or_notify_cancel():
                            continue  # cancelled before it started
                        g = pool.spawn(_run_into_future, fut, fn)
                        running[fut] = g
                        g.link(lambda _g, fut=fut: running.pop(fut, None))
            finally:
                with link.lock:
                    link.watcher = None
                    watcher.close()
                if own_hub:
                    hub.destroy(destroy_loop=True)

        link.thread = threading.Thread(target=hub_main, name="omniq-gevent", daemon=True)
        link.thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        self._hub = link
        return link

    @staticmethod
    def _check_patched_in_time() -> None:
        """Refuse a process patched after its event loop started (``patch_all()`` in the
        app module): threads are greenlets then, but the loop blocks in a plain selector
        that never yields to them, and the worker would hang."""
        import asyncio

        from gevent import monkey

        if not monkey.is_module_patched("threading"):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        selector = getattr(loop, "_selector", None)  # a selector event loop's
        if selector is not None and not type(selector).__module__.startswith("gevent"):
            raise ConfigurationError(
                "the process was monkey-patched by gevent after its event loop started "
                "(patch_all() in the app module?), and the worker would hang: patch before "
                "anything else is imported, with python -m gevent.monkey --module omniq "
                "worker --worker gevent ..."
            )

    @classmethod
    def _warn_if_unpatched(cls) -> None:
        import logging

        from gevent import monkey

        if cls._warned_unpatched or monkey.is_module_patched("time"):
            return
        cls._warned_unpatched = True
        logging.getLogger("omniq.worker").warning(
            "gevent worker in a process that is not monkey-patched: tasks take turns only "
            "where they call gevent (gevent.sleep, gevent sockets), and sync functions that "
            "block (time.sleep, plain sockets) run one at a time. Patch the process first: "
            "python -m gevent.monkey --module omniq worker --worker gevent ..."
        )

    async def _call_sync(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        import asyncio
        import concurrent.futures

        link = self._start_hub()
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        # a greenlet starts in an empty context: run in a copy of the caller's
        ctx = contextvars.copy_context()
        link.runs.append((fut, functools.partial(ctx.run, fn, *args, **kwargs)))
        link.send()
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            # a timeout or a stop: a run not yet started never starts; a running
            # greenlet is killed where it next yields
            if not fut.cancel() and not fut.done():
                link.kills.append(fut)
                link.send()
            raise

    async def stop(self) -> None:
        link, self._hub = self._hub, None
        if link is not None:
            link.runs.append(None)  # the hub thread ends once its greenlets have
            link.send()
        await super().stop()


def _run_into_future(fut: Any, fn: Callable[[], Any]) -> None:
    try:
        result = fn()
    except BaseException as e:  # GreenletExit too: the future must end
        fut.set_exception(e)
    else:
        fut.set_result(result)
