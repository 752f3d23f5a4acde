"""Small helpers shared by system modules."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable


def timed_loop(one: Callable[[], None], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        one()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        one()
        out.append(time.perf_counter() - t)
    return out


async def atimed_loop(one: Callable[[], Awaitable[None]], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await one()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await one()
        out.append(time.perf_counter() - t)
    return out
