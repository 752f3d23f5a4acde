"""One OmniQ worker process: ``python -m benchmarks.apps.omniq_worker`` (the same as
``omniq worker --app benchmarks.apps.omniq_app:oq --queues bench --concurrency N``).

Stops gracefully on SIGTERM/SIGINT. With ``BENCH_PROFILE=path.txt`` the worker runs
under pyinstrument and writes its profile (text tree) there when it stops.
"""

from __future__ import annotations

import asyncio
import os
import signal

from benchmarks.apps.omniq_app import QUEUE, oq
from benchmarks.systems.base import CONCURRENCY


async def main() -> None:
    aoq = oq.async_
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aoq, aoq.start_worker([QUEUE], concurrency=CONCURRENCY):
        await stop.wait()


def run() -> None:
    profile = os.environ.get("BENCH_PROFILE")
    if not profile:
        asyncio.run(main())
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        asyncio.run(main())
    finally:
        profiler.stop()
        with open(profile, "w") as f:
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    run()
