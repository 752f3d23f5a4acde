"""What the worker logs (start, retries and failures with tracebacks, lost claims,
hand-backs, periodic stats), JSON lines, and who applies the logging settings: the
``omniq`` command and workers do; importing omniq or building an app does not."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ
from omniq.config import LoggingConfig, setup_logging
from omniq.config import logging as omniq_logging
from omniq.config.logging import JsonFormatter, ensure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("omniq", "omniq.worker")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    yield
    for lg, handlers, level in saved:
        for handler in lg.handlers:
            if handler not in handlers:
                lg.removeHandler(handler)
        lg.setLevel(level)
    omniq_logging._applied = False


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The worker's messages at ``level``, each with its traceback (exception text)."""
    return [
        r.getMessage() + (f"\n{r.exc_text}" if r.exc_text else "")
        for r in caplog.records
        if r.name == "omniq.worker" and r.levelno == level
    ]


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_worker_logs_start_retry_and_failure_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="omniq.worker")

    async def main() -> None:
        oq = AsyncOmniQ(task_queue="memory://")

        @oq.task(retries=1, retry_delay=0.01)
        def kaboom() -> None:
            raise ValueError("kaboom")

        async with oq:
            h = await kaboom.enqueue()
            await oq.drain()
            assert (await oq.status(h.id)).value == "failed"

    asyncio.run(main())
    started = _messages(caplog, logging.DEBUG)
    assert any("started, attempt 1" in m for m in started), started
    assert any("started, attempt 2" in m for m in started), started
    (retry,) = _messages(caplog, logging.WARNING)
    assert "failed on attempt 1 of 2: ValueError: kaboom; retry in" in retry
    assert 'raise ValueError("kaboom")' in retry, "the retry carries the traceback"
    (failure,) = _messages(caplog, logging.ERROR)
    assert "failed on attempt 2: ValueError: kaboom" in failure
    assert "Traceback (most recent call last)" in failure


def test_worker_logs_a_lost_claim(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="omniq.worker")

    async def main() -> None:
        oq = AsyncOmniQ(task_queue="memory://")
        running = asyncio.Event()

        @oq.task
        async def slow() -> None:
            running.set()
            await asyncio.sleep(30)

        async with oq, oq.start_worker(heartbeat_interval=0.05, shutdown_grace=0.1):
            h = await slow.enqueue()
            await asyncio.wait_for(running.wait(), 10)
            assert await oq.cancel(h.id)
            await _until(
                lambda: any("lost the claim" in m for m in _messages(caplog, logging.WARNING)),
                "the lost-claim warning",
            )

    asyncio.run(main())
    (lost,) = [m for m in _messages(caplog, logging.WARNING) if "lost the claim" in m]
    assert "running task" in lost and "stopping it" in lost


def test_worker_logs_hand_backs_on_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="omniq.worker")

    async def main() -> None:
        oq = AsyncOmniQ(task_queue="memory://")
        running = asyncio.Event()

        @oq.task
        async def slow() -> None:
            running.set()
            await asyncio.sleep(30)

        async with oq:
            await slow.map([() for _ in range(5)])
            async with oq.start_worker(concurrency=1, prefetch=4, shutdown_grace=0.05):
                await asyncio.wait_for(running.wait(), 10)

    asyncio.run(main())
    infos = _messages(caplog, logging.INFO)
    assert any("handing back 4 claimed, not started task(s)" in m for m in infos), infos
    assert any("handing back 1 stopped task(s)" in m for m in infos), infos


def test_worker_logs_periodic_stats(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="omniq.worker")

    async def main() -> None:
        oq = AsyncOmniQ(task_queue="memory://", worker_stats_interval=0.05)

        @oq.task(queue="stats")
        def add(x: int) -> int:
            return x

        @oq.task(queue="elsewhere")
        def never() -> None: ...

        async with oq:
            await add.map([(i,) for i in range(3)])
            await never.enqueue()
            async with oq.start_worker(queues=["stats"]) as w:
                await _until(lambda: w.worker.processed == 3, "3 processed")
                await _until(
                    lambda: any("processed 3," in m for m in _messages(caplog, logging.INFO)),
                    "a stats line",
                )

    asyncio.run(main())
    line = next(m for m in _messages(caplog, logging.INFO) if "processed 3," in m)
    assert "failed 0" in line and "tasks/s" in line and "queue depth 0" in line


