"""Building workers from settings, and handles for workers running in the background."""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from omniq.errors import ConfigurationError
from omniq.sync import run_sync
from omniq.workers.worker import AsyncWorker

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from omniq.core import AsyncOmniQ
    from omniq.workers.executors import Executor


def make_executor(oq: AsyncOmniQ, kind: str, concurrency: int) -> Executor:
    """The executor of type ``kind`` (built-in or from a plugin's ``omniq_worker_types``)."""
    types = oq.plugins.worker_types()
    spec = types.get(kind)
    if spec is None:
        close = difflib.get_close_matches(kind, list(types), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"unknown worker type {kind!r}; installed: {', '.join(sorted(types))}.{hint}"
        )
    executor: Executor = spec.load()(concurrency)
    return executor


def make_worker(
    oq: AsyncOmniQ,
    queues: Sequence[str] | None,
    concurrency: int | None,
    worker: str | None,
    burst: bool,
    scheduler: bool,
    **options: Any,
) -> AsyncWorker:
    """An AsyncWorker configured from arguments and ``oq.config``."""
    cfg = oq.config
    kind = worker or cfg.default_worker
    n = (
        concurrency
        or {
            "thread": cfg.thread_workers,
            "process": cfg.process_workers,
            "gevent": cfg.gevent_workers,
        }.get(kind)
        or cfg.max_workers
    )
    return AsyncWorker(
        oq,
        queues=list(queues) if queues else None,
        concurrency=n,
        executor=make_executor(oq, kind, n),
        scheduler=scheduler,
        burst=burst,
        prefetch=options.pop("prefetch", cfg.worker_prefetch),
        lease=options.pop("lease", cfg.lease_seconds),
        heartbeat_interval=options.pop("heartbeat_interval", cfg.heartbeat_interval),
        shutdown_grace=options.pop("shutdown_grace", cfg.shutdown_grace),
        **options,
    )


class AsyncWorkerHandle:
    """What ``AsyncOmniQ.start_worker`` returns: awaitable, and an async context manager."""

    def __init__(self, worker: AsyncWorker) -> None:
        self.worker = worker
        self._task: asyncio.Task[None] | None = None

    def _start(self) -> AsyncWorkerHandle:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.worker.run())
        return self

    def __await__(self) -> Any:
        async def started() -> AsyncWorkerHandle:
            return self._start()

        return started().__await__()

    async def stop(self) -> None:
        """Stop claiming, drain as on SIGTERM, and wait for the worker to end."""
        self.worker.stop()
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> AsyncWorkerHandle:
        return self._start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()


class WorkerHandle:
    """What ``OmniQ.start_worker_sync`` returns: a worker on the background loop."""

    def __init__(self, worker: AsyncWorker, future: Future[None]) -> None:
        self.worker = worker
        self._future = future

    @classmethod
    def start(cls, worker: AsyncWorker, portal: BlockingPortal) -> WorkerHandle:
        return cls(worker, portal.start_task_soon(worker.run))

    def stop_sync(self, timeout: float | None = None) -> None:
        """Stop claiming, drain as on SIGTERM, and wait for the worker to end."""

        async def stop() -> None:
            self.worker.stop()

        run_sync(stop)
        self._future.result(timeout)

    def join_sync(self, timeout: float | None = None) -> None:
        """Wait until the worker ends (burst mode, or stopped elsewhere)."""
        self._future.result(timeout)

    @property
    def running(self) -> bool:
        return not self._future.done()

    def __enter__(self) -> WorkerHandle:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop_sync()
