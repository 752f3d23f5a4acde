"""The process executor: child processes that can be killed when a task overruns.

Children are started with the ``spawn`` method (safe next to the worker's threads). The
parent sends the *location* of the function it resolved for a task (``module:qualname``
of the registered function object, never a name read from the task record), so a task
registered under a custom name runs, and a child imports only what the worker already
trusts. A child that overruns its timeout, dies, or is stopped is killed and replaced;
the worker goes on. A task's timeout starts when the child has loaded the function, so a
fresh child's start-up never counts against it.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import pickle
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import anyio

from omniq.errors import (
    ConfigurationError,
    TaskFailedError,
    describe_exception,
    format_traceback,
)
from omniq.workers.executors import Executor, _timeout_error

#: Seconds a child may take to load a task's function before the run fails.
LOAD_TIMEOUT = 120.0


class RemoteTaskError(TaskFailedError):
    """An exception raised by a task in a child process (type name, message, traceback)."""


def function_location(name: str, fn: Callable[..., Any]) -> str:
    """``module:qualname`` where a child process finds ``fn`` (the task named ``name``).

    Raises ConfigurationError for a function a fresh process cannot import.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigurationError(
            f"task {name!r} cannot run on the process executor: {qualname or fn!r} is not "
            "a module-level function (lambdas and nested functions cannot be imported by "
            "a child process); define it at module level, or use the async or thread worker"
        )
    return f"{module}:{qualname}"


def _load(location: str) -> Callable[..., Any]:
    module_name, _, qualname = location.partition(":")
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    fn: Callable[..., Any] = getattr(obj, "fn", obj)  # a TaskFunction wraps the function
    return fn


def _child_main(conn: Connection) -> None:
    import asyncio
    import inspect

    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        location, args, kwargs = job
        try:
            try:
                fn = _load(location)
            except Exception as e:
                raise ConfigurationError(
                    f"the process executor's child cannot import {location}: "
                    f"{describe_exception(e)}; a task defined in a script run as __main__ "
                    "or outside an importable module cannot run in a child process: move "
                    "it into a module that the worker's --app imports"
                ) from e
            conn.send(("started",))
            out = fn(*args, **kwargs)
            if inspect.isawaitable(out):
                out = asyncio.run(out)  # type: ignore[arg-type]
            try:
                conn.send(("ok", out))
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                conn.send(("err", "SerializationError", f"result cannot be pickled: {e}", ""))
        except BaseException as e:
            message = describe_exception(e).partition(": ")[2]
            conn.send(("err", type(e).__name__, message, format_traceback(e) or ""))


class _Child:
    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.proc = ctx.Process(target=_child_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class ProcessExecutor(Executor):
    """A pool of ``concurrency`` child processes."""

    name = "process"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        self._ctx = mp.get_context("spawn")
        self._idle: list[_Child] = []
        self._slots = anyio.Semaphore(self.concurrency)
        self.replaced = 0

    async def start(self) -> None:
        self._idle = await anyio.to_thread.run_sync(
            lambda: [_Child(self._ctx) for _ in range(self.concurrency)]
        )

    async def stop(self) -> None:
        for child in self._idle:
            try:
                child.conn.send(None)
            except OSError:
                pass
        for child in self._idle:
            await anyio.to_thread.run_sync(child.proc.join, 5)
            if child.proc.is_alive():
                child.kill()
        self._idle = []

    def can_stop(self, fn: Callable[..., Any]) -> bool:
        """A child process can always be killed."""
        return True

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        location = function_location(name, fn)
        async with self._slots:
            child = self._idle.pop() if self._idle else await self._spawn()
            healthy = False
            try:
                child.conn.send((location, args, kwargs))
                with anyio.fail_after(LOAD_TIMEOUT):
                    reply = await anyio.to_thread.run_sync(child.conn.recv, abandon_on_cancel=True)
                if reply[0] == "started":  # the timeout covers the task alone
                    with anyio.fail_after(timeout):
                        reply = await anyio.to_thread.run_sync(
                            child.conn.recv, abandon_on_cancel=True
                        )
                healthy = True
            except TimeoutError as e:
                raise _timeout_error(name, timeout) from e
            except (EOFError, OSError) as e:
                raise RemoteTaskError(
                    f"the child process running task {name} died (exit code "
                    f"{child.proc.exitcode}); it was replaced"
                ) from e
            finally:
                if healthy:
                    self._idle.append(child)
                else:
                    # also when the task is stopped (cancelled): the kill must happen
                    self.replaced += 1
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(child.kill)
        if reply[0] == "ok":
            return reply[1]
        _, type_name, message, tb = reply
        raise RemoteTaskError(
            f"{type_name}: {message}", error=f"{type_name}: {message}", traceback=tb
        )

    async def _spawn(self) -> _Child:
        return await anyio.to_thread.run_sync(_Child, self._ctx)
