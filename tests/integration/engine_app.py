"""A small app used by the engine tests (importable by worker subprocesses)."""

from __future__ import annotations

import asyncio
import os
import time

from omniq import OmniQ

oq = OmniQ(
    task_queue=os.environ.get("ENGINE_APP_QUEUE", "memory://engine-app"),
    event_storage=os.environ.get("ENGINE_APP_EVENTS", "memory://engine-app"),
    worker=os.environ.get("ENGINE_APP_WORKER", "thread"),
    max_workers=4,
)


@oq.task
def add(x: int, y: int) -> int:
    return x + y


@oq.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0.001)
    return x + y


@oq.task(retries=2, retry_delay=0.01)
def always_fails(msg: str) -> None:
    raise ValueError(msg)


@oq.task
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@oq.task
def record(path: str, value: str) -> str:
    with open(path, "a") as f:
        f.write(value + "\n")
    return value
