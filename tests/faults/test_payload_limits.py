"""Payloads over the backend's limit: a clear PayloadTooLargeError at enqueue (nothing
half-stored, the queue goes on), and a result over the limit fails its task with a
reason instead of stalling the worker's result writes."""

from __future__ import annotations

import re
import signal

import pytest

from omniq import TaskStatus
from omniq.errors import PayloadTooLargeError
from omniq.models import Task
from tests.faults.harness import RUN_TIMEOUT, Harness, all_final, describe, wait_until


def test_oversized_task_is_refused_at_enqueue(inproc_backend: Harness) -> None:
    limit, reason = inproc_backend.max_payload()
    if limit is None:
        pytest.skip(reason)
    oq = inproc_backend.client()
    big = Task(func="faults.mark", args=("x" * (limit + 4096),))
    with pytest.raises(PayloadTooLargeError) as info:
        oq.task_queue.enqueue_sync(big)
    message = str(info.value)
    assert str(limit) in message and (big.id in message or big.func in message), (
        f"the error should name the task and the limit ({limit} bytes): {message!r}"
    )
    assert oq.get_task_sync(big.id) is None, "a refused task must not be stored"

    # through the public API too, one oversized call among normal ones
    mark = oq.registry["faults.mark"]
    with pytest.raises(PayloadTooLargeError):
        mark.map_sync([("small-1",), ("y" * (limit + 4096),), ("small-2",)])
    with pytest.raises(PayloadTooLargeError):
        mark.enqueue_sync("z" * (limit + 4096))

    # the queue goes on
    ok = mark.enqueue_sync("fine")
    assert ok.status_sync() is TaskStatus.PENDING


@pytest.mark.slow
def test_oversized_result_fails_the_task_and_the_worker_goes_on(backend: Harness) -> None:
    limit, reason = backend.max_payload()
    if limit is None:
        pytest.skip(reason)
    oq = backend.client()
    big = oq.registry["faults.big_result"].enqueue_sync(limit + 4096)
    mark = oq.registry["faults.mark"]
    others = [mark.enqueue_sync(f"o{i}") for i in range(5)]
    ids = [big.id, *(h.id for h in others)]
    w = backend.worker(concurrency=2)
    wait_until(
        lambda: all_final(oq, ids),
        what=lambda: f"the oversized result's task and the others to end ({describe(oq, ids)})",
        timeout=RUN_TIMEOUT,
        alive=[w],
    )
    res = oq.get_result_sync(big.id)
    assert big.status_sync() is TaskStatus.FAILED, f"expected FAILED, got {big.status_sync()}"
    assert res is not None and res.status is TaskStatus.FAILED, res
    assert res.error and re.search(r"too large|max_payload", res.error, re.I), (
        f"the reason should say the result is too large, got {res.error!r}"
    )
    assert all(h.status_sync() is TaskStatus.SUCCESS for h in others)
    later = mark.enqueue_sync("later")
    wait_until(
        lambda: later.status_sync() is TaskStatus.SUCCESS,
        what="a task enqueued afterwards to run",
        alive=[w],
    )
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0, w.output()
