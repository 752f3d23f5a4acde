"""Worker processes that die, freeze or are told to stop while they hold tasks.

* SIGKILL with tasks in flight: another worker finishes everything after the leases
  lapse; every task ends SUCCESS with one result; only tasks in flight run again.
* SIGSTOP past the lease, another worker re-runs the tasks, then SIGCONT: the frozen
  worker's late results never replace the newer attempt's (fencing covers results).
* SIGTERM during a busy run: the worker exits within the grace period plus a small
  bound; running tasks finish or are handed back, held ones are handed back unstarted.
* SIGKILL again and again at a high write rate (mid-transaction): the store stays sound.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence

import pytest

from omniq import OmniQ, TaskStatus
from omniq.models import EventType
from tests.faults.harness import (
    RUN_TIMEOUT,
    ExecLog,
    Harness,
    Proc,
    all_final,
    as_dict,
    describe,
    wait_until,
)

pytestmark = pytest.mark.slow

#: A short lease so that recovery after a crash takes seconds, not the default 30 s.
LEASE = 3.0


def _stop(proc: Proc, timeout: float = 60.0) -> None:
    """SIGTERM a worker that should be healthy, and check it exits cleanly."""
    assert proc.running, f"{proc.name} died before the end of the test:\n{proc.output()}"
    proc.signal(signal.SIGTERM)
    rc = proc.wait(timeout)
    assert rc == 0, f"{proc.name} exited with status {rc} after SIGTERM:\n{proc.output()}"


def _running_ids(oq: OmniQ) -> set[str]:
    return {t.id for t in oq.task_queue.list_sync(status=TaskStatus.RUNNING, limit=100_000)}


def _check_results(oq: OmniQ, ids: Sequence[str], keys: dict[str, str]) -> None:
    """Every task SUCCESS with one result that belongs to the task's final attempt."""
    problems: list[str] = []
    for tid in ids:
        task = oq.get_task_sync(tid)
        res = oq.get_result_sync(tid)
        if task is None or task.status is not TaskStatus.SUCCESS:
            problems.append(f"{keys[tid]}: expected SUCCESS, task is {task!r}")
            continue
        if res is None or res.status is not TaskStatus.SUCCESS:
            problems.append(f"{keys[tid]}: expected a SUCCESS result, got {res!r}")
            continue
        if as_dict(res.result).get("key") != keys[tid]:
            problems.append(f"{keys[tid]}: result value {res.result!r} is another task's")
        if res.attempt != task.attempt:
            problems.append(
                f"{keys[tid]}: result is from attempt {res.attempt} but the task ended at "
                f"attempt {task.attempt}"
            )
    assert not problems, "\n".join(problems)
    stored = [r.task_id for r in oq.result_storage.list_sync(limit=100_000)]
    mine = [t for t in stored if t in keys]
    assert len(mine) == len(set(mine)) == len(ids), (
        f"expected exactly one stored result per task ({len(ids)}), found {len(mine)} "
        f"results for {len(set(mine))} tasks"
    )


# --- 1. SIGKILL ------------------------------------------------------------------------


