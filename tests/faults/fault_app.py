"""The app that worker subprocesses of the fault suite load (``--app tests.faults.fault_app:oq``).

Settings come from the environment, set by the harness:

* ``FAULT_URL``: the backend URL (task queue; results follow it);
* ``FAULT_EVENTS=1``: events on the same backend;
* ``FAULT_WORKER``: executor type (default ``thread``);
* ``FAULT_LOG_DIR``: where tasks append one line per execution step
  (``start|end KEY PID TOKEN``), one file per process, so a test can count executions.

Tasks are registered under fixed names (``faults.*``) so producers can enqueue them by
name. ``unregistered_helper`` is deliberately NOT a task: a worker must never run it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from omniq import OmniQ

#: Upper bound of a ``hold`` task's wait for its flag file to disappear (seconds).
HOLD_LIMIT = 300.0


def _log(event: str, key: str, token: str) -> None:
    log_dir = os.environ.get("FAULT_LOG_DIR")
    if not log_dir:
        return
    line = f"{event} {key} {os.getpid()} {token}\n".encode()
    path = os.path.join(log_dir, f"exec-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: never interleaved
    finally:
        os.close(fd)


def _outcome(key: str, token: str) -> dict[str, Any]:
    return {"key": key, "pid": os.getpid(), "token": token}


def mark(key: str, seconds: float = 0.0) -> dict[str, Any]:
    """Log start, sleep ``seconds``, log end; return who ran it (pid, token)."""
    token = uuid.uuid4().hex[:12]
    _log("start", key, token)
    if seconds:
        time.sleep(seconds)
    _log("end", key, token)
    return _outcome(key, token)


async def amark(key: str, seconds: float = 0.0) -> dict[str, Any]:
    """``mark`` as a coroutine (cancellable by the async executor)."""
    token = uuid.uuid4().hex[:12]
    _log("start", key, token)
    if seconds:
        await asyncio.sleep(seconds)
    _log("end", key, token)
    return _outcome(key, token)


async def ahold(key: str, flag: str) -> dict[str, Any]:
    """Run while the file ``flag`` exists (bounded by HOLD_LIMIT); cancellable."""
    token = uuid.uuid4().hex[:12]
    _log("start", key, token)
    deadline = time.monotonic() + HOLD_LIMIT
    while os.path.exists(flag) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    _log("end", key, token)
    return _outcome(key, token)


def hold(key: str, flag: str) -> dict[str, Any]:
    """``ahold`` as a plain function (a thread that cannot be cancelled)."""
    token = uuid.uuid4().hex[:12]
    _log("start", key, token)
    deadline = time.monotonic() + HOLD_LIMIT
    while os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.02)
    _log("end", key, token)
    return _outcome(key, token)


def count(key: str) -> str:
    """The cheapest task: log one line, return the key."""
    _log("run", key, "-")
    return key


def big_result(size: int) -> bytes:
    """A result of ``size`` bytes (for result-size limits)."""
    return b"r" * size


def unregistered_helper(path: str) -> None:
    """NOT a task. A worker that runs it (by ``module:qualname``) leaves ``path``."""
    with open(path, "w") as f:
        f.write("unregistered_helper ran\n")


TASKS: dict[str, Any] = {
    "faults.mark": mark,
    "faults.amark": amark,
    "faults.ahold": ahold,
    "faults.hold": hold,
    "faults.count": count,
    "faults.big_result": big_result,
}


def register(app: Any) -> None:
    """Register every task of this module on ``app`` (an OmniQ or AsyncOmniQ)."""
    for name, fn in TASKS.items():
        app.task(name=name)(fn)


def build(url: str, *, events: bool = False, worker: str = "thread") -> OmniQ:
    """An OmniQ on ``url`` with this module's tasks registered."""
    app = OmniQ(task_queue=url, event_storage=url if events else None, worker=worker)
    register(app)
    return app


oq = build(
    os.environ.get("FAULT_URL", "memory://faults"),
    events=os.environ.get("FAULT_EVENTS") == "1",
    worker=os.environ.get("FAULT_WORKER", "thread"),
)
