"""The OmniQ app the benchmark workers run: ``omniq worker --app benchmarks.apps.omniq_app:oq``.

The backend comes from ``BENCH_OMNIQ_URL`` and ``BENCH_OMNIQ_OPTIONS`` (JSON), set by
:mod:`benchmarks.systems.omniq` for each run.
"""

from __future__ import annotations

import json
import os

from omniq import OmniQ

URL = os.environ.get("BENCH_OMNIQ_URL", "memory://bench")
OPTIONS = json.loads(os.environ.get("BENCH_OMNIQ_OPTIONS") or "{}")
QUEUE = "bench"

oq = OmniQ(task_queue={"url": URL, **OPTIONS} if OPTIONS else URL)


@oq.task(queue=QUEUE)
async def noop() -> None:
    return None
