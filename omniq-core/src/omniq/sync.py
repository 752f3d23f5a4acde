"""The one place that turns coroutines into blocking calls.

Every blocking ``*_sync`` method in OmniQ runs its coroutine on a single event loop in a
background daemon thread of the process (an anyio :class:`~anyio.from_thread.BlockingPortal`).
So the blocking API works from a plain script, from many threads at once, and inside a
process that already runs an event loop (Jupyter). Calling a ``_sync`` method from that
loop's own thread would deadlock, so it raises :class:`~omniq.errors.SyncCallError`.
After ``fork()`` the child starts a fresh loop thread on first use.

A backend author writes only the async class; its blocking twin is::

    class AcmeQueue(SyncWrapper[AsyncAcmeQueue], async_class=AsyncAcmeQueue):
        '''Blocking twin of AsyncAcmeQueue.'''
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, ParamSpec, Self, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from omniq.errors import SyncCallError

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A")

log = logging.getLogger("omniq.sync")


class _LoopThread:
    """A daemon thread that runs an anyio event loop and serves a BlockingPortal."""

    def __init__(self) -> None:
        ready = threading.Event()
        self.portal: BlockingPortal | None = None
        self.error: BaseException | None = None

        async def serve() -> None:
            async with BlockingPortal() as portal:
                self.portal = portal
                ready.set()
                await portal.sleep_until_stopped()

        def main() -> None:
            try:
                anyio.run(serve)
            except BaseException as e:  # pragma: no cover - loop crashed at start
                self.error = e
                ready.set()

        self.thread = threading.Thread(target=main, name="omniq-sync-loop", daemon=True)
        self.thread.start()
        ready.wait()
        if self.error is not None:  # pragma: no cover
            raise SyncCallError(f"could not start the OmniQ event-loop thread: {self.error}")

    def stop(self) -> None:
        if self.portal is not None and self.thread.is_alive():
            try:
                self.portal.call(self.portal.stop, True)
            except Exception:  # pragma: no cover - already stopping
                pass
            self.thread.join(timeout=5)


_lock = threading.Lock()
_loop: _LoopThread | None = None


def _get_loop() -> _LoopThread:
    global _loop
    loop = _loop
    if loop is None or not loop.thread.is_alive():
        with _lock:
            if _loop is None or not _loop.thread.is_alive():
                _loop = _LoopThread()
            loop = _loop
    return loop


def _reset_after_fork() -> None:
    global _loop, _lock
    _loop = None  # the thread does not exist in the child
    _lock = threading.Lock()


def _stop_at_exit() -> None:
    if _loop is not None:
        _loop.stop()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_stop_at_exit)


def in_loop_thread() -> bool:
    """True when called from the background loop thread itself."""
    return _loop is not None and threading.current_thread() is _loop.thread


def run_sync(fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``await fn(*args, **kwargs)`` on the background loop and return its result.

    The coroutine's exception is re-raised here with its traceback.
    """
    if in_loop_thread():
        name = getattr(fn, "__qualname__", repr(fn))
        raise SyncCallError(
            f"{name}_sync() was called from OmniQ's own event-loop thread, where it would "
            "deadlock; inside async code await the async method instead"
        )
    portal = _get_loop().portal
    assert portal is not None
    return portal.call(functools.partial(fn, *args, **kwargs))


def portal() -> BlockingPortal:
    """The background loop's portal (for starting long-running tasks from sync code)."""
    p = _get_loop().portal
    assert p is not None
    return p


class AsyncResource:
    """Something opened by ``connect()`` and released by ``close()``; ``async with``
    does both. When the block raised, a failure to close is logged instead of raised,
    so the block's exception is the one the caller sees."""

    async def connect(self) -> None:
        """Open connections (idempotent)."""

    async def close(self) -> None:
        """Release connections (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if exc_info[1] is None:
            await self.close()
            return
        try:
            await self.close()
        except Exception:
            log.warning("error while closing %r after an exception in the block", self,
                        exc_info=True)  # fmt: skip


class BlockingResource(AsyncResource):
    """An :class:`AsyncResource` that a plain ``with`` opens and closes too (on OmniQ's
    loop thread)."""

    def __enter__(self) -> Self:
        run_sync(self.connect)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        run_sync(self.__aexit__, *exc_info)


def public_coroutine_methods(cls: type) -> list[str]:
    """Names of the public ``async def`` methods of ``cls`` (its bases included)."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, (staticmethod, classmethod)):
            continue
        if inspect.iscoroutinefunction(attr):
            names.append(name)
    return names


def _make_sync_method(name: str) -> Callable[..., Any]:
    def method(self: SyncWrapper[Any], *args: Any, **kwargs: Any) -> Any:
        return run_sync(getattr(self._async, name), *args, **kwargs)

    method.__name__ = f"{name}_sync"
    method.__qualname__ = f"{name}_sync"
    method.__doc__ = f"Blocking twin of ``{name}`` (runs it on OmniQ's loop thread)."
    return method


class SyncWrapper(Generic[A]):
    """Generic blocking twin of an ``Async*`` component.

    Subclasses name the async class (``async_class=``); every public coroutine method
    ``m`` of it gets a blocking ``m_sync`` here. Other attributes (capability flags,
    properties) are read through from the async instance, available as ``.async_``.
    """

    _async_class: ClassVar[type[Any]]

    def __init_subclass__(cls, async_class: type[Any] | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if async_class is None:
            return
        cls._async_class = async_class
        for name in public_coroutine_methods(async_class):
            if f"{name}_sync" not in cls.__dict__:
                setattr(cls, f"{name}_sync", _make_sync_method(name))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async: A = self._async_class(*args, **kwargs)

    @classmethod
    def wrap(cls, instance: A) -> Any:
        """Wrap an existing async instance (no copy: both share state and connections)."""
        obj = cls.__new__(cls)
        obj._async = instance
        return obj

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Any:
        """Build the async component from a URL and wrap it."""
        return cls.wrap(cls._async_class.from_url(url, **options))

    @property
    def async_(self) -> A:
        """The wrapped async instance."""
        return self._async

    def __getattr__(self, name: str) -> Any:
        if name == "_async":
            raise AttributeError(name)
        return getattr(self._async, name)

    def __enter__(self) -> Any:
        run_sync(self._async.__aenter__)  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        aexit = self._async.__aexit__  # type: ignore[attr-defined]
        if exc_info[1] is None:
            return bool(run_sync(aexit, *exc_info))
        # The body raised: close anyway, but the body's exception is the one the caller sees.
        try:
            return bool(run_sync(aexit, *exc_info))
        except Exception:
            log.warning(
                "error while closing %r after an exception in the block", self, exc_info=True
            )
            return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._async!r})"
