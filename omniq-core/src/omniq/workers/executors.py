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
        import asyncio

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._thread_pool(), functools.partial(fn, *args, **kwargs)
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
    """Sync functions as greenlets in a gevent pool, run by a hub in a helper thread."""

    name = "gevent"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        try:
            import gevent.pool  # noqa: F401
        except ImportError as e:
            raise ConfigurationError(
                "the gevent worker needs gevent: pip install 'omniq-core[gevent]'"
            ) from e
        self._jobs: Any = None
        self._thread: Any = None

    async def start(self) -> None:
        import queue
        import threading

        self._jobs = queue.SimpleQueue()
        ready = threading.Event()

        def hub_main() -> None:
            import gevent
            import gevent.pool

            pool = gevent.pool.Pool(self.concurrency)
            ready.set()
            while True:
                job = self._jobs.get()
                if job is None:
                    pool.join()
                    return
                fut, fn = job
                pool.spawn(_run_into_future, fut, fn)
                gevent.sleep(0)

        self._thread = threading.Thread(target=hub_main, name="omniq-gevent", daemon=True)
        self._thread.start()
        ready.wait()

    async def _call_sync(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        import asyncio
        import concurrent.futures

        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((fut, functools.partial(fn, *args, **kwargs)))
        return await asyncio.wrap_future(fut)

    async def stop(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
        await super().stop()


def _run_into_future(fut: Any, fn: Callable[[], Any]) -> None:
    try:
        fut.set_result(fn())
    except BaseException as e:
        fut.set_exception(e)
