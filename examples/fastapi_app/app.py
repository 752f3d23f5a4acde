"""The OmniQ app of the FastAPI example: one instance and its tasks.

Both processes import this module: the web app (``web.py``) to enqueue, the worker
(``omniq worker --app app:oq``) to know which functions it may run. Settings come from
``OMNIQ_*`` variables: with none, tasks go to the embedded SQLite database
``.omniq/omniq.db``; ``OMNIQ_TASK_QUEUE_URL=nats://127.0.0.1:4222`` moves them to NATS.
"""

from __future__ import annotations

import asyncio

from omniq import AsyncOmniQ

oq = AsyncOmniQ()


@oq.task(retries=3, timeout=30)
async def send_welcome(email: str) -> str:
    """Stands for a call to a mail service (retried on failure, up to three times)."""
    await asyncio.sleep(0.05)
    return f"welcome mail sent to {email}"


@oq.task(queue="reports", priority=5)
def word_count(text: str) -> int:
    """A CPU-bound sync task on its own queue."""
    return len(text.split())