def test_json_formatter_writes_one_object_per_line() -> None:
    try:
        raise ValueError("kaboom")
    except ValueError:
        record = logging.LogRecord(
            "omniq.worker", logging.ERROR, __file__, 1, "task %s failed", ("t1",), sys.exc_info()
        )
    record.task_id = "t1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "ERROR" and data["logger"] == "omniq.worker"
    assert data["message"] == "task t1 failed" and data["task_id"] == "t1"
    assert "ValueError: kaboom" in data["exc"] and data["ts"].endswith("Z")


def test_setup_logging_json_format_and_level_override() -> None:
    setup_logging(LoggingConfig(format="json"), level="debug")
    root = logging.getLogger("omniq")
    (handler,) = [h for h in root.handlers if type(h).__name__ == "_OmniQHandler"]
    assert isinstance(handler.formatter, JsonFormatter)
    assert root.level == logging.DEBUG
    setup_logging(LoggingConfig())
    assert not isinstance(handler.formatter, JsonFormatter) and root.level == logging.INFO


def test_library_use_leaves_the_hosts_logging_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    root = logging.getLogger("omniq")
    root.setLevel(logging.NOTSET)
    handlers = list(root.handlers)
    AsyncOmniQ(task_queue="memory://")  # building an app configures nothing
    assert root.level == logging.NOTSET and root.handlers == handlers
    # the host configured logging (pytest has root handlers) and no setting asks: alone
    assert logging.getLogger().handlers
    ensure_logging(LoggingConfig())
    assert root.level == logging.NOTSET
    # a logging setting asks for it: applied
    ensure_logging(LoggingConfig(level="WARNING"))
    assert root.level == logging.WARNING


APP = textwrap.dedent(
    """
    from omniq import OmniQ

    oq = OmniQ()

    @oq.task
    def kaboom() -> None:
        raise ValueError("kaboom")
    """
)


def _omniq(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    base.update(OMNIQ_TASK_QUEUE_TYPE="sqlite", OMNIQ_BASE_DIR=str(tmp_path / ".omniq"), **env)
    return subprocess.run(
        [sys.executable, "-m", "omniq", *argv],
        cwd=tmp_path,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_logs_failures_by_the_settings(tmp_path: Path) -> None:
    (tmp_path / "logapp.py").write_text(APP)
    enqueue = _omniq(tmp_path, "enqueue", "-A", "logapp:oq", "kaboom")
    assert enqueue.returncode == 0, enqueue.stderr
    worker = _omniq(
        tmp_path, "worker", "-A", "logapp:oq", "--burst", "--log-format", "json",
        OMNIQ_LOG_LEVEL="WARNING",
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert "1 task processed, 1 failed" in worker.stdout
    records = [json.loads(line) for line in worker.stderr.splitlines() if line.strip()]
    assert records, "the failure was not logged"
    assert {r["level"] for r in records} <= {"WARNING", "ERROR", "CRITICAL"}, "INFO is off"
    (failure,) = [r for r in records if "failed on attempt 1" in r["message"]]
    assert failure["level"] == "ERROR" and 'raise ValueError("kaboom")' in failure["exc"], (
        "the traceback is the line's exc field, as for any logged exception"
    )
    assert failure["task"] == "logapp:kaboom" and failure["attempt"] == 1, "structured fields"
    assert failure["task_id"] == enqueue.stdout.strip()
    # --loglevel wins over OMNIQ_LOG_LEVEL
    _omniq(tmp_path, "enqueue", "-A", "logapp:oq", "kaboom")
    debug = _omniq(
        tmp_path, "worker", "-A", "logapp:oq", "--burst", "--loglevel", "debug",
        OMNIQ_LOG_LEVEL="ERROR",
    )  # fmt: skip
    assert "DEBUG    omniq.worker: task" in debug.stderr and "started, attempt 1" in debug.stderr
    quiet = _omniq(tmp_path, "tasks", "list", OMNIQ_DISABLE_LOGGING="1")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_redacting_filter_covers_exception_text() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(omniq_logging.RedactingFilter())
    logger = logging.getLogger("omniq.test_redact")
    logger.addHandler(handler)
    try:
        try:
            raise ConnectionError("redis://u:hunter2@h:6379 refused")
        except ConnectionError:
            logger.error("connect failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert "hunter2" not in stream.getvalue() and "***" in stream.getvalue()
