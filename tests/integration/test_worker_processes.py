"""Real ``omniq worker --app`` processes on persistent backends: burst runs, SIGTERM
drain, and SIGKILL recovery (at-least-once with re-runs limited to tasks in flight)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq import OmniQ, TaskStatus
from omniq.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]


def _backends() -> list[str]:
    return [b for b in ("sqlite",) if b in get_plugin_manager().backends()]


@pytest.fixture(params=_backends() or ["sqlite"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param not in get_plugin_manager().backends():
        pytest.skip(f"backend {request.param} is not installed")
    yield f"sqlite:///{tmp_path / 'worker.db'}"


def _env(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
        ENGINE_APP_QUEUE=url,
        ENGINE_APP_EVENTS=url,
        ENGINE_APP_WORKER="thread",
        **extra,
    )
    return env


def _worker(url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "omniq", "worker", "--app",
         "tests.integration.engine_app:oq", *args],
        env=_env(url, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _producer(url: str) -> OmniQ:
    os.environ["ENGINE_APP_QUEUE"] = url
    os.environ["ENGINE_APP_EVENTS"] = url
    sys.path.insert(0, str(ROOT))
    import importlib

    from tests.integration import engine_app

    return importlib.reload(engine_app).oq


def test_burst_worker_runs_everything(backend_url: str) -> None:
    oq = _producer(backend_url)
    from tests.integration import engine_app as app

    with oq:
        hs = app.add.map_sync([(i, i) for i in range(50)])
        ah = app.async_add.enqueue_sync(20, 22)
        bad = app.always_fails.enqueue_sync("nope")
        proc = _worker(backend_url, "--burst", "--concurrency", "4")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert [h.result_sync(timeout=5) for h in hs] == [2 * i for i in range(50)]
        assert ah.result_sync(timeout=5) == 42
        assert bad.status_sync() is TaskStatus.FAILED
        assert oq.get_result_sync(bad.id).error == "ValueError: nope"  # type: ignore[union-attr]


def test_sigterm_drains_running_tasks_and_hands_back_the_rest(
    backend_url: str, tmp_path: Path
) -> None:
    oq = _producer(backend_url)
    from tests.integration import engine_app as app

    with oq:
        hs = app.sleep_for.map_sync([0.8] * 6)
        # 2 running + 2 held (prefetched): the held ones are handed back at once on SIGTERM
        proc = _worker(
            backend_url, "--concurrency", "2", "--prefetch", "2", OMNIQ_SHUTDOWN_GRACE="30"
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if oq.task_queue.count_sync(status=TaskStatus.RUNNING) >= 4:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        statuses = Counter(h.status_sync() for h in hs)
        assert statuses[TaskStatus.RUNNING] == 0, "a running task was abandoned"
        assert statuses[TaskStatus.SUCCESS] >= 1
        handed_back = [oq.get_task_sync(h.id) for h in hs if h.status_sync() is TaskStatus.PENDING]
        assert len(handed_back) >= 2  # the held ones, at least
        # held tasks never started: handed back with their claim uncounted (retries kept)
        assert [t.attempt for t in handed_back if t] == [0] * len(handed_back)
        # nothing lost: a second worker finishes the rest
        proc2 = _worker(backend_url, "--burst", "--concurrency", "6")
        out2, _ = proc2.communicate(timeout=120)
        assert proc2.returncode == 0, out2
        assert all(h.result_sync(timeout=5) == 0.8 for h in hs)


def test_sigkill_recovery_reruns_only_tasks_in_flight(backend_url: str, tmp_path: Path) -> None:
    oq = _producer(backend_url)
    from tests.integration import engine_app as app

    log = tmp_path / f"runs-{uuid.uuid4().hex}.txt"
    n, concurrency = 30, 3
    with oq:
        hs = [app.record.enqueue_sync(str(log), f"{i}") for i in range(n)]
        slow = [app.sleep_for.options(queue="slow").enqueue_sync(2.0) for _ in range(concurrency)]
        proc = _worker(backend_url, "--queues", "slow,default", "--concurrency", str(concurrency),
                       OMNIQ_LEASE_SECONDS="1.5")
        deadline = time.time() + 60
        while time.time() < deadline:
            if oq.task_queue.count_sync("slow", TaskStatus.RUNNING) == concurrency:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        in_flight = oq.task_queue.count_sync(status=TaskStatus.RUNNING)
        assert in_flight >= 1
        proc2 = _worker(backend_url, "--burst", "--queues", "slow,default",
                        "--concurrency", "4", OMNIQ_LEASE_SECONDS="1.5")
        out2, _ = proc2.communicate(timeout=180)
        assert proc2.returncode == 0, out2
        assert [h.result_sync(timeout=5) for h in hs] == [str(i) for i in range(n)]
        assert all(h.result_sync(timeout=5) == 2.0 for h in slow)
        runs = Counter(log.read_text().split())
        assert set(runs) == {str(i) for i in range(n)}
        reruns = sum(c - 1 for c in runs.values())
        assert reruns <= in_flight, f"{reruns} re-runs but only {in_flight} tasks were in flight"


def test_drain_runs_a_dependency_chain_to_the_end(backend_url: str) -> None:
    """drain() must not return while finished tasks still release their dependents."""
    oq = OmniQ(task_queue=backend_url, worker="async")

    @oq.task
    def step(n: int) -> int:
        return n

    with oq:
        handles = [step.enqueue_sync(0)]
        for i in range(1, 6):
            handles.append(step.options(depends_on=[handles[-1]]).enqueue_sync(i))
        oq.drain_sync()
        assert [h.status_sync() for h in handles] == [TaskStatus.SUCCESS] * 6
