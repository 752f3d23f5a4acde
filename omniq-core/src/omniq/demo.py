"""``omniq demo``: the quick start on the embedded default backend.

Enqueues a batch of tasks (a bulk map, a dependency chain, a task that fails once and
is retried, a delayed task and an interval schedule), runs a worker in this process
with a progress bar, and prints a summary table of what really happened: each group's
statuses as stored, and timings that keep the deliberate waits (the delayed task, the
retry's backoff) apart from the throughput of the bulk work.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from omniq.core import AsyncOmniQ
from omniq.errors import TaskFailedError
from omniq.models import TaskResult, TaskStatus
from omniq.tasks import TaskHandle

QUEUE = "omniq-demo"
#: Seconds the delayed task waits before it may run (a deliberate pause).
DELAY = 0.5
#: Base delay before the flaky task's retry.
RETRY_DELAY = 0.1
_attempts: dict[str, int] = {}


def _statuses(results: list[TaskResult | None]) -> str:
    """``"success 200"``, ``"success 1, failed 1"``: the stored statuses of a group."""
    counts = Counter(r.status.value if r is not None else "unfinished" for r in results)
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))


async def _results(handles: list[TaskHandle[Any]]) -> list[TaskResult | None]:
    return list(await asyncio.gather(*(h.get_result() for h in handles)))


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
    fl = oq.task(queue=QUEUE, retries=2, retry_delay=RETRY_DELAY)(flaky)
    st = oq.task(queue=QUEUE)(step)
    tk = oq.task(queue=QUEUE)(tick)
    backend = type(oq.task_queue).__name__
    console.print(
        f"[bold]OmniQ demo[/] on [cyan]{backend}[/] ({oq.config.task_queue.type or 'url'})"
    )
    console.print(f"the code of this demo: {Path(__file__).resolve()}", highlight=False)
    async with oq:
        await oq.task_queue.purge(QUEUE)
        t0 = time.perf_counter()
        squares = await sq.map(range(n))
        fetches = await fe.map(range(n // 4))
        retried = await fl.enqueue("demo-retry")
        a = await st.enqueue("extract")
        b = await st.options(depends_on=[a]).enqueue("transform", "extract")
        c = await st.options(depends_on=[b]).enqueue("load", "transform")
        delayed = await sq.options(delay=DELAY).enqueue(12)
        sid = await oq.schedule(tk, interval=0.2, queue=QUEUE)
        enqueue_s = time.perf_counter() - t0
        handles = [*squares, *fetches, retried, a, b, c, delayed]
        bulk = [*squares, *fetches]
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
                bulk_s: float | None = None
                while done < len(handles):
                    finished = await _results(handles)
                    done = sum([1 for r in finished if r is not None])
                    if bulk_s is None and all(r is not None for r in finished[: len(bulk)]):
                        bulk_s = time.perf_counter() - t1
                    progress.update(bar, completed=done)
                    if time.perf_counter() - t1 > 60:
                        break
                    await asyncio.sleep(0.05)
            await oq.pause_schedule(sid)
        work_s = time.perf_counter() - t1
        bulk_s = bulk_s if bulk_s is not None else work_s

        table = Table(title="OmniQ demo results (statuses as stored)")
        for col in ("what", "tasks", "status", "result"):
            table.add_column(col)
        sq_res = await _results(list(squares))
        sq_sum = sum(r.result for r in sq_res if r is not None and r.status is TaskStatus.SUCCESS)
        table.add_row("bulk map square(x)", str(len(squares)), _statuses(sq_res), f"sum = {sq_sum}")
        fe_res = await _results(list(fetches))
        fe_ok = sum([1 for r in fe_res if r is not None and (r.result or {}).get("ok")])
        table.add_row("async fetch(n)", str(len(fetches)), _statuses(fe_res), f"{fe_ok} ok")
        (rt,) = await _results([retried])
        table.add_row("retry flaky()", "1", _statuses([rt]), str(rt.result if rt else None))
        chain = await _results([a, b, c])
        table.add_row(
            "chain extract→transform→load", "3", _statuses(chain),
            str(chain[-1].result if chain[-1] else None),
        )  # fmt: skip
        (dl,) = await _results([delayed])
        table.add_row(
            f"delayed square(12), {DELAY:g} s", "1", _statuses([dl]),
            str(dl.result if dl else None),
        )  # fmt: skip
        runs = [
            t for t in await oq.task_queue.list(QUEUE, None, limit=10_000) if t.schedule_id == sid
        ]
        schedule = await oq.get_schedule(sid)
        state = schedule.state.value if schedule is not None else "deleted"
        run_statuses = Counter(t.status.value for t in runs)
        table.add_row(
            "interval schedule (0.2 s)", str(len(runs)),
            ", ".join(f"{k} {n}" for k, n in sorted(run_statuses.items())) or "-",
            f"schedule now {state}",
        )  # fmt: skip
        console.print(table)
        console.print(
            f"bulk work: {len(bulk)} tasks in {bulk_s:.2f} s "
            f"([bold]{len(bulk) / bulk_s:.0f} tasks/s[/], including start-up and polling); "
            f"enqueue {len(handles) / enqueue_s:.0f} tasks/s",
            highlight=False,
        )
        console.print(
            f"whole run: {work_s:.2f} s, including deliberate waits: the delayed task "
            f"({DELAY:g} s) and the retry's backoff (about {RETRY_DELAY:g} s)",
            highlight=False,
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
