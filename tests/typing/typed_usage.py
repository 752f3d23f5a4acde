"""Checked by mypy in tests/core/test_typing.py: the typed task API."""

from omniq import OmniQ

oq = OmniQ(task_queue="memory://")


@oq.task
def add(x: int, y: int) -> int:
    return x + y


@oq.task(queue="high")
async def fetch(url: str) -> bytes:
    return url.encode()


reveal_type(add.enqueue_sync(1, 2).result_sync())
reveal_type(fetch.enqueue_sync("u").result_sync())
add.enqueue_sync("x", [])
