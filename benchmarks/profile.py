"""Profile OmniQ's worker hot path with pyinstrument (``python -m benchmarks profile``).

``sqlite`` / ``nats`` / ``file``: enqueue ``n`` no-ops, run one worker process under pyinstrument
until the queue is drained, stop it with SIGTERM; its profile (text tree of the worker's
main thread: the event loop) goes to ``results/profile-<backend>.txt``.
``memory``: the same drain in one process on the in-process backend, i.e. the engine's
own cost per task with no I/O at all.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.systems.omniq import OmniQFile, OmniQNATS, OmniQSQLite

RESULTS = Path(__file__).resolve().parent / "results"


def run(backend: str, n: int) -> str:
    out = RESULTS / f"profile-{backend}.txt"
    if backend == "memory":
        return _memory(n, out)
    cls = {"sqlite": OmniQSQLite, "nats": OmniQNATS, "file": OmniQFile}[backend]
    system = cls(f"bench-profile-{backend}")
    system.check()
    env = system.env

    def profiled_env() -> dict[str, str]:
        e = env()
        e["BENCH_PROFILE"] = str(out)
        return e

    system.env = profiled_env  # type: ignore[method-assign]
    system.setup()
    system.enqueue_bulk(n)
    procs = harness.start_workers(system, 1)
    try:
        samples, _, finished = harness.watch_drain(system.remaining, procs, poll=0.1, timeout=600)
    finally:
        harness.stop_workers(procs, grace=60)  # time to write the profile
    system.teardown()
    rates = harness.drain_rates(samples, n)
    return (
        f"{backend}: {n} tasks, {rates['rate']:.0f}/s under the profiler "
        f"(finished={finished}); profile in {out}"
    )


def _memory(n: int, out: Path) -> str:
    from pyinstrument import Profiler

    from benchmarks.systems.omniq import QUEUE, _import_app

    app = _import_app("memory://bench-profile", {})
    aoq = app.oq.async_

    async def go() -> float:
        async with aoq:
            await app.noop.map([()] * n)
            t = time.perf_counter()
            await aoq.drain([QUEUE], concurrency=10)
            return time.perf_counter() - t

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    seconds = asyncio.run(go())
    profiler.stop()
    out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    return f"memory: {n} tasks drained in {seconds:.2f} s under the profiler; profile in {out}"
