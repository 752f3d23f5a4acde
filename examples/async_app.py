"""The async API: ``AsyncOmniQ``, coroutine tasks, priorities, cancellation, events.

Run: ``python examples/async_app.py`` (embedded default backend; ``OMNIQ_*`` settings
choose another).
"""

from __future__ import annotations

import asyncio

from omniq import AsyncOmniQ, TaskCancelledError

# events are off unless an event storage is configured: store them with the tasks
oq = AsyncOmniQ(event_storage="memory://async-example")


@oq.task
async def fetch(url: str) -> dict[str, object]:
    """A coroutine task: runs on the worker's event loop."""
    await asyncio.sleep(0.01)  # stands for real I/O
    return {"url": url, "status": 200}


@oq.task(queue="reports", priority=10)
def report(name: str) -> str:
    """A sync task on another queue, with a higher priority than the default 0."""
    return f"report {name} done"


async def main() -> None:
    """Enqueue, cancel one task before any worker runs, then work the queues."""
    async with oq:
        page = await fetch.enqueue("https://example.com")
        later = await report.options(delay=60).enqueue("monthly")  # due in a minute
        print("cancelled:", await later.cancel())
        urgent = await report.options(priority=100).enqueue("urgent")

        async with oq.start_worker(queues=["reports", "default"], concurrency=4):
            print("fetch:", await page.result(timeout=10))
            print("report:", await urgent.result(timeout=10))
            try:
                await later.result(timeout=10)
            except TaskCancelledError:
                print("the delayed report was cancelled and never ran")

        kinds = [e.event_type.value for e in await oq.get_events(task_id=page.id)]
        print("events of fetch:", ", ".join(kinds))


if __name__ == "__main__":
    asyncio.run(main())
