"""The sync layer: blocking twins run coroutines on one background loop thread."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from omniq import sync
from omniq.errors import SyncCallError
from omniq.models import Task, TaskStatus
from omniq.storage.base import StorageComponent
from omniq.storage.memory import AsyncMemoryQueue, MemoryQueue, MemoryResultStorage
from omniq.sync import SyncWrapper, in_loop_thread, public_coroutine_methods, run_sync


class BoomError(Exception):
    """Raised by the test component."""


class AsyncProbe(StorageComponent):
    """A small component recording its lifecycle and where its coroutines ran."""

    def __init__(self, url: str | None = None, *, fail_close: bool = False) -> None:
        self.url = url
        self.fail_close = fail_close
        self.connected = False
        self.closed = False

    async def connect(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise RuntimeError("close failed")

    async def where(self) -> tuple[str, bool]:
        return threading.current_thread().name, in_loop_thread()

    async def add(self, a: int, b: int = 0) -> int:
        await asyncio.sleep(0)
        return a + b

    async def explode(self, message: str) -> None:
        await asyncio.sleep(0)
        self._deep_helper(message)

    def _deep_helper(self, message: str) -> None:
        raise BoomError(message)

    async def _private(self) -> None:
        """Not public: no twin."""

    def plain(self) -> str:
        return "plain"

    @classmethod
    async def a_classmethod(cls) -> None:
        """Class-level coroutines are not instance operations."""


class Probe(SyncWrapper[AsyncProbe], async_class=AsyncProbe):
    """Blocking twin of AsyncProbe."""


def test_twins_are_generated_for_public_coroutines_only() -> None:
    names = public_coroutine_methods(AsyncProbe)
    assert {"add", "explode", "where", "connect", "close"} <= set(names)
    assert "_private" not in names and "plain" not in names and "a_classmethod" not in names
    for name in names:
        assert callable(getattr(Probe, f"{name}_sync"))
    assert not hasattr(Probe, "_private_sync") and not hasattr(Probe, "plain_sync")
    assert getattr(Probe, "add_sync").__name__ == "add_sync"  # noqa: B009


def test_plain_thread_call_runs_on_the_loop_thread() -> None:
    p = Probe()
    assert p.add_sync(1, b=2) == 3
    name, on_loop = p.where_sync()
    assert name == "omniq-sync-loop" and on_loop
    assert not in_loop_thread()
    assert p.plain() == "plain"  # attributes read through
    assert isinstance(p.async_, AsyncProbe)
    assert "Probe(" in repr(p)


def test_wrap_and_from_url_share_the_instance() -> None:
    inner = AsyncProbe("probe://x")
    assert Probe.wrap(inner).async_ is inner
    assert Probe.from_url("probe://y").async_.url == "probe://y"


def test_twenty_threads_at_once() -> None:
    q = MemoryQueue("memory://")
    barrier = threading.Barrier(20)

    def work(n: int) -> list[str]:
        barrier.wait()
        for i in range(25):
            q.enqueue_sync(Task(func="m:f", args=(n, i)))
        claimed = []
        while t := q.dequeue_sync(["default"], worker_id=f"w{n}"):
            assert q.complete_sync(t)
            claimed.append(t.id)
        return claimed

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(work, range(20)))
    every = [i for r in results for i in r]
    assert len(every) == len(set(every)) == 500
    assert q.count_sync(status=TaskStatus.SUCCESS) == 500


def test_inside_a_running_event_loop() -> None:
    # e.g. a notebook: the calling thread already runs a loop; the call goes to ours
    async def main() -> tuple[int, str]:
        p = Probe()
        loop_thread = threading.current_thread().name
        return p.add_sync(20, 22), loop_thread

    value, caller = asyncio.run(main())
    assert value == 42 and caller == threading.current_thread().name


def test_sync_call_from_the_loop_thread_is_refused() -> None:
    q = MemoryQueue("memory://")

    async def misuse() -> Any:
        return q.count_sync()  # blocking on our own loop would deadlock

    with pytest.raises(SyncCallError, match=r"count_sync\(\).*own event-loop thread"):
        run_sync(misuse)
    assert q.count_sync() == 0  # the loop is still healthy


def test_exceptions_keep_type_and_traceback() -> None:
    p = Probe()
    with pytest.raises(BoomError, match="bad input") as info:
        p.explode_sync("bad input")
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "explode" in frames and "_deep_helper" in frames
    assert p.add_sync(1) == 1  # a raising call leaves the loop usable


def test_with_closes_on_error_and_body_exception_propagates() -> None:
    p = Probe()
    with pytest.raises(KeyError, match="from the body") as info, p as entered:
        assert entered is p and p.async_.connected
        raise KeyError("from the body")
    assert p.async_.closed
    assert any(f.name.startswith("test_with_") for f in traceback.extract_tb(info.tb))


def test_with_close_error_does_not_mask_the_body_exception() -> None:
    p = Probe(fail_close=True)
    with pytest.raises(KeyError, match="from the body") as info, p:
        raise KeyError("from the body")
    assert p.async_.closed
    assert str(info.value) == "'from the body'"
    # with no body error, a close error is reported
    with pytest.raises(RuntimeError, match="close failed"), Probe(fail_close=True):
        pass


@pytest.mark.anyio
async def test_async_with_close_error_does_not_mask_the_body_exception() -> None:
    probe = AsyncProbe(fail_close=True)
    with pytest.raises(KeyError):
        async with probe:
            raise KeyError("body")
    assert probe.closed


def test_with_on_memory_components() -> None:
    with MemoryResultStorage("memory://") as r:
        assert r.get_sync("nothing") is None


def test_wrapper_refuses_missing_attributes() -> None:
    p = Probe()
    with pytest.raises(AttributeError):
        p.no_such_attribute  # noqa: B018


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_fork_the_child_gets_a_fresh_loop_thread() -> None:
    q = MemoryQueue("memory://")
    q.enqueue_sync(Task(func="m:f"))  # the parent's loop thread exists now
    parent_loop = sync._loop
    assert parent_loop is not None and parent_loop.thread.is_alive()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child_q = MemoryQueue("memory://")
            child_q.enqueue_sync(Task(func="m:f"))
            ok = (
                child_q.count_sync() == 1
                and q.count_sync() == 1  # the inherited object works too
                and sync._loop is not None
                and sync._loop is not parent_loop
                and sync._loop.thread.is_alive()
            )
            os.write(write, b"ok" if ok else b"bad")
            code = 0
        except BaseException as e:
            os.write(write, repr(e).encode()[:200])
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    message = os.read(read, 1024)
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0, message
    assert message == b"ok"
    assert sync._loop is parent_loop and q.count_sync() == 1  # the parent is unaffected


def test_run_sync_passes_arguments_through() -> None:
    async def combine(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return args, kwargs

    assert run_sync(combine, 1, 2, x=3) == ((1, 2), {"x": 3})


def test_portal_is_the_loop_portal() -> None:
    async def current() -> bool:
        return in_loop_thread()

    assert sync.portal().call(current) is True


def test_blocking_dequeue_woken_from_another_thread() -> None:
    q = MemoryQueue("memory://")
    got: list[Task | None] = []
    waiting = threading.Event()

    def consumer() -> None:
        waiting.set()
        got.append(q.dequeue_sync(["default"], worker_id="c", wait=30))

    t = threading.Thread(target=consumer)
    t.start()
    waiting.wait()
    task = Task(func="m:f")
    q.enqueue_sync(task)
    t.join(timeout=30)
    assert got and got[0] == task


def test_async_and_sync_share_state() -> None:
    aq = AsyncMemoryQueue("memory://")
    q = MemoryQueue.wrap(aq)
    asyncio.run(aq.enqueue(Task(func="m:f")))
    assert q.count_sync() == 1
