"""Run every example in examples/ as a user would, so none of them rots.

Each script runs in a subprocess, in a fresh directory (its SQLite database under
``OMNIQ_BASE_DIR`` there), with no ``OMNIQ_*`` variable of this process leaking in, a
timeout, and assertions on what it prints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import test_nats_support as nats_support

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 60.0


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without OMNIQ_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path / ".omniq")
    env.update(extra)
    return env


def run(
    args: list[str], tmp_path: Path, cwd: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args``; fail with its output unless it exits 0."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd or tmp_path,
        env=clean_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, (
        f"{args} exited {proc.returncode}, expected 0\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr}"
    )
    return proc


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_sync(tmp_path: Path, backend: str) -> None:
    out = run([str(EXAMPLES / "sync.py")], tmp_path, OMNIQ_TASK_QUEUE_TYPE=backend).stdout
    assert "add: 3" in out
    assert "flaky: job-1 ok after 2 runs" in out
    assert "divide failed: ZeroDivisionError: division by zero" in out
    assert "requeued: True" in out
    assert "divide failed again, as expected" in out
    assert "status of add: success" in out


def test_async_app(tmp_path: Path) -> None:
    out = run([str(EXAMPLES / "async_app.py")], tmp_path).stdout
    assert "cancelled: True" in out
    assert "fetch: {'url': 'https://example.com', 'status': 200}" in out
    assert "report: report urgent done" in out
    assert "the delayed report was cancelled and never ran" in out
    assert "events of fetch: enqueued, executing, complete" in out


def test_schedules(tmp_path: Path) -> None:
    out = run([str(EXAMPLES / "schedules.py")], tmp_path).stdout
    assert "cron next run (UTC): " in out
    assert "interval fired at least twice; one-shot fired once" in out
    assert "runs while paused: 0" in out
    assert "resumed: fired again" in out
    assert "schedule one-shot: done" in out
    assert "schedule interval: active" in out


def test_dependencies(tmp_path: Path) -> None:
    out = run([str(EXAMPLES / "dependencies.py")], tmp_path).stdout
    assert "before any worker, d is waiting" in out
    assert "b, c: 60 600" in out
    assert "d: loaded diamond" in out
    assert "y cancelled because its dependency failed" in out


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_bulk_map(tmp_path: Path, backend: str) -> None:
    out = run(
        [str(EXAMPLES / "bulk_map.py"), "300"], tmp_path, OMNIQ_TASK_QUEUE_TYPE=backend
    ).stdout
    assert "enqueued 300 tasks" in out
    assert "pending in 'bulk': 300" in out
    assert f"sum of squares: {sum(x * x for x in range(300))}" in out
    assert "succeeded: 300" in out


def test_config_code_yaml_env(tmp_path: Path) -> None:
    script = str(EXAMPLES / "config" / "configure.py")
    out = run([script, "code"], tmp_path).stdout
    assert "url='sqlite:///code.db'" in out and "max_workers=4" in out
    assert "[code] hello world" in out

    out = run([script, "yaml", str(EXAMPLES / "config" / "sqlite.yaml")], tmp_path).stdout
    assert "url='sqlite:///example.db'" in out and "'synchronous': 'normal'" in out
    assert "[yaml] hello world" in out

    # the environment overrides the YAML file named by OMNIQ_CONFIG
    extra = {
        "OMNIQ_CONFIG": str(EXAMPLES / "config" / "sqlite.yaml"),
        "OMNIQ_TASK_QUEUE_URL": "sqlite:///env.db",
        "OMNIQ_MAX_WORKERS": "2",
    }
    out = run([script, "env"], tmp_path, **extra).stdout
    assert "url='sqlite:///env.db'" in out and "max_workers=2" in out
    assert "[env] hello world" in out
    assert (tmp_path / ".omniq" / "env.db").exists(), "expected the env database to be used"


@pytest.fixture
def nats_url() -> Iterator[str]:
    """A NATS URL with a name prefix of its own, dropped afterwards."""
    nats_support.require_nats()
    prefix = f"ex{uuid.uuid4().hex[:8]}"
    yield f"{nats_support.URL}?name_prefix={prefix}"
    import asyncio

    asyncio.run(nats_support.drop_namespace(prefix))


def run_fastapi_example(tmp_path: Path, **extra: str) -> str:
    """``omniq worker --app app:oq`` in the background, ``enqueue.py`` against it, then
    SIGTERM: the worker must stop cleanly."""
    app_dir = EXAMPLES / "fastapi_app"
    env = clean_env(tmp_path, **extra)
    worker = subprocess.Popen(
        [sys.executable, "-m", "omniq", "worker", "--app", "app:oq", "-Q", "default,reports"],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = run([str(app_dir / "enqueue.py"), "ada@example.com"], tmp_path, app_dir, **extra)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            log, _ = worker.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
    assert worker.returncode == 0, f"worker exited {worker.returncode}, expected 0:\n{log}"
    assert "2 tasks processed, 0 failed" in log, f"expected the worker's summary in:\n{log}"
    assert "welcome mail sent to ada@example.com" in out.stdout
    assert "words: 4" in out.stdout
    return log


def test_fastapi_example_worker_on_sqlite(tmp_path: Path) -> None:
    log = run_fastapi_example(tmp_path)
    assert "backend=sqlite" in log
    assert (tmp_path / ".omniq" / "omniq.db").exists()


@pytest.mark.slow
def test_fastapi_example_worker_on_nats(tmp_path: Path, nats_url: str) -> None:
    log = run_fastapi_example(tmp_path, OMNIQ_TASK_QUEUE_URL=nats_url)
    assert "backend=nats://" in log


def test_fastapi_web_app(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    script = """
import time
from fastapi.testclient import TestClient
from web import api
from app import oq
with TestClient(api) as c:
    tid = c.post("/signup", params={"email": "ada@example.com"}).json()["task_id"]
    print(c.get(f"/tasks/{tid}").json()["status"])
    print(c.get("/tasks/unknown").status_code)
"""
    out = run(["-c", script], tmp_path, EXAMPLES / "fastapi_app").stdout
    assert out.split() == ["pending", "404"]


def test_third_party_backend_app(tmp_path: Path) -> None:
    root = EXAMPLES / "third_party_backend"
    extra = {
        "OMNIQ_TASK_QUEUE_TYPE": "acme",
        "OMNIQ_PLUGINS": "omniq_acme.plugin",  # the entry point, when not installed
        "PYTHONPATH": str(root / "src"),
    }
    out = run([str(root / "app.py")], tmp_path, root, **extra).stdout
    assert "task queue: AsyncAcmeQueue" in out
    assert "HELLO! ACME! BACKEND!" in out