def test_sigkill_worker_with_tasks_in_flight_second_worker_finishes(backend: Harness) -> None:
    oq = backend.client(lease=LEASE)
    tf = oq.registry["faults.mark"]
    n = 40
    handles = [tf.enqueue_sync(f"k{i:02d}", 0.3) for i in range(n)]
    ids = [h.id for h in handles]
    keys = {h.id: f"k{i:02d}" for i, h in enumerate(handles)}
    log = backend.executions()

    a = backend.worker(lease=LEASE, concurrency=4, name="worker-a")

    def mid_run() -> bool:
        started, ended = log.by_pid("start", a.pid), log.by_pid("end", a.pid)
        return len(ended) >= 4 and bool(started - ended)

    wait_until(mid_run, what="worker A to finish some tasks and run others", alive=[a])
    a.signal(signal.SIGKILL)
    a.wait(30)
    in_flight_keys = log.by_pid("start", a.pid) - log.by_pid("end", a.pid)
    running = _running_ids(oq)
    running_keys = {keys[t] for t in running if t in keys}
    assert in_flight_keys <= running_keys, (
        f"tasks running in the killed worker must stay RUNNING (leased) until their lease "
        f"lapses; not RUNNING: {sorted(in_flight_keys - running_keys)}"
    )

    b = backend.worker(lease=LEASE, concurrency=4, name="worker-b")
    wait_until(
        lambda: all_final(oq, ids),
        what=lambda: f"worker B to finish every task ({describe(oq, ids)})",
        timeout=RUN_TIMEOUT,
        alive=[b],
    )
    _stop(b)

    _check_results(oq, ids, keys)
    ends = log.count("end")
    assert set(ends) >= set(keys.values()), (
        f"tasks never completed a run: {sorted(set(keys.values()) - set(ends))}"
    )
    starts = log.count("start")
    rerun = {k for k, c in starts.items() if c > 1}
    assert rerun <= running_keys, (
        f"only tasks claimed by the killed worker may run twice; also re-run: "
        f"{sorted(rerun - running_keys)}"
    )
    backend.check_integrity()


# --- 2. SIGSTOP past the lease ---------------------------------------------------------


@pytest.mark.parametrize("enqueue", ["one by one", "bulk"])
def test_sigstop_past_lease_late_results_never_replace_newer_attempt(
    backend: Harness, enqueue: str
) -> None:
    """``bulk``: one ``map()`` call; on SQLite (the harness stages batches of 4 or more)
    worker A then claims the tasks straight out of their staged batch."""
    oq = backend.client(lease=LEASE, events=True)
    tf = oq.registry["faults.mark"]
    n = 6
    a = backend.worker("--prefetch", "0", lease=LEASE, concurrency=n, events=True, name="a")
    # each run lasts longer than the lease, so A is frozen mid-run with every task
    if enqueue == "bulk":
        handles = tf.map_sync([(f"s{i}", 4.0) for i in range(n)])
    else:
        handles = [tf.enqueue_sync(f"s{i}", 4.0) for i in range(n)]
    ids = [h.id for h in handles]
    keys = {h.id: f"s{i}" for i, h in enumerate(handles)}
    log = backend.executions()
    wait_until(
        lambda: len(log.by_pid("start", a.pid)) == n,
        what=f"worker A to start all {n} tasks",
        alive=[a],
    )
    backend.pause(a)  # SIGSTOP
    b = backend.worker("--prefetch", "0", lease=LEASE, concurrency=n, events=True, name="b")
    wait_until(
        lambda: all_final(oq, ids),
        what=lambda: f"worker B to re-run every task of the frozen worker ({describe(oq, ids)})",
        timeout=RUN_TIMEOUT,
        alive=[b],
    )
    a.signal(signal.SIGCONT)
    # A's runs end at once (their sleep is over); its late completions follow, and
    # SIGTERM makes it write whatever it still holds before it exits
    wait_until(
        lambda: len(log.by_pid("end", a.pid)) == n,
        what="the resumed worker A to end its (stale) runs",
        alive=[a],
    )
    _stop(a)
    _stop(b)

    _check_results(oq, ids, keys)
    problems: list[str] = []
    b_tokens = {(k, tok) for ev, k, pid, tok in log.entries() if ev == "end" and pid == b.pid}
    for tid in ids:
        key = keys[tid]
        task = oq.get_task_sync(tid)
        res = oq.get_result_sync(tid)
        assert task is not None and res is not None
        value = as_dict(res.result)
        if task.attempt < 2:
            problems.append(f"{key}: expected a second claim (attempt >= 2), got {task.attempt}")
        if value.get("pid") != b.pid or (key, value.get("token")) not in b_tokens:
            problems.append(
                f"{key}: the stored result {value!r} is not the one of worker B (pid {b.pid}), "
                f"whose attempt {task.attempt} completed the task: a stale attempt's late "
                "result replaced it"
            )
        if res.worker_id is not None and f":{b.pid}:" not in res.worker_id:
            problems.append(f"{key}: result recorded by {res.worker_id}, not worker B")
    assert not problems, "\n".join(problems)

    starts = log.count("start")
    assert all(starts[k] == 2 for k in keys.values()), (
        f"each task should have run exactly twice (A frozen, then B): {dict(starts)}"
    )
    completes = {tid: len(oq.get_events_sync(tid, types=[EventType.COMPLETE])) for tid in ids}
    assert all(c == 1 for c in completes.values()), (
        "each task should be counted complete exactly once (one COMPLETE event); "
        f"got {[(keys[t], c) for t, c in completes.items()]}"
    )
    backend.check_integrity()


