"""Timing, worker processes, RSS and statistics shared by every system.

Processed/s is measured the same way for every system: the benchmark process polls the
system's ``remaining()`` (tasks not yet finished, read from the server) while the
worker subprocesses drain the queue. The clock starts at the first poll that sees a task
gone (so interpreter start-up and imports are excluded) and stops at the first poll that
sees none left; the rate is the tasks processed between those two polls divided by the
time between them. Peak RSS is the largest sum of RSS over each worker process and its
children, sampled at every poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from benchmarks.systems.base import SCRATCH, System

LOGS = SCRATCH / "logs"


class BenchError(RuntimeError):
    """A workload could not finish (the message goes in the report)."""


# --- worker processes --------------------------------------------------------------------


def start_workers(system: System, count: int) -> list[subprocess.Popen[bytes]]:
    LOGS.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(count):
        log = open(LOGS / f"{system.prefix}-worker{i}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                system.worker_cmd(),
                env=system.env(),
                cwd=str(SCRATCH),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed by its PID below
            )
        )
        log.close()
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """SIGTERM each worker's process group (led by the PID we started), then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # children left behind by the worker, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


@contextlib.contextmanager
def workers(system: System, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = start_workers(system, count)
    try:
        yield procs
    finally:
        stop_workers(procs)


def tree_rss(procs: list[subprocess.Popen[bytes]]) -> int:
    total = 0
    for p in procs:
        try:
            root = psutil.Process(p.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for m in members:
            with contextlib.suppress(psutil.Error):
                total += m.memory_info().rss
    return total


def log_tail(system: System, lines: int = 15) -> str:
    out = []
    for path in sorted(LOGS.glob(f"{system.prefix}-worker*.log")):
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
        out.append(f"{path.name}: " + " | ".join(text))
    return "\n".join(out)


# --- measuring a drain -------------------------------------------------------------------


def watch_drain(
    remaining: Callable[[], int],
    procs: list[subprocess.Popen[bytes]],
    *,
    poll: float,
    timeout: float,
    on_dead: Callable[[], str] = lambda: "",
) -> tuple[list[tuple[float, int]], int, bool]:
    """Poll until nothing remains (or ``timeout``); returns samples (t, remaining), the
    peak worker RSS and whether the drain finished."""
    samples: list[tuple[float, int]] = []
    peak = 0
    start = time.perf_counter()
    while True:
        left = remaining()
        now = time.perf_counter()
        samples.append((now, left))
        peak = max(peak, tree_rss(procs))
        if left <= 0:
            return samples, peak, True
        if now - start > timeout:
            return samples, peak, False
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise BenchError(
                f"worker exited with code {dead[0].returncode} before the queue was drained; "
                f"{on_dead()}"
            )
        time.sleep(poll)


def _time_at(samples: list[tuple[float, int]], processed: float, n: int) -> float:
    """Interpolated time at which ``processed`` tasks had finished."""
    prev_t, prev_p = samples[0][0], n - samples[0][1]
    for t, left in samples:
        p = n - left
        if p >= processed:
            if p == prev_p:
                return t
            return prev_t + (t - prev_t) * (processed - prev_p) / (p - prev_p)
        prev_t, prev_p = t, p
    return samples[-1][0]


def drain_rates(samples: list[tuple[float, int]], n: int, window: float = 0.1) -> dict[str, Any]:
    """Processed/s over the drain, and over its first and last ``window`` of tasks."""
    first = next((i for i, (_, left) in enumerate(samples) if left < n), None)
    if first is None:
        raise BenchError("no task was processed")
    if samples[first][1] == 0:
        raise BenchError("the queue drained between two polls: too few tasks to time")
    t0, left0 = samples[first]
    # the poll before the first drop bounds the start: use the one that saw the first drop
    t_end, left_end = samples[-1]
    done = left0 - left_end
    span = t_end - t0
    out: dict[str, Any] = {
        "processed": n - left_end,
        "seconds": span,
        "rate": done / span if span > 0 and done > 0 else None,
    }
    p0 = n - left0
    p_end = n - left_end
    k = max(1.0, window * (p_end - p0))
    if p_end - p0 > 2 * k:
        ta, tb = _time_at(samples, p0, n), _time_at(samples, p0 + k, n)
        tc, td = _time_at(samples, p_end - k, n), _time_at(samples, p_end, n)
        out["start_rate"] = k / (tb - ta) if tb > ta else None
        out["end_rate"] = k / (td - tc) if td > tc else None
    return out


# --- workloads ---------------------------------------------------------------------------


def _check_enqueued(system: System, n: int) -> None:
    left = system.remaining()
    if left < n:
        raise BenchError(f"after enqueueing {n} tasks, remaining() reports {left}")


def w1(system: System, n: int, poll: float, timeout: float) -> dict[str, Any]:
    """Enqueue ``n`` no-ops, drain with 1 worker process; again with 2."""
    out: dict[str, Any] = {"n": n}
    for count in (1, 2):
        key = f"p{count}"
        if count == 2 and not system.multi_process:
            out[key] = {"skipped": "one process only (in-process backend)"}
            continue
        system.setup()
        t = time.perf_counter()
        system.enqueue_bulk(n)
        enqueue_s = time.perf_counter() - t
        _check_enqueued(system, n)
        with workers(system, count) as procs:
            samples, peak, finished = watch_drain(
                system.remaining,
                procs,
                poll=poll,
                timeout=timeout,
                on_dead=lambda: log_tail(system),
            )
        rates = drain_rates(samples, n)
        out[key] = {
            "enqueue_s": enqueue_s,
            "enqueue_rate": n / enqueue_s,
            "rate": rates["rate"],
            "finished": finished,
            "processed": rates["processed"],
            "peak_rss": peak,
        }
    system.teardown()
    return out


def w2(system: System, n: int, warmup: int = 20) -> dict[str, Any]:
    """One warm worker; ``n`` sequential enqueue + await-result round trips."""
    system.setup()
    with workers(system, 1) as procs:
        time.sleep(0.2)
        lat = system.latency(n, warmup)
        rss = tree_rss(procs)
    system.teardown()
    ms = sorted(x * 1000 for x in lat)
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "mean": statistics.fmean(ms),
        "rss": rss,
    }


def w3(system: System, n: int, poll: float, timeout: float) -> dict[str, Any]:
    """``n`` tasks queued before one worker starts; rate at the start and end of the drain."""
    system.setup()
    t = time.perf_counter()
    system.enqueue_bulk(n)
    enqueue_s = time.perf_counter() - t
    _check_enqueued(system, n)
    with workers(system, 1) as procs:
        samples, peak, finished = watch_drain(
            system.remaining, procs, poll=poll, timeout=timeout, on_dead=lambda: log_tail(system)
        )
    system.teardown()
    rates = drain_rates(samples, n)
    return {
        "n": n,
        "enqueue_s": enqueue_s,
        "enqueue_rate": n / enqueue_s,
        "finished": finished,
        "peak_rss": peak,
        **rates,
    }


def run_inproc(system: System, workload: str, n: int, timeout: float) -> dict[str, Any]:
    """Run a workload inside one subprocess (in-process backends); it prints JSON."""
    LOGS.mkdir(parents=True, exist_ok=True)
    err = LOGS / f"{system.prefix}-inproc.log"
    with open(err, "wb") as log:
        proc = subprocess.Popen(
            system.run_inproc(workload, n),
            env=system.env(),
            cwd=str(SCRATCH),
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        peak = 0
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                peak = max(peak, tree_rss([proc]))
                if time.monotonic() > deadline:
                    raise BenchError(f"{workload} did not finish within {timeout} s")
                time.sleep(0.02)
        finally:
            stop_workers([proc], grace=1.0)
        out = proc.stdout.read() if proc.stdout else b""
    if proc.returncode != 0:
        raise BenchError(f"exit {proc.returncode}: " + err.read_text()[-600:])
    data: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    for key in ("p1", "p2"):  # the process's whole-life peak (it is producer and worker)
        if key in data and isinstance(data[key], dict):
            data[key]["peak_rss"] = peak
    if workload == "w3":
        data["peak_rss"] = peak
    elif workload == "w2":
        data["rss"] = peak
    return data


# --- statistics --------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def median_spread(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    """(median, min, max) of the runs that produced a value."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def inproc_main(run: Callable[[str, int], dict[str, Any]]) -> None:
    """Entry for an in-process workload subprocess: ``WORKLOAD N`` -> JSON on stdout."""
    workload, n = sys.argv[-2], int(sys.argv[-1])
    result = run(workload, n)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
