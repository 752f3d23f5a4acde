"""Prometheus metrics from workers: a real worker on SQLite runs succeeding and failing
tasks (with retries), ``/metrics`` is scraped over HTTP and checked against the run's
counts; ``omniq worker --metrics-port`` serves the same; nothing is imported when the
metrics are off."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from omniq import AsyncOmniQ, OmniQ
from omniq.errors import ConfigurationError, TaskFailedError
from omniq.models import TaskStatus
from omniq.observability.prometheus import WorkerMetrics, serve_metrics
from omniq.plugins import PluginManager

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _manager() -> PluginManager:
    """A plugin manager of its own (backends from entry points, nothing from the
    environment): the metrics plugin registered on it never leaks into other tests."""
    pm = PluginManager()
    pm.load_plugins({})
    return pm


def scrape(url: str) -> Samples:
    """Every sample of the metrics page: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(url: str, done: Callable[[Samples], bool], timeout: float = 60) -> Samples:
    """Scrape until ``done`` holds (lifecycle events reach the metrics in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


N_OK, N_BAD, RETRIES, N_DELAYED = 7, 3, 2, 4


def test_scraped_metrics_match_the_runs_counts(tmp_path: Path) -> None:
    pm = _manager()
    oq = OmniQ(task_queue=f"sqlite:///{tmp_path / 'm.db'}", plugins=pm, worker="async")

    @oq.task(name="ok")
    async def ok(i: int) -> int:
        return i

    @oq.task(name="bad", retries=RETRIES, retry_delay=0.01)
    async def bad(i: int) -> None:
        raise ValueError(f"bad {i}")

    with oq, serve_metrics(pm, 0) as server:
        assert server.url.startswith("http://127.0.0.1:"), "served on loopback by default"
        later = [ok.options(delay=3600).enqueue_sync(i) for i in range(N_DELAYED)]
        ok.options(depends_on=[later[0]]).enqueue_sync(-1)  # WAITING on a delayed task
        with oq.start_worker_sync(queues=["default"], concurrency=4):
            oks = [ok.enqueue_sync(i) for i in range(N_OK)]
            bads = [bad.enqueue_sync(i) for i in range(N_BAD)]
            assert [h.result_sync(timeout=60) for h in oks] == list(range(N_OK))
            for h in bads:
                with pytest.raises(TaskFailedError, match="bad"):
                    h.result_sync(timeout=60)
            samples = scrape_until(
                server.url,
                lambda s: (
                    value(s, "omniq_tasks_finished_total", queue="default", state="failed") >= N_BAD
                    and value(s, "omniq_tasks_finished_total", queue="default", state="success")
                    >= N_OK
                ),
            )

    def finished(state: str) -> float:
        return value(samples, "omniq_tasks_finished_total", queue="default", state=state)

    assert finished("success") == N_OK, f"{N_OK} tasks succeeded, got {finished('success')}"
    assert finished("failed") == N_BAD, f"{N_BAD} tasks failed, got {finished('failed')}"
    retries = value(samples, "omniq_task_retries_total", queue="default")
    assert retries == N_BAD * RETRIES, f"each failing task retried {RETRIES} times: {retries}"
    runs_ok = value(
        samples, "omniq_task_duration_seconds_count", queue="default", outcome="success"
    )
    runs_bad = value(samples, "omniq_task_duration_seconds_count", queue="default", outcome="error")
    assert runs_ok == N_OK, f"one timed run per succeeding task, got {runs_ok}"
    assert runs_bad == N_BAD * (RETRIES + 1), f"every failed attempt is timed, got {runs_bad}"
    depth = {
        status: value(samples, "omniq_queue_depth", queue="default", status=status)
        for status in ("pending", "waiting", "running")
    }
    assert depth == {"pending": N_DELAYED, "waiting": 1, "running": 0}, (
        f"the delayed tasks are pending and their dependant waiting, got {depth}"
    )
    interrupted = sum(
        v for (n, _), v in samples.items() if n == "omniq_task_runs_interrupted_total"
    )
    assert interrupted == 0, "no run was interrupted"
    assert not pm.get_plugins() & {server.metrics}, "closing the server unregisters the plugin"


def test_a_run_stopped_at_shutdown_counts_as_interrupted(tmp_path: Path) -> None:
    pm = _manager()
    oq = OmniQ(task_queue=f"sqlite:///{tmp_path / 's.db'}", plugins=pm, worker="async")

    @oq.task(name="sleepy")
    async def sleepy() -> None:
        await anyio.sleep(3600)

    with oq, serve_metrics(pm, 0) as server:
        worker = oq.start_worker_sync(queues=["default"], shutdown_grace=0.05)
        try:
            sleepy.enqueue_sync()
            running = scrape_until(
                server.url,
                lambda s: (
                    value(s, "omniq_tasks_running", queue="default") == 1
                    and value(s, "omniq_queue_depth", queue="default", status="running") == 1
                ),
            )
        finally:
            worker.stop_sync(timeout=60)
        stopped = scrape(server.url)
    assert value(running, "omniq_tasks_running", queue="default") == 1, "one task runs"
    assert value(running, "omniq_queue_depth", queue="default", status="running") == 1
    reason = {
        dict(labels)["reason"]: v
        for (n, labels), v in stopped.items()
        if n == "omniq_task_runs_interrupted_total"
    }
    assert reason == {"stopped": 1}, f"the run stopped at shutdown is counted, got {reason}"
    assert ("omniq_tasks_running", frozenset({("queue", "default")})) not in stopped, (
        "no live gauges once the worker stopped"
    )


@pytest.mark.anyio
async def test_lost_claims_hand_backs_and_stops_are_counted(tmp_path: Path) -> None:
    """Counted from the worker's ``omniq_task_interrupted`` calls: a running task
    cancelled (the heartbeat finds its claim lost), then a stop with one task running
    and one claimed but not started."""
    pm = _manager()
    metrics = WorkerMetrics()
    pm.register(metrics)

    def interrupted(reason: str) -> float:
        labels = {"queue": "default", "reason": reason}
        return metrics.registry.get_sample_value("omniq_task_runs_interrupted_total", labels) or 0

    async def until(check: Callable[[], bool], what: str) -> None:
        with anyio.move_on_after(60):
            while not check():
                await anyio.sleep(0.01)
            return
        raise AssertionError(f"timed out waiting until {what}")

    oq = AsyncOmniQ(task_queue=f"sqlite:///{tmp_path / 'i.db'}", plugins=pm, worker="async")
    async with oq:

        @oq.task(name="sleepy")
        async def sleepy() -> None:
            await anyio.sleep(3600)

        handles = await sleepy.map([()] * 3)
        worker = await oq.start_worker(
            ["default"], concurrency=1, prefetch=2, lease=5, heartbeat_interval=0.05,
            shutdown_grace=0,
        )  # fmt: skip

        def running() -> list[str]:
            return [t.id for t in worker.worker.running_tasks]

        try:
            await until(lambda: len(running()) == 1, "one task runs")
            [first] = running()
            assert await oq.cancel(first), "the running task is cancelled"
            await until(lambda: interrupted("claim_lost") == 1, "the lost claim is counted")
            # the next one runs; the third stays claimed, not started
            await until(lambda: running() not in ([], [first]), "the next task runs")
            assert await oq.task_queue.count("default", TaskStatus.RUNNING) == 2
        finally:
            with anyio.fail_after(60):
                await worker.stop()
    counts = {r: interrupted(r) for r in ("claim_lost", "stopped", "handed_back", "abandoned")}
    assert counts == {"claim_lost": 1, "stopped": 1, "handed_back": 1, "abandoned": 0}, (
        f"one claim lost, one run stopped, one claimed task handed back: {counts}"
    )
    assert len(handles) == 3 and not metrics._runs, "no run left being timed"


def test_several_metrics_plugins_have_their_own_registries() -> None:
    one, two = WorkerMetrics(), WorkerMetrics()  # the global registry would refuse the second
    one.retries.labels("q").inc()
    assert two.registry.get_sample_value("omniq_task_retries_total", {"queue": "q"}) is None
    assert one.registry.get_sample_value("omniq_task_retries_total", {"queue": "q"}) == 1


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'omniq-core\[prometheus\]'"):
        WorkerMetrics()


def test_busy_port_is_a_configuration_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            serve_metrics(_manager(), port)


APP = textwrap.dedent(
    """
    from omniq import OmniQ

    oq = OmniQ()

    @oq.task(name="ok")
    def ok(i: int) -> int:
        return i

    @oq.task(name="bad")
    def bad() -> None:
        raise ValueError("bad")
    """
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env.update(OMNIQ_TASK_QUEUE_TYPE="sqlite", OMNIQ_BASE_DIR=str(tmp_path / ".omniq"), **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_command_serves_metrics(tmp_path: Path) -> None:
    (tmp_path / "metricsapp.py").write_text(APP)
    env = _env(tmp_path)
    port = _free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "omniq", "worker", "-A", "metricsapp:oq", "--metrics-port",
         str(port), "-Q", "default"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:  # wait for the server
            try:
                scrape(url)
                break
            except (urllib.error.URLError, ConnectionError):
                assert worker.poll() is None, f"the worker exited: {worker.communicate()}"
                assert time.monotonic() < deadline, "the metrics server did not come up"
                time.sleep(0.05)
        for argv in (["ok", "1"], ["ok", "2"], ["bad"]):
            done = subprocess.run(
                [sys.executable, "-m", "omniq", "enqueue", "-A", "metricsapp:oq", *argv],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        samples = scrape_until(
            url,
            lambda s: (
                value(s, "omniq_tasks_finished_total", queue="default", state="success") >= 2
                and value(s, "omniq_tasks_finished_total", queue="default", state="failed") >= 1
            ),
        )
        counts = {
            state: value(samples, "omniq_tasks_finished_total", queue="default", state=state)
            for state in ("success", "failed")
        }
        assert counts == {"success": 2, "failed": 1}, f"two tasks succeeded, one failed: {counts}"
        assert value(samples, "omniq_queue_depth", queue="default", status="pending") == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert f"metrics at http://127.0.0.1:{port}/metrics" in out


NO_IMPORTS = textwrap.dedent(
    """
    import sys
    from omniq import OmniQ

    oq = OmniQ(task_queue="sqlite:///" + sys.argv[1], worker="async")

    @oq.task(name="ok")
    async def ok(i: int) -> int:
        return i

    with oq:
        handles = [ok.enqueue_sync(i) for i in range(3)]
        oq.run_worker_sync(burst=True)
        assert [h.result_sync(timeout=30) for h in handles] == [0, 1, 2]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                    ("prometheus_client", "opentelemetry") or m.startswith("omniq.observability"))
    print("loaded:", loaded)
    """
)


def test_a_worker_without_the_plugins_imports_neither_library(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    done = subprocess.run(
        [sys.executable, "-c", NO_IMPORTS, str(tmp_path / "n.db")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout, f"nothing of the observability extras: {done.stdout}"
