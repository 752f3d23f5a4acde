"""A producer process: ``python -m tests.faults.producer NAME COUNT [BATCH]``.

Enqueues ``COUNT`` ``faults.count`` tasks with keys ``NAME-00000``... on ``FAULT_URL``,
``BATCH`` at a time. Task ids are fixed before the first send, so a batch that fails
(server gone) is re-sent as it is: enqueue is idempotent by id, nothing is duplicated.
Prints ``producer NAME enqueued N resent R`` at the end; exit status 1 if a batch could
not be stored within ``FAULT_PRODUCER_PATIENCE`` seconds (default 90).
``FAULT_PRODUCER_PAUSE`` seconds between batches spread the run out (default 0).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from omniq.errors import OmniQError
from tests.faults.fault_app import oq


def main(argv: list[str]) -> int:
    name, total = argv[0], int(argv[1])
    batch_size = int(argv[2]) if len(argv) > 2 else 500
    patience = float(os.environ.get("FAULT_PRODUCER_PATIENCE", "90"))
    pause = float(os.environ.get("FAULT_PRODUCER_PAUSE", "0"))
    tf = oq.registry["faults.count"]
    resent = 0
    sent = 0
    with oq:
        for start in range(0, total, batch_size):
            end = min(total, start + batch_size)
            calls: list[tuple[tuple[str], dict[str, Any]]] = [
                ((f"{name}-{i:05d}",), {}) for i in range(start, end)
            ]
            batch = oq.async_._build_tasks(tf, calls)
            deadline = time.monotonic() + patience
            while True:
                try:
                    oq.task_queue.enqueue_many_sync(batch)
                    break
                except OmniQError as e:
                    if time.monotonic() > deadline:
                        print(f"producer {name}: batch at {start} failed for good: {e}", flush=True)
                        return 1
                    resent += 1
                    print(f"producer {name}: re-sending batch at {start}: {e}", flush=True)
                    time.sleep(0.2)
            sent += len(batch)
            if pause:
                time.sleep(pause)
    print(f"producer {name} enqueued {sent} resent {resent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
