"""Shared parts of the safety regression tests (``tests/core/test_safety.py`` on memory and
SQLite, ``tests/backends/test_nats_safety.py`` on NATS).

* Task functions at module level, so a process-executor child can import them by name
  (``tests.core.safety_app:<name>``). A test registers them on its own app with
  ``oq.task(fn)``: a worker runs only what is registered on its app.
* Scenarios (``check_*``): one behaviour each, run against an app built by the calling
  test file, so every backend is held to the same expectations.

Nothing here is collected as a test (no ``test_`` names).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ, TaskFailedError, TaskStatus
from omniq.errors import SerializationError
from omniq.models import Task, TaskResult
from omniq.tasks import TaskHandle
from omniq.workers.runner import WorkerHandle

#: The repository root: spawned process-executor children import ``tests.core.safety_app``.
ROOT = Path(__file__).resolve().parents[2]
#: How deep the structures nest that cannot be encoded (beyond any encoder's limit).
DEEP = 3000
#: The shutdown grace period the stop tests use (seconds).
GRACE = 0.5

MakeApp = Callable[..., OmniQ]


# --- task functions (importable by name) ---------------------------------------------------


def add_one(x: int) -> int:
    return x + 1


def echo(value: Any) -> Any:
    return value


def fail_always() -> None:
    raise ValueError("this task always fails")


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels deep."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def deep_result(depth: int) -> list[Any]:
    """Returns a value nested too deep to be encoded."""
    return nested(depth)


def sleep_then_mark(started: str, marker: str, seconds: float) -> str:
    """Writes its pid to ``started`` (atomically), sleeps, then writes ``marker``."""
    tmp = f"{started}.tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, started)
    time.sleep(seconds)
    Path(marker).write_text("the task ran to the end")
    return "done"


class UnprintableError(Exception):
    """An exception whose ``str()`` and ``repr()`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ of UnprintableError fails")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ of UnprintableError fails")


def raise_unprintable() -> None:
    raise UnprintableError("never shown")


async def raise_unprintable_async() -> None:
    await asyncio.sleep(0)
    raise UnprintableError("never shown")


# --- helpers -------------------------------------------------------------------------------


def unique(stem: str) -> str:
    """A module name no test has imported before."""
    return f"{stem}_{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def write_marker_module(directory: Path, name: str, marker: Path, body: str = "") -> None:
    """A module ``name`` in ``directory`` that creates ``marker`` when it is imported and
    defines ``run(*args, **kwargs)`` and ``handler(*args, **kwargs)`` (both also touch
    ``marker``), plus ``body``."""
    (directory / f"{name}.py").write_text(
        "from pathlib import Path\n"
        f"MARKER = Path({str(marker)!r})\n"
        "MARKER.write_text('imported')\n"
        "def run(*args, **kwargs):\n"
        "    MARKER.write_text('run')\n"
        "def handler(*args, **kwargs):\n"
        "    MARKER.write_text('handler')\n" + body
    )


def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory on ``sys.path`` for marker modules."""
    d = tmp_path / "importable"
    d.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(d))
    return d


@contextlib.contextmanager
def bounded_worker(oq: OmniQ, stop_within: float = 20.0, **options: Any) -> Iterator[WorkerHandle]:
    """A background worker that must stop (drain and return) within ``stop_within`` s."""
    handle = oq.start_worker_sync(**options)
    try:
        yield handle
    finally:
        try:
            handle.stop_sync(timeout=stop_within)
        except TimeoutError:
            raise AssertionError(
                f"the worker did not stop within {stop_within} s of being asked to"
            ) from None


def final_result(oq: OmniQ, task_id: str, what: str, timeout: float = 30.0) -> TaskResult:
    res = oq.wait_result_sync(task_id, timeout=timeout)
    assert res is not None, f"{what} (task {task_id}) did not finish within {timeout} s"
    return res


def assert_refused(oq: OmniQ, task_id: str, name: str) -> None:
    """The task of unregistered function ``name`` ended FAILED, saying how to register it."""
    res = final_result(oq, task_id, f"the task of unregistered function {name!r}")
    assert res.status is TaskStatus.FAILED, (
        f"a task of unregistered function {name!r} must end FAILED without running; "
        f"it ended {res.status.value} (result {res.result!r}, error {res.error!r})"
    )
    error = res.error or ""
    assert name in error, f"the error should name the function {name!r}: {error!r}"
    assert "register" in error.lower(), f"the error should say how to register it: {error!r}"


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def find_callback(oq: OmniQ, parent_id: str, timeout: float = 30.0) -> Task:
    """The callback task enqueued when task ``parent_id`` finished."""

    def look() -> Task | None:
        for t in oq.task_queue.list_sync(limit=1000):
            if t.metadata.get("callback_of") == parent_id:
                return t  # type: ignore[no-any-return]
        return None

    return wait_until(look, timeout, f"the callback task of {parent_id}")  # type: ignore[no-any-return]


# --- 1. trust boundary ---------------------------------------------------------------------


def check_unregistered_names_are_refused(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, worker: str = "thread"
) -> None:
    """Tasks naming unregistered functions (by name, or as a raw Task record) end FAILED;
    nothing is imported and nothing runs; registered tasks still run."""
    if worker == "process":
        monkeypatch.syspath_prepend(str(ROOT))
    mods = module_dir(tmp_path, monkeypatch)
    evil = unique("omniq_safety_evil")
    imported = tmp_path / "evil-module-imported"
    write_marker_module(mods, evil, imported)
    touched = tmp_path / "os-system-ran"
    exec_ran = tmp_path / "exec-ran"

    ok = oq.task(add_one)
    by_name = oq.enqueue_sync("os:system", f"touch {touched}")
    by_module = oq.enqueue_sync(f"{evil}:run")
    record = Task(func="builtins:exec", args=(f"open({str(exec_ran)!r}, 'w').close()",))
    oq.task_queue.enqueue_sync(record)  # a record written straight into the store
    good = ok.enqueue_sync(1)

    with bounded_worker(oq, worker=worker, concurrency=2):
        assert good.result_sync(timeout=30) == 2, "a registered task should still run"
        assert_refused(oq, by_name.id, "os:system")
        assert_refused(oq, by_module.id, f"{evil}:run")
        assert_refused(oq, record.id, "builtins:exec")
    assert not touched.exists(), "os.system ran: the worker executed an unregistered function"
    assert not exec_ran.exists(), "builtins.exec ran: the worker executed a raw Task record"
    assert evil not in sys.modules, f"the worker imported module {evil} of an unregistered task"
    assert not imported.exists(), f"module {evil} was imported (its marker file exists)"


def check_unregistered_callbacks_are_refused(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``on_success`` / ``on_failure`` naming unregistered functions: the callback tasks
    end FAILED, nothing is imported and nothing runs."""
    mods = module_dir(tmp_path, monkeypatch)
    evil = unique("omniq_safety_callback")
    imported = tmp_path / "callback-module-imported"
    write_marker_module(mods, evil, imported)
    touched = tmp_path / "callback-os-system-ran"

    echo_tf = oq.task(echo)
    fail_tf = oq.task(fail_always, retries=0)
    ok = echo_tf.options(on_success="os:system").enqueue_sync(f"touch {touched}")
    bad = fail_tf.options(on_failure=f"{evil}:handler").enqueue_sync()

    with bounded_worker(oq, concurrency=2):
        assert ok.result_sync(timeout=30) == f"touch {touched}"
        with pytest.raises(TaskFailedError, match="always fails"):
            bad.result_sync(timeout=30)
        for parent, name in ((ok.id, "os:system"), (bad.id, f"{evil}:handler")):
            callback = find_callback(oq, parent)
            assert callback.func == name
            assert_refused(oq, callback.id, name)
    assert not touched.exists(), "the on_success callback os:system ran"
    assert evil not in sys.modules, f"the on_failure callback's module {evil} was imported"
    assert not imported.exists(), f"module {evil} was imported (its marker file exists)"


def check_allowlist_admits_listed_modules_only(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, via: str
) -> None:
    """``task_import_allowlist`` (argument or ``OMNIQ_TASK_IMPORT_ALLOWLIST``): a task of a
    listed module is imported and runs; one of an unlisted module is still refused."""
    mods = module_dir(tmp_path, monkeypatch)
    allowed = unique("omniq_safety_allowed")
    denied = unique("omniq_safety_denied")
    write_marker_module(
        mods, allowed, tmp_path / "allowed-imported", "def double(x):\n    return 2 * x\n"
    )
    denied_marker = tmp_path / "denied-imported"
    write_marker_module(mods, denied, denied_marker)
    if via == "argument":
        oq = make_app(task_import_allowlist=[allowed])
    else:
        monkeypatch.setenv("OMNIQ_TASK_IMPORT_ALLOWLIST", f"omniq_safety_unrelated,{allowed}")
        oq = make_app()

    ok = oq.enqueue_sync(f"{allowed}:double", 21)
    bad = oq.enqueue_sync(f"{denied}:run")
    with bounded_worker(oq, concurrency=2):
        res = final_result(oq, ok.id, f"the task of allow-listed module {allowed}")
        assert res.status is TaskStatus.SUCCESS and res.result == 42, (
            f"a task of an allow-listed module should be imported and run: {res!r}"
        )
        assert_refused(oq, bad.id, f"{denied}:run")
    assert denied not in sys.modules, f"module {denied} is not allow-listed but was imported"
    assert not denied_marker.exists(), f"module {denied} was imported (its marker file exists)"


def check_plain_callable_enqueued_here_runs(oq: OmniQ) -> None:
    """A plain callable enqueued in this process is registered on the app by the enqueue,
    so the in-process worker runs it (even when it could not be imported by name)."""

    def triple(x: int) -> int:  # not importable: its qualname has <locals>
        return 3 * x

    h = oq.enqueue_sync(triple, 5)
    with bounded_worker(oq):
        assert h.result_sync(timeout=30) == 15


# --- 2. values nested too deep -------------------------------------------------------------


def check_too_deep_argument_is_refused_at_enqueue(oq: OmniQ) -> None:
    """Enqueueing an argument nested too deep raises SerializationError (not RecursionError)
    and stores nothing."""
    add = oq.task(add_one)
    with pytest.raises(SerializationError):
        add.enqueue_sync(nested(DEEP))
    assert oq.task_queue.count_sync() == 0, "nothing should be stored"
    with bounded_worker(oq):
        assert add.enqueue_sync(1).result_sync(timeout=30) == 2


def check_too_deep_result_fails_its_task_only(oq: OmniQ) -> None:
    """A task returning a value nested too deep ends FAILED (SerializationError); the
    tasks finishing around it succeed, and the worker stops normally."""
    add = oq.task(add_one)
    deep_tf = oq.task(deep_result)
    before = [add.enqueue_sync(i) for i in range(3)]
    deep = deep_tf.enqueue_sync(DEEP)
    after = [add.enqueue_sync(i) for i in range(3, 6)]
    with bounded_worker(oq, concurrency=2):
        with pytest.raises(TaskFailedError) as info:
            deep.result_sync(timeout=20)
        error = info.value.error or ""
        assert "SerializationError" in error or "cannot be encoded" in error, error
        assert [h.result_sync(timeout=20) for h in before + after] == [1, 2, 3, 4, 5, 6]
    res = oq.get_result_sync(deep.id)
    assert res is not None and res.status is TaskStatus.FAILED, res


# --- 6. exceptions that cannot be printed --------------------------------------------------


def check_unprintable_exception_fails_the_task(oq: OmniQ, *, worker: str = "thread") -> None:
    """A task raising an exception whose ``str()`` and ``repr()`` raise ends FAILED on its
    (only) attempt, its error starting with the exception's type name."""
    fn = raise_unprintable_async if worker == "async" else raise_unprintable
    tf = oq.task(fn, retries=0)
    add = oq.task(add_one)
    h = tf.enqueue_sync()
    with bounded_worker(oq, worker=worker, concurrency=2):
        with pytest.raises(TaskFailedError):
            h.result_sync(timeout=20)
        assert add.enqueue_sync(1).result_sync(timeout=30) == 2, "the worker should go on"
    res = oq.get_result_sync(h.id)
    assert res is not None and res.status is TaskStatus.FAILED, res
    error = res.error or ""
    assert error.startswith("UnprintableError"), f"error should start with the type: {error!r}"
    assert "PoisonTaskError" not in error and "lost its worker" not in error, error
    assert res.attempt == 1, f"retries=0: it should fail on its first attempt, not {res.attempt}"


# --- 5. stopping running tasks after the grace period --------------------------------------


def check_process_task_killed_after_grace(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process executor: past the grace period the child running the task is killed, the
    task never finishes its work, and the worker returns promptly."""
    monkeypatch.syspath_prepend(str(ROOT))
    started, marker = tmp_path / "child-started", tmp_path / "child-finished"
    tf = oq.task(sleep_then_mark, retries=0)
    handle = oq.start_worker_sync(worker="process", concurrency=1, shutdown_grace=GRACE)
    pid: int | None = None
    try:
        tf.enqueue_sync(str(started), str(marker), 20.0)
        text = wait_until(
            lambda: started.exists() and started.read_text(),
            60,
            "the task to start in a child process",
        )
        child = pid = int(text)
        t0 = time.monotonic()
        handle.stop_sync(timeout=60)
        took = time.monotonic() - t0
        assert took < GRACE + 5, f"the worker took {took:.1f} s to stop (grace {GRACE} s)"
        wait_until(
            lambda: not process_alive(child),
            5,
            f"the child process {child} running the task to be killed",
        )
        assert not marker.exists(), "the task ran to the end after the worker stopped"
    finally:
        if handle.running:
            handle.stop_sync(timeout=60)
        if pid is not None and process_alive(pid):
            os.kill(pid, signal.SIGKILL)  # the child this test's worker started, left alive


def check_async_task_cancelled_after_grace(oq: OmniQ) -> None:
    """Async executor: past the grace period a running coroutine is cancelled."""
    started = threading.Event()
    outcome: list[str] = []

    @oq.task(retries=0)
    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("ran to the end")

    handle = oq.start_worker_sync(worker="async", concurrency=1, shutdown_grace=GRACE)
    try:
        slow.enqueue_sync()
        assert started.wait(30), "the coroutine task did not start within 30 s"
        t0 = time.monotonic()
        handle.stop_sync(timeout=30)
        took = time.monotonic() - t0
        assert took < GRACE + 3, f"the worker took {took:.1f} s to stop (grace {GRACE} s)"
        assert outcome == ["cancelled"], f"the coroutine was not cancelled: {outcome}"
    finally:
        if handle.running:
            handle.stop_sync(timeout=30)


def check_thread_task_reported_unstoppable(oq: OmniQ, caplog: pytest.LogCaptureFixture) -> None:
    """Thread executor: a sync function cannot be stopped. Past the grace period the
    worker says so, does not hand the task back (it still runs), and returns promptly."""
    started, release = threading.Event(), threading.Event()

    @oq.task(retries=0)
    def stuck() -> str:
        started.set()
        release.wait(30)
        return "finished"

    caplog.set_level(logging.INFO, logger="omniq.worker")
    handle = oq.start_worker_sync(worker="thread", concurrency=1, shutdown_grace=GRACE)
    try:
        h = stuck.enqueue_sync()
        assert started.wait(30), "the sync task did not start within 30 s"
        t0 = time.monotonic()
        handle.stop_sync(timeout=30)
        took = time.monotonic() - t0
        assert took < GRACE + 3, f"the worker took {took:.1f} s to stop (grace {GRACE} s)"
        messages = [r.getMessage() for r in caplog.records if r.name == "omniq.worker"]
        assert any("cannot be stopped" in m for m in messages), (
            f"the worker should log that the running sync task cannot be stopped: {messages}"
        )
        task = oq.get_task_sync(h.id)
        assert task is not None and task.status is TaskStatus.RUNNING, (
            "a task whose function still runs in a thread must not be handed back "
            f"(offered to other workers): {task!r}"
        )
    finally:
        release.set()
        if handle.running:
            handle.stop_sync(timeout=30)


# --- 7. tasks failed at claim time ---------------------------------------------------------


def check_claim_time_failure_is_reported(
    oq: OmniQ, handle: TaskHandle[Any], good: TaskHandle[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Task ``handle`` was damaged in storage before any worker claimed it: once a worker
    has claimed, it has a FAILED result with the reason, waiters learn it at once, and the
    worker logs an error naming it. ``good`` (a handle returning 2) still runs."""
    task_id = handle.id
    caplog.set_level(logging.INFO, logger="omniq")
    with bounded_worker(oq):
        t0 = time.monotonic()
        with pytest.raises(TaskFailedError):
            handle.result_sync(timeout=30)
        took = time.monotonic() - t0
        assert took < 10, f"the waiter learnt of the failure only after {took:.1f} s"
        assert good.result_sync(timeout=30) == 2, "the other task should still run"
    res = oq.get_result_sync(task_id)
    assert res is not None, "a task failed at claim time should have a result"
    assert res.status is TaskStatus.FAILED, res
    error = (res.error or "").lower()
    assert any(word in error for word in ("corrupt", "decod", "payload")), (
        f"the result should give the reason: {res!r}"
    )
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("omniq") and r.levelno >= logging.ERROR
    ]
    assert any(task_id in m for m in logged), (
        f"the worker should log an error naming task {task_id}: {logged}"
    )
