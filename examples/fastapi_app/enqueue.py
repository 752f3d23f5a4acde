"""The producer side without a web framework: enqueue, then wait for the results.

Run from this directory while a worker runs (``omniq worker --app app:oq -Q default,reports``):

    python enqueue.py ada@example.com
"""

from __future__ import annotations

import asyncio
import sys

from app import oq, send_welcome, word_count


async def main(email: str) -> None:
    """Enqueue one task on each queue and print their results."""
    async with oq:
        mail = await send_welcome.enqueue(email)
        words = await word_count.enqueue("the quick brown fox")
        print("enqueued", mail.id, words.id)
        print(await mail.result(timeout=30))
        print("words:", await words.result(timeout=30))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ada@example.com"))
