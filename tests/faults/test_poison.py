"""Poison records written straight into the store (DESIGN §13: a task record is data,
never code).

Hostile or unknown function names (``os:system``, ``builtins:exec``, a module that was
never registered, a function of the app module that is not a task) and payloads that
cannot be decoded must each end FAILED at once, with a result whose reason names the
function and how to register it; nothing is imported or run, and the worker and the
other tasks go on.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from omniq import OmniQ, TaskStatus
from omniq.models import Task
from tests.faults.harness import RUN_TIMEOUT, Harness, all_final, describe, wait_until

POISON_MODULE = "tests.faults.poison_module"


def _poison_tasks(marker: Path) -> list[Task]:
    """Tasks naming functions no worker may run (each would leave ``marker``)."""
    return [
        Task(func="os:system", args=(f"touch {marker}",)),
        Task(func="builtins:exec", args=(f"open({str(marker)!r}, 'w').close()",)),
        Task(func="posix:system", args=(f"touch {marker}",)),
        Task(func=f"{POISON_MODULE}:run", args=("poison",)),
        Task(func="tests.faults.fault_app:unregistered_helper", args=(str(marker),)),
        Task(func="no_such_module_q7x:fn"),
        Task(func="faults.not_registered"),
    ]


def _check_poison(oq: OmniQ, poison: list[Task]) -> list[str]:
    problems: list[str] = []
    for t in poison:
        st = oq.status_sync(t.id)
        res = oq.get_result_sync(t.id)  # not wait_result: it must be there at once
        if st is not TaskStatus.FAILED:
            problems.append(f"{t.func}: expected FAILED, status is {st}")
        if res is None:
            problems.append(f"{t.func}: a FAILED task must have a result; get_result is None")
            continue
        if res.status is not TaskStatus.FAILED:
            problems.append(f"{t.func}: expected a FAILED result, got {res.status}")
        error = res.error or ""
        if t.func not in error or not re.search(r"regist", error, re.I):
            problems.append(
                f"{t.func}: the reason should name the function and how to register it "
                f"(e.g. @oq.task / --app), got {error!r}"
            )
    return problems


def _check_corrupt(oq: OmniQ, corrupt: dict[str, str]) -> list[str]:
    problems: list[str] = []
    for tid, kind in corrupt.items():
        st = oq.status_sync(tid)
        res = oq.get_result_sync(tid)
        if st is not TaskStatus.FAILED:
            problems.append(f"corrupt {kind}: expected FAILED, status is {st}")
        if res is None or res.status is not TaskStatus.FAILED:
            problems.append(f"corrupt {kind}: expected a FAILED result at once, got {res!r}")
        elif not re.search(r"corrupt|decod", res.error or "", re.I):
            problems.append(
                f"corrupt {kind}: the reason should say the payload cannot be decoded, "
                f"got {res.error!r}"
            )
    return problems


@pytest.mark.slow
def test_poison_records_fail_cleanly_in_a_worker_process(backend: Harness) -> None:
    marker = backend.workdir / "MARKER"
    imported = backend.workdir / "IMPORTED"
    ran = backend.workdir / "RAN"
    oq = backend.client()
    mark = oq.registry["faults.mark"]
    good = [mark.enqueue_sync(f"before{i}") for i in range(5)]
    poison = _poison_tasks(marker)
    for t in poison:  # through the backend's own enqueue: a record like any other
        assert oq.task_queue.enqueue_sync(t) is TaskStatus.PENDING
    corrupt: dict[str, str] = {}
    for kind in backend.corruption_kinds:
        t = Task(func="faults.mark", args=(f"corrupt-{kind}",))
        oq.task_queue.enqueue_sync(t)
        backend.corrupt(t.id, kind)
        corrupt[t.id] = kind
    good += [mark.enqueue_sync(f"after{i}") for i in range(5)]
    all_ids = [*(h.id for h in good), *(t.id for t in poison), *corrupt]

    w = backend.worker(
        concurrency=2,
        env={"FAULT_IMPORT_MARKER": str(imported), "FAULT_RUN_MARKER": str(ran)},
    )
    wait_until(
        lambda: all_final(oq, all_ids),
        what=lambda: f"every task, poison included, to end ({describe(oq, all_ids)})",
        timeout=RUN_TIMEOUT,
        alive=[w],
    )
    # the worker goes on: new tasks still run
    later = [mark.enqueue_sync(f"later{i}") for i in range(3)]
    wait_until(
        lambda: all(h.status_sync() is TaskStatus.SUCCESS for h in later),
        what="tasks enqueued after the poison to run",
        alive=[w],
    )

    problems = [
        *_check_poison(oq, poison),
        *_check_corrupt(oq, corrupt),
        *(
            f"good task {h.id}: expected SUCCESS, got {h.status_sync()}"
            for h in good
            if h.status_sync() is not TaskStatus.SUCCESS
        ),
    ]
    if marker.exists():
        problems.append(f"a hostile task ran: {marker} was created")
    if imported.exists():
        problems.append(f"the worker imported {POISON_MODULE} for a task record")
    if ran.exists():
        problems.append(f"the worker ran {POISON_MODULE}:run for a task record")
    assert not problems, "\n".join(problems)

    assert w.running, f"the worker died on poison records:\n{w.output()}"
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0, w.output()
    backend.check_integrity()


def test_poison_names_fail_cleanly_in_process(inproc_backend: Harness) -> None:
    marker = inproc_backend.workdir / "MARKER"
    already = POISON_MODULE in sys.modules
    oq = inproc_backend.client()
    mark = oq.registry["faults.mark"]
    good = [mark.enqueue_sync(f"g{i}") for i in range(5)]
    poison = _poison_tasks(marker)
    for t in poison:
        oq.task_queue.enqueue_sync(t)
    ids = [*(h.id for h in good), *(t.id for t in poison)]
    with oq.start_worker_sync(concurrency=2):
        wait_until(
            lambda: all_final(oq, ids),
            what=lambda: f"every task to end ({describe(oq, ids)})",
            timeout=RUN_TIMEOUT,
        )
    problems = _check_poison(oq, poison)
    problems += [
        f"good task {h.id}: expected SUCCESS, got {h.status_sync()}"
        for h in good
        if h.status_sync() is not TaskStatus.SUCCESS
    ]
    if marker.exists():
        problems.append(f"a hostile task ran: {marker} was created")
    if not already and POISON_MODULE in sys.modules:
        problems.append(f"the worker imported {POISON_MODULE} for a task record")
    assert not problems, "\n".join(problems)
