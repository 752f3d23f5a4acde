"""Bulk enqueue with ``map()`` and counting with ``count()``.

Run: ``python examples/bulk_map.py [N]``. ``map`` sends the calls in batches (500 per
backend call by default), far faster than one ``enqueue`` per call.
"""

from __future__ import annotations

import sys
import time

from omniq import OmniQ, TaskStatus

oq = OmniQ()


@oq.task(queue="bulk")
def square(x: int) -> int:
    """A tiny task."""
    return x * x


def main(n: int) -> None:
    """Enqueue ``n`` squares at once, count them, work them off, sum the results."""
    with oq:
        start = time.perf_counter()
        handles = square.map_sync(range(n))  # one item per call: x, or a tuple of args
        took = time.perf_counter() - start
        print(f"enqueued {len(handles)} tasks in {took:.2f} s")
        print("pending in 'bulk':", oq.task_queue.count_sync("bulk", TaskStatus.PENDING))

        oq.drain_sync(queues=["bulk"])  # work until the queue is empty, then return
        total = sum(h.result_sync(timeout=30) for h in handles)
        print("sum of squares:", total)
        print("succeeded:", oq.task_queue.count_sync("bulk", TaskStatus.SUCCESS))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
