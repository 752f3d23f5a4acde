"""The process executor: child processes that can be killed when a task overruns.

Children are started with the ``spawn`` method (safe next to the worker's threads) and
import task functions by name, so a function must be importable (``module:qualname``).
A child that overruns its timeout, or dies, is replaced; the worker goes on.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import pickle
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import anyio

from omniq.errors import TaskFailedError
from omniq.workers.executors import Executor, _timeout_error


class RemoteTaskError(TaskFailedError):
    """An exception raised by a task in a child process (type name, message, traceback)."""


def _resolve(name: str) -> Callable[..., Any]:
    module_name, _, qualname = name.partition(":")
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
        name, args, kwargs = job
        try:
            fn = _resolve(name)
            out = fn(*args, **kwargs)
            if inspect.isawaitable(out):
                out = asyncio.run(out)  # type: ignore[arg-type]
            try:
                conn.send(("ok", out))
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                conn.send(("err", "SerializationError", f"result cannot be pickled: {e}", ""))
        except BaseException as e:
            conn.send(("err", type(e).__name__, str(e), traceback.format_exc()))


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

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        async with self._slots:
            child = self._idle.pop() if self._idle else _Child(self._ctx)
            healthy = False
            try:
                child.conn.send((name, args, kwargs))
                with anyio.fail_after(timeout):
                    reply = await anyio.to_thread.run_sync(child.conn.recv, abandon_on_cancel=True)
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
                    self.replaced += 1
                    await anyio.to_thread.run_sync(child.kill)
        if reply[0] == "ok":
            return reply[1]
        _, type_name, message, tb = reply
        raise RemoteTaskError(
            f"{type_name}: {message}", error=f"{type_name}: {message}", traceback=tb
        )
