"""Typed task functions (``@oq.task``) and result handles.

``TaskFunction[P, R]`` keeps the decorated function's signature, so mypy checks the
arguments of ``add.enqueue_sync(1, 2)`` and knows that ``.result_sync()`` returns ``R``.
Every method has an async form and a blocking ``_sync`` twin.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    get_type_hints,
    overload,
)

import msgspec

from omniq.errors import (
    TaskCancelledError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotFoundError,
)
from omniq.models import TaskResult, TaskStatus
from omniq.options import check_options
from omniq.sync import run_sync

if TYPE_CHECKING:
    from omniq.core import AsyncOmniQ

P = ParamSpec("P")
R = TypeVar("R")

def task_name(fn: Callable[..., Any]) -> str:
    """The default registered name of a function: ``module:qualname``."""
    return f"{fn.__module__}:{fn.__qualname__}"


def return_type(fn: Callable[..., Any]) -> Any:
    """The function's return annotation (awaited type for ``async def``), or Any."""
    try:
        hint = get_type_hints(fn).get("return", Any)
    except Exception:
        return Any
    return Any if hint is None.__class__ else hint


class TaskDecorator(Protocol):
    """What ``@oq.task(...)`` with options returns: a decorator keeping the signature."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> TaskFunction[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


class TaskRegistration:
    """``task()``, the decorator that registers tasks: one spelling of its overloads for
    both APIs (``AsyncOmniQ`` and ``OmniQ`` register on the same async app)."""

    def _app(self) -> AsyncOmniQ:
        raise NotImplementedError

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
        """Register a function as a task: ``@oq.task`` or ``@oq.task(queue=..., ...)``
        (options as ``.options()`` takes; ``name`` defaults to ``module:qualname``;
        ``rate_limit`` like ``"100/m"``, per worker process)."""
        return self._app()._register_task(fn, name, rate_limit, options)


class TaskHandle(Generic[R]):
    """A reference to an enqueued task: wait for its result, read its status, cancel it."""

    def __init__(self, oq: AsyncOmniQ, task_id: str, result_type: Any = Any) -> None:
        self.id = task_id
        self._oq = oq
        self._result_type = result_type

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the task and return its value.

        Raises TaskFailedError (with the error and traceback), TaskCancelledError,
        TaskExpiredError, or TimeoutError when ``timeout`` seconds pass first.
        """
        res = await self._oq.wait_result(self.id, timeout)
        if res is None:
            raise TimeoutError(f"task {self.id} did not finish within {timeout} s")
        return self._unwrap(res)

    def _unwrap(self, res: TaskResult) -> R:
        if res.status is TaskStatus.SUCCESS:
            if self._result_type is Any or res.result is None:
                return res.result  # type: ignore[no-any-return]
            try:
                return msgspec.convert(res.result, self._result_type, strict=False)  # type: ignore[no-any-return]
            except (msgspec.ValidationError, TypeError):
                return res.result  # type: ignore[no-any-return]
        exc: type[TaskFailedError] = {
            TaskStatus.CANCELLED: TaskCancelledError,
            TaskStatus.EXPIRED: TaskExpiredError,
        }.get(res.status, TaskFailedError)
        raise exc(
            f"task {self.id} {res.status.value}: {res.error or 'no error message'}",
            task_id=self.id,
            error=res.error,
            traceback=res.traceback,
        )

    async def status(self) -> TaskStatus:
        """The task's current status."""
        task = await self._oq.get_task(self.id)
        if task is None:
            res = await self._oq.get_result(self.id)
            if res is None:
                raise TaskNotFoundError(f"no task with id {self.id}", task_id=self.id)
            return res.status
        return task.status

    async def get_result(self) -> TaskResult | None:
        """The stored TaskResult, or None while the task has not finished."""
        return await self._oq.get_result(self.id)

    async def cancel(self) -> bool:
        """Cancel the task (queued: never runs; running: cooperative cancel)."""
        return await self._oq.cancel(self.id)

    def result_sync(self, timeout: float | None = None) -> R:
        """Blocking twin of :meth:`result`."""
        return run_sync(self.result, timeout)

    def status_sync(self) -> TaskStatus:
        """Blocking twin of :meth:`status`."""
        return run_sync(self.status)

    def get_result_sync(self) -> TaskResult | None:
        """Blocking twin of :meth:`get_result`."""
        return run_sync(self.get_result)

    def cancel_sync(self) -> bool:
        """Blocking twin of :meth:`cancel`."""
        return run_sync(self.cancel)


class TaskFunction(Generic[P, R]):
    """A registered task: call it directly, or enqueue it to run on a worker."""

    def __init__(
        self,
        oq: AsyncOmniQ,
        fn: Callable[..., Any],
        name: str,
        options: dict[str, Any],
        rate_limit: str | None = None,
    ) -> None:
        self._oq = oq
        self.fn = fn
        self.name = name
        self.defaults = options
        self.rate_limit = rate_limit
        self.result_type = return_type(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", name)
        self.__module__ = getattr(fn, "__module__", "")
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<TaskFunction {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function here and now (no queue)."""
        return self.fn(*args, **kwargs)

    def options(self, **options: Any) -> TaskFunction[P, R]:
        """A copy with per-call options (queue, priority, delay, depends_on, ...)."""
        check_options(options)
        clone: TaskFunction[P, R] = TaskFunction(
            self._oq, self.fn, self.name, {**self.defaults, **options}, self.rate_limit
        )
        return clone

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Enqueue one run; returns its handle."""
        return await self._oq._enqueue_task(self, args, kwargs)

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Blocking twin of :meth:`enqueue`."""
        return run_sync(self._oq._enqueue_task, self, args, kwargs)

    async def map(
        self, arg_list: Iterable[Sequence[Any] | Any], *, batch_size: int = 500
    ) -> list[TaskHandle[R]]:
        """Enqueue one run per item (a tuple of positional args, or a single arg), in
        batches of ``batch_size`` (one backend call per batch; each batch is sent as soon
        as it is built, so batches overlap). If a batch fails, no further batch is sent
        and its error is raised once the batches in flight have ended (those may be
        stored)."""
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            (tuple(a) if isinstance(a, (tuple, list)) else (a,), {}) for a in arg_list
        ]
        return await self._oq._enqueue_many_tasks(self, calls, batch_size=batch_size)

    def map_sync(
        self, arg_list: Iterable[Sequence[Any] | Any], *, batch_size: int = 500
    ) -> list[TaskHandle[R]]:
        """Blocking twin of :meth:`map`."""
        return run_sync(self.map, arg_list, batch_size=batch_size)


def delay_to_run_at(delay: float | None, eta: Any) -> float | None:
    """``run_at`` from a delay in seconds or an ETA (datetime or Unix seconds)."""
    if eta is not None:
        return float(eta.timestamp()) if hasattr(eta, "timestamp") else float(eta)
    if delay:
        seconds = delay.total_seconds() if hasattr(delay, "total_seconds") else float(delay)
        return time.time() + seconds
    return None
