"""``omniq demo``: the quick start on the embedded default backend.

Enqueues a batch of tasks (a bulk map, a dependency chain, a task that fails once and
is retried, a delayed task and an interval schedule), runs a worker in this process
with a progress bar, and prints a summary table of results and timings.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from omniq.core import AsyncOmniQ
from omniq.errors import TaskFailedError
from omniq.models import TaskStatus

QUEUE = "omniq-demo"
_attempts: dict[str, int] = {}


def square(x: int) -> int:
    """A plain sync task."""
    return x * x


async def fetch(n: int) -> dict[str, Any]:
    """An async task (simulated I/O)."""
    await asyncio.sleep(random.uniform(0.001, 0.01))
    return {"n": n, "ok": True}


def flaky(key: str) -> str:
    """Fails on its first attempt, succeeds when retried."""
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise RuntimeError("transient failure (will be retried)")
    return f"{key} succeeded on attempt {_attempts[key]}"


def step(name: str, upstream: str | None = None) -> str:
    """One link of a dependency chain."""
    return f"{name}<-{upstream}" if upstream else name


def tick() -> float:
    """Run by the interval schedule."""
    return time.time()


async def run_demo(console: Console | None = None, n: int = 200) -> int:
    """Run the demo; returns a process exit code."""
    console = console or Console()
    oq = AsyncOmniQ(worker="async", max_workers=16)
    sq = oq.task(queue=QUEUE)(square)
    fe = oq.task(queue=QUEUE)(fetch)
    fl = oq.task(queue=QUEUE, retries=2, retry_delay=0.1)(flaky)
    st = oq.task(queue=QUEUE)(step)
    tk = oq.task(queue=QUEUE)(tick)
    backend = type(oq.task_queue).__name__
    console.print(
        f"[bold]OmniQ demo[/] on [cyan]{backend}[/] ({oq.config.task_queue.type or 'url'})"
    )
    async with oq:
        await oq.task_queue.purge(QUEUE)
        t0 = time.perf_counter()
        squares = await sq.map(range(n))
        fetches = await fe.map(range(n // 4))
        retried = await fl.enqueue("demo-retry")
        a = await st.enqueue("extract")
        b = await st.options(depends_on=[a]).enqueue("transform", "extract")
        c = await st.options(depends_on=[b]).enqueue("load", "transform")
        delayed = await sq.options(delay=0.5).enqueue(12)
        sid = await oq.schedule(tk, interval=0.2, queue=QUEUE)
        enqueue_s = time.perf_counter() - t0
        handles = [*squares, *fetches, retried, a, b, c, delayed]
        console.print(f"enqueued {len(handles)} tasks and 1 schedule in {enqueue_s * 1000:.0f} ms")

        t1 = time.perf_counter()
        async with oq.start_worker(queues=[QUEUE], concurrency=16):
            with Progress(
                TextColumn("working"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                bar = progress.add_task("tasks", total=len(handles))
                done = 0
                while done < len(handles):
                    done = sum(
                        [1 for r in await asyncio.gather(*(h.get_result() for h in handles)) if r]
                    )
                    progress.update(bar, completed=done)
                    if time.perf_counter() - t1 > 60:
                        break
                    await asyncio.sleep(0.05)
            await oq.pause_schedule(sid)
        work_s = time.perf_counter() - t1

        table = Table(title="OmniQ demo results")
        for col in ("what", "tasks", "status", "result"):
            table.add_column(col)
        sq_values = [await h.result(timeout=5) for h in squares]
        table.add_row("bulk map square(x)", str(len(squares)), "success", f"sum = {sum(sq_values)}")
        fe_ok = sum([1 for h in fetches if (await h.result(timeout=5))["ok"]])
        table.add_row("async fetch(n)", str(len(fetches)), "success", f"{fe_ok} ok")
        table.add_row("retry flaky()", "1", "success", str(await retried.result(timeout=5)))
        table.add_row(
            "chain extract→transform→load", "3", "success", str(await c.result(timeout=5))
        )
        table.add_row("delayed square(12)", "1", "success", str(await delayed.result(timeout=5)))
        runs = [
            t
            for t in await oq.task_queue.list(QUEUE, TaskStatus.SUCCESS, limit=10_000)
            if t.schedule_id == sid
        ]
        table.add_row("interval schedule (0.2 s)", str(len(runs)), "paused", "fired while working")
        console.print(table)
        total = len(handles) + len(runs)
        console.print(
            f"processed {total} tasks in {work_s:.2f} s "
            f"([bold]{total / work_s:.0f} tasks/s[/]); "
            f"enqueue {len(handles) / enqueue_s:.0f} tasks/s"
        )
        await oq.delete_schedule(sid)
        await oq.task_queue.purge(QUEUE)
    return 0


def main() -> int:
    try:
        return asyncio.run(run_demo())
    except TaskFailedError as e:
        Console(stderr=True).print(f"[red]demo task failed:[/] {e}")
        return 1
