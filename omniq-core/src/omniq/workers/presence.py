"""A worker's heartbeat in the store, so ``omniq workers`` lists who is alive."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING

import anyio

from omniq.models import WorkerInfo

if TYPE_CHECKING:
    from omniq.workers.worker import AsyncWorker

log = logging.getLogger("omniq.worker")

#: Seconds between a worker's heartbeats in the store.
PRESENCE_INTERVAL = 10.0
#: Heartbeats a worker may miss before it no longer counts as live.
PRESENCE_MISSES = 3


def worker_info(worker: AsyncWorker, started_at: float, now: float) -> WorkerInfo:
    """The heartbeat record of ``worker`` at ``now``."""
    return WorkerInfo(
        id=worker.id,
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=list(worker.queues),
        executor=type(worker.executor).__name__,
        concurrency=worker.concurrency,
        started_at=started_at,
        last_seen=now,
        expires_at=now + PRESENCE_INTERVAL * PRESENCE_MISSES,
        running=len(worker.running_tasks),
        processed=worker.processed,
        failed=worker.failed,
    )


async def run_presence(worker: AsyncWorker, interval: float = PRESENCE_INTERVAL) -> None:
    """Record the worker's heartbeat every ``interval`` seconds until cancelled, then
    remove it. A backend without a worker registry is told once, at DEBUG."""
    queue = worker.queue
    started_at = time.time()
    try:
        while True:
            try:
                await queue.record_worker(worker_info(worker, started_at, time.time()))
            except NotImplementedError:
                log.debug("%s keeps no worker registry; omniq workers will not list this one",
                          type(queue).__name__)
                return
            except Exception as e:  # the store is away: try again next time
                log.warning("could not record worker %s's heartbeat: %s", worker.id, e)
            await anyio.sleep(interval)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            try:
                await queue.remove_worker(worker.id)
            except Exception:  # it expires by itself
                log.debug("could not remove worker %s's record", worker.id, exc_info=True)