# --- 3. SIGTERM during a busy run ------------------------------------------------------

GRACE = 2.0
#: Exit allowance beyond the grace period on a loaded 2-core machine: hand-backs, the
#: last result writes and interpreter shutdown.
EXIT_BOUND = 15.0


@pytest.mark.parametrize("executor", ["async", "thread"])
def test_sigterm_busy_worker_exits_in_grace_and_nothing_runs_twice(
    backend: Harness, executor: str
) -> None:
    """Two long tasks (past the grace period) and 300 short ones, 6 at a time with 6 more
    held. On SIGTERM: held tasks go back unstarted (attempt not counted), short running
    ones finish, the long ones are stopped and handed back (a coroutine) or, as sync
    functions in threads that cannot be stopped, left to their leases (docs/workers.md);
    the process ends within grace + a bound. A second worker then finishes everything,
    each task completing exactly one run."""
    oq = backend.client(lease=LEASE)
    flag = backend.workdir / "hold.flag"
    flag.touch()
    stoppable = executor == "async"
    hold = oq.registry["faults.ahold" if stoppable else "faults.hold"]
    short = oq.registry["faults.amark" if stoppable else "faults.mark"]
    hold_handles = [hold.options(priority=10).enqueue_sync(f"h{i}", str(flag)) for i in range(2)]
    short_handles = short.map_sync([(f"q{i:03d}", 0.05) for i in range(300)])
    handles = [*hold_handles, *short_handles]
    ids = [h.id for h in handles]
    keys = dict(zip(ids, ["h0", "h1", *(f"q{i:03d}" for i in range(300))], strict=True))
    hold_keys = {"h0", "h1"}
    log = backend.executions()

    a = backend.worker(
        "--prefetch", "6", lease=LEASE, grace=GRACE, executor=executor, concurrency=6, name="a"
    )

    def busy() -> bool:
        started = log.by_pid("start", a.pid)
        return hold_keys <= started and len(log.by_pid("end", a.pid)) >= 20

    wait_until(busy, what="worker A to run both long tasks and 20 short ones", alive=[a])
    t0 = time.monotonic()
    a.signal(signal.SIGTERM)
    try:
        rc = a.wait(GRACE + EXIT_BOUND)
    except AssertionError as e:
        raise AssertionError(
            f"after SIGTERM the worker ({executor} executor) must exit within its shutdown "
            f"grace ({GRACE} s) + {EXIT_BOUND} s: {e}"
        ) from None
    took = time.monotonic() - t0
    assert rc == 0, f"worker A exited with status {rc} after SIGTERM:\n{a.output()}"
    assert took <= GRACE + EXIT_BOUND

    started_by_a = log.by_pid("start", a.pid)
    problems: list[str] = []
    for tid in ids:
        key = keys[tid]
        task = oq.get_task_sync(tid)
        assert task is not None, f"{key} vanished"
        st = task.status
        if key in hold_keys:
            # a coroutine is stopped and handed back; a thread is left to its lease
            want = TaskStatus.PENDING if stoppable else TaskStatus.RUNNING
            if st is not want:
                problems.append(
                    f"{key} (ran past the grace period, {executor} executor): expected {want}, "
                    f"got {st}"
                )
        elif key in started_by_a:
            if st is not TaskStatus.SUCCESS:
                problems.append(
                    f"{key} (started before SIGTERM, 50 ms long): expected to finish within "
                    f"the grace period, got {st}"
                )
        elif st is not TaskStatus.PENDING:
            problems.append(f"{key} (never started): expected handed back PENDING, got {st}")
        elif task.attempt != 0:
            problems.append(
                f"{key} (never started): handed back with attempt {task.attempt}, expected 0 "
                "(an unstarted claim must not count)"
            )
    assert not problems, "\n".join(problems)

    flag.unlink()
    b = backend.worker(lease=LEASE, executor=executor, concurrency=6, name="worker-b")
    wait_until(
        lambda: all_final(oq, ids),
        what=lambda: f"worker B to finish the rest ({describe(oq, ids)})",
        timeout=RUN_TIMEOUT,
        alive=[b],
    )
    _stop(b)
    _check_results(oq, ids, keys)
    ends, starts = log.count("end"), log.count("start")
    twice = sorted(k for k in keys.values() if ends[k] != 1)
    assert not twice, f"each task should complete exactly one run; not so for {twice}"
    rerun_short = sorted(k for k in keys.values() if k not in hold_keys and starts[k] != 1)
    assert not rerun_short, f"short tasks started more than once: {rerun_short}"
    backend.check_integrity()


