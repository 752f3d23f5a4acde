"""``omniq worker --worker gevent`` as a program: the documented way to monkey-patch it
(``python -m gevent.monkey --module omniq worker ...``) lets sync tasks that call
``time.sleep`` run ``concurrency`` at once, and patching too late is refused, not hung."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("gevent", reason="gevent is an optional extra: omniq-core[gevent]")

APP = textwrap.dedent(
    """
    {patch}import os, threading, time
    from pathlib import Path
    from omniq import OmniQ

    HERE = Path(__file__).parent
    oq = OmniQ(task_queue="sqlite:///" + str(HERE / "queue.db"))
    _lock = threading.Lock()
    _flight = {{"now": 0, "most": 0}}

    @oq.task
    def nap(i: int) -> None:
        with _lock:
            _flight["now"] += 1
            _flight["most"] = max(_flight["most"], _flight["now"])
        time.sleep(0.5)  # yields to the other greenlets only in a patched process
        with _lock:
            _flight["now"] -= 1
            most = _flight["most"]
        (HERE / f"done-{{i}}.txt").write_text(str(most))
    """
)

DEADLINE = 120  # seconds for any one program; the runs take a few


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path / ".omniq")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return env


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def _app(tmp_path: Path, name: str, patch: str = "") -> None:
    (tmp_path / f"{name}.py").write_text(APP.format(patch=patch))


def test_patched_gevent_worker_runs_blocking_sync_tasks_concurrently(tmp_path: Path) -> None:
    _app(tmp_path, "gapp")
    enqueue = _run(tmp_path, "-c", "import gapp; gapp.nap.map_sync([(i,) for i in range(8)])")
    assert enqueue.returncode == 0, enqueue.stderr
    worker = _run(
        tmp_path,
        *("-m", "gevent.monkey", "--module", "omniq", "worker", "--app", "gapp:oq"),
        *("--worker", "gevent", "--concurrency", "4", "--burst"),
    )
    assert worker.returncode == 0, f"worker failed:\n{worker.stdout}\n{worker.stderr}"
    assert "8 tasks processed, 0 failed" in worker.stdout, worker.stdout
    assert "not monkey-patched" not in worker.stderr
    seen = sorted(int(p.read_text()) for p in tmp_path.glob("done-*.txt"))
    assert len(seen) == 8, f"{len(seen)} of 8 tasks finished"
    assert max(seen) == 4, f"at most {max(seen)} tasks ran at once; expected 4"


def test_patching_in_the_app_module_is_refused_not_hung(tmp_path: Path) -> None:
    _app(tmp_path, "lateapp", patch="from gevent import monkey; monkey.patch_all()\n")
    worker = _run(
        tmp_path, "-m", "omniq", "worker", "--app", "lateapp:oq", "--worker", "gevent", "--burst"
    )
    assert worker.returncode != 0
    message = worker.stdout + worker.stderr
    assert "monkey-patched by gevent after its event loop started" in message, message
    assert "python -m gevent.monkey --module omniq worker" in message
