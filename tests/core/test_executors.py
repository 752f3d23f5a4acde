"""Executors run coroutine functions, sync functions and callable objects alike."""

from __future__ import annotations

from typing import Any

import pytest

from omniq.errors import TaskTimeoutError
from omniq.workers.executors import AsyncExecutor, ThreadExecutor


class Unhashable:
    """A callable object with ``__eq__`` and so no ``__hash__``."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unhashable)

    def __call__(self, x: int) -> int:
        return x + 1


async def double(x: int) -> int:
    return 2 * x


def triple(x: int) -> int:
    return 3 * x


@pytest.mark.anyio
@pytest.mark.parametrize("cls", [AsyncExecutor, ThreadExecutor])
async def test_functions_and_callable_objects(cls: type[AsyncExecutor]) -> None:
    ex = cls(2)
    await ex.start()
    try:
        for _ in range(2):  # the second call goes through the cached kind of function
            assert await ex.run("double", double, (4,), {}, None) == 8
            assert await ex.run("triple", triple, (4,), {}, None) == 12
            assert await ex.run("obj", Unhashable(), (4,), {}, 5.0) == 5
    finally:
        await ex.stop()


@pytest.mark.anyio
async def test_timeout_is_reported() -> None:
    import anyio

    async def sleepy(**_: Any) -> None:
        await anyio.sleep(5)

    ex = AsyncExecutor(1)
    with pytest.raises(TaskTimeoutError, match="exceeded its timeout"):
        await ex.run("sleepy", sleepy, (), {}, 0.05)