# --- SIGKILL at a high write rate ------------------------------------------------------


def _runs_reach(log: ExecLog, n: int) -> Callable[[], bool]:
    return lambda: len(log.entries()) >= n


def test_worker_killed_repeatedly_mid_write_store_stays_sound(backend: Harness) -> None:
    """Three SIGKILLs of busy workers of tiny tasks (many writes a second; SQLite's
    harness stops the worker until it holds the write lock, so each kill lands inside a
    write transaction); a final worker finishes. For SQLite this is the stand-in for a
    server crash: a killed writer must not damage the file or lose a task."""
    oq = backend.client(lease=LEASE)
    n = 3000
    handles = oq.registry["faults.count"].map_sync([(f"c{i:04d}",) for i in range(n)])
    ids = [h.id for h in handles]
    keys = {h.id: f"c{i:04d}" for i, h in enumerate(handles)}
    log = backend.executions()
    held_at_kill: set[str] = set()
    inside = 0  # kills known to have landed inside a write transaction
    for round_ in range(3):
        target = (round_ + 1) * 400
        w = backend.worker(lease=LEASE, concurrency=8, name=f"worker-{round_}")
        wait_until(
            _runs_reach(log, target),
            what=f"{target} task runs before kill {round_ + 1}",
            timeout=RUN_TIMEOUT,
            alive=[w],
        )
        inside += backend.kill_mid_write(w)
        w.wait(30)
        held_at_kill |= {keys[t] for t in _running_ids(oq) if t in keys}
        backend.check_integrity()
    print(f"{backend.name}: {inside} of 3 kills landed inside a write transaction")
    last = backend.worker(lease=LEASE, concurrency=8, name="worker-last")
    wait_until(
        lambda: all_final(oq, ids),
        what=lambda: f"the last worker to finish ({describe(oq, ids)})",
        timeout=RUN_TIMEOUT,
        alive=[last],
    )
    _stop(last)
    backend.check_integrity()

    bad = [(keys[t], st) for t in ids if (st := oq.status_sync(t)) is not TaskStatus.SUCCESS]
    assert not bad, f"expected every task SUCCESS, got {bad[:20]}"
    results = {r.task_id: r for r in oq.result_storage.list_sync(limit=100_000)}
    missing = [t for t in ids if t not in results]
    assert not missing, (
        f"{len(missing)} SUCCESS tasks have no stored result (every terminal state must have "
        f"one), e.g. {[(keys[t], oq.get_result_sync(t)) for t in missing[:5]]}; all: "
        f"{sorted(keys[t] for t in missing)[:40]}"
    )
    wrong = [keys[t] for t in ids if results[t].result != keys[t]]
    assert not wrong, f"results holding another task's value: {wrong[:20]}"
    runs = log.count("run")
    never = sorted(set(keys.values()) - set(runs))
    assert not never, f"tasks never run: {never[:20]}"
    rerun = {k for k, c in runs.items() if c > 1}
    assert rerun <= held_at_kill, (
        f"only tasks held by a killed worker may run twice; also re-run: "
        f"{sorted(rerun - held_at_kill)[:20]}"
    )
