"""The worker's CPU budget per task, by stage (``python -m benchmarks budget``).

One ``omniq worker`` process drains ``n`` queued no-ops while py-spy samples it from
outside (``--rate`` per second, default 200: a sampler in another process that reads the
worker's memory, so the worker runs its normal code at its normal speed). Sampling starts
once the drain is under way and stops before its tail, and only on-CPU samples count
(waiting in ``select`` or on a lock is not CPU). Each sample is put in the first stage
whose marker its stack shows, leaf first; microseconds per task are
``samples / rate / tasks drained while sampling``, per thread (the event loop's thread
and, on SQLite, the connection's thread, which runs concurrently).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks import harness
from benchmarks.systems.omniq import (
    OmniQFile,
    OmniQNATS,
    OmniQSQLite,
    OmniQSQLiteNormal,
    OmniQSystem,
)

RESULTS = Path(__file__).resolve().parent / "results"

#: (stage, markers): a sample's stage is the first whose marker a frame contains, checked
#: from the innermost frame outwards; a sample in library code (asyncio, nats-py,
#: aiosqlite) counts for the OmniQ stage that called it, and for "event loop, I/O" when
#: no stage did.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("wake-ups between threads", ("call_soon_threadsafe", "_write_to_self", "_read_from_self")),
    ("claim: decode tasks", ("decode_task", "as_claimed", "task_from_row", "decode_record",
                             "Claims._decide_one")),
    ("claim: move staged tasks in", ("expand_for_claim", "expand (omniq_sqlite", "_unpack",
                                     "claim_staged")),
    ("claim: SQL / server round trip", ("claim (omniq_", "_has_work", "_has_timed",
                                        "claim_ready", "Claims.", "Fetcher.")),
    ("complete: fence", ("complete_many (omniq_", "_complete_many", "_ack", "Bucket.cas_many",
                         "finish_claimed",
                         "AsyncNATSQueue.complete_many")),
    ("complete: store results", ("store_results", "ResultStorage.set_many", "put_fenced",
                                 "Publisher.publish_many")),
    ("complete: encode results", ("encode_result", "ResultStorage.encode")),
    ("commit", ("_commit (omniq_sqlite/_database.py",)),
    ("run the task function", ("AsyncExecutor", "omniq_app.py")),
    ("dispatch (runner, hooks, events)", ("AsyncWorker._run_task", "AsyncWorker._execute",
                                          "AsyncWorker._runner", "AsyncWorker._finish_success")),
    ("completion batching", ("AsyncWorker._write_batch", "AsyncWorker._flush_completions",
                             "AsyncWorker._completion_loop", "after_finish",
                             "complete_with_results")),
    ("claim loop", ("AsyncWorker._claim_loop", "dequeue_many")),
    ("heartbeats, maintenance", ("_maintenance_loop", "_heartbeat_loop", "run_presence",
                                 "_pause_loop")),
]  # fmt: skip
#: Library frames: a sample only in these (and the interpreter's) is the event loop's.
LIBRARY = ("asyncio/", "nats/", "aiosqlite/", "selectors.py")

SYSTEMS: dict[str, type[OmniQSystem]] = {
    "sqlite": OmniQSQLite,
    "sqlite-normal": OmniQSQLiteNormal,
    "nats": OmniQNATS,
    "file": OmniQFile,
}


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, markers in STAGES:
            if any(m in frame for m in markers):
                return stage
    if any(lib in frame for frame in frames[-3:] for lib in LIBRARY):
        return "event loop, I/O"
    return "other"


def thread_of(head: str) -> str:
    if "MainThread" in head:
        return "event loop thread"
    if "_connection_worker_thread" in head:
        return "SQLite connection thread"
    return head.split(": ", 1)[-1]


def tally(folded: Path) -> tuple[Counter[tuple[str, str]], dict[str, int]]:
    """Samples by (thread, stage) from py-spy's ``--format raw`` (folded stacks), and
    each thread's OS id (``thread (tid): name`` heads every stack)."""
    out: Counter[tuple[str, str]] = Counter()
    tids: dict[str, int] = {}
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = thread_of(frames[0])
        out[(thread, stage_of(frames[1:]))] += int(count)
        digits = frames[0].partition("(")[2].partition(")")[0]
        if digits.isdigit():
            tids[thread] = int(digits)
    return out, tids


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid``, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended
        fields = stat.rpartition(")")[2].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def table(
    samples: Counter[tuple[str, str]], tids: dict[str, int], cpu: dict[int, float], tasks: int
) -> str:
    """Markdown: microseconds of CPU per task by thread and stage. A thread's total is the
    kernel's count of its CPU time; the samples split it between the stages (a sampler
    alone would count a thread waiting for the GIL, or for a core on a busy machine,
    as running)."""
    lines = ["| thread | stage | µs of CPU per task |", "|---|---|---:|"]
    threads: Counter[str] = Counter()
    for (thread, _), n in samples.items():
        threads[thread] += n
    for thread, total in threads.most_common():
        seconds = cpu.get(tids.get(thread, -1), 0.0)

        def us(n: int, seconds: float = seconds, total: int = total) -> str:
            return f"{seconds * n / total / tasks * 1e6:.2f}"

        rows = sorted(((s, n) for (t, s), n in samples.items() if t == thread), key=lambda x: -x[1])
        lines += [f"| {thread} | {stage} | {us(n)} |" for stage, n in rows]
        lines.append(f"| {thread} | **total** | **{us(total)}** |")
    return "\n".join(lines)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: uv sync --group bench")
    return found


def run(backend: str, n: int, rate: int = 200) -> str:
    """Drain ``n`` no-ops with one worker under py-spy; write and return the budget."""
    system = SYSTEMS[backend](f"bench-budget-{backend}")
    system.check()
    system.setup()
    system.enqueue_bulk(n)
    folded = RESULTS / f"budget-{backend}.folded"
    procs = harness.start_workers(system, 1)
    try:
        while system.remaining() > n * 0.95 and procs[0].poll() is None:
            time.sleep(0.01)  # the worker has started and is draining
        first = system.remaining()
        cpu0 = thread_cpu(procs[0].pid)
        spy = subprocess.Popen(
            [py_spy(), "record", "--rate", str(rate), "--format", "raw", "--threads",
             "--nonblocking", "--pid", str(procs[0].pid), "-o", str(folded)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        t0 = time.perf_counter()
        while system.remaining() > n * 0.1 and procs[0].poll() is None:
            time.sleep(0.02)
        cpu1 = thread_cpu(procs[0].pid)
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled
        spy.wait(timeout=60)
        seconds = time.perf_counter() - t0
        tasks = first - system.remaining()
    finally:
        harness.stop_workers(procs, grace=30)
        system.teardown()
    cpu = {tid: cpu1[tid] - cpu0.get(tid, 0.0) for tid in cpu1}
    samples, tids = tally(folded)
    md = (
        f"## CPU per task: OmniQ worker on {backend}\n\n"
        f"{tasks:,} tasks drained in {seconds:.2f} s while sampled ({tasks / seconds:,.0f}/s), "
        f"py-spy at {rate} samples/s (on-CPU samples) splitting each thread's CPU time "
        "as the kernel counted it.\n\n"
        f"{table(samples, tids, cpu, tasks)}\n"
    )
    out = RESULTS / f"budget-{backend}.md"
    out.write_text(md)
    return md
