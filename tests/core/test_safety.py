"""Safety regressions of the engine, in process, on the memory and SQLite backends.

* Trust boundary: a worker runs only the functions registered on its app (plus modules a
  ``task_import_allowlist`` admits); unregistered names, raw Task records and callbacks
  end FAILED without importing or running anything.
* Values nested too deep to encode fail their task (or the enqueue), not the worker.
* Past the shutdown grace period running tasks are stopped: a process child is killed, a
  coroutine cancelled; a sync function in a thread, which cannot be stopped, is said so.
* An exception whose ``str()`` raises still fails its task cleanly.
* A task whose stored payload is corrupt gets a FAILED result at claim time (SQLite).

The scenarios live in :mod:`tests.core.safety_app`, shared with the NATS tests
(``tests/backends/test_nats_safety.py``).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ
from tests.core import safety_app as s


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_app(backend: str, tmp_path: Path) -> Iterator[s.MakeApp]:
    """Builds connected apps on ``backend`` (a fresh store each), closed at teardown."""
    apps: list[OmniQ] = []

    def make(**settings: Any) -> OmniQ:
        if backend == "memory":
            url = f"memory://safety-{uuid.uuid4().hex[:12]}"
        else:
            url = f"sqlite:///{tmp_path / f'safety-{len(apps)}.db'}"
        oq = OmniQ(task_queue=url, worker="thread", max_workers=4, **settings)
        oq.connect_sync()
        apps.append(oq)
        return oq

    yield make
    for oq in reversed(apps):
        oq.close_sync()


@pytest.fixture
def oq(make_app: s.MakeApp) -> OmniQ:
    return make_app()


# --- 1. trust boundary ---------------------------------------------------------------------


def test_unregistered_names_and_records_are_refused_not_imported(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_unregistered_names_are_refused(oq, tmp_path, monkeypatch)


@pytest.mark.parametrize("worker", ["async", "process"])
def test_unregistered_names_are_refused_by_every_executor(
    worker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OmniQ(task_queue=f"memory://safety-{uuid.uuid4().hex[:12]}", max_workers=2) as oq:
        s.check_unregistered_names_are_refused(oq, tmp_path, monkeypatch, worker=worker)


def test_unregistered_callbacks_are_refused_not_imported(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_unregistered_callbacks_are_refused(oq, tmp_path, monkeypatch)


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_import_allowlist_admits_listed_modules_only(
    via: str, make_app: s.MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_allowlist_admits_listed_modules_only(make_app, tmp_path, monkeypatch, via=via)


def test_plain_callable_enqueued_in_process_is_registered_and_runs(oq: OmniQ) -> None:
    s.check_plain_callable_enqueued_here_runs(oq)


# --- 2. values nested too deep -------------------------------------------------------------


def test_too_deep_argument_is_refused_at_enqueue(oq: OmniQ) -> None:
    # memory too: it makes the same serializer round trip as every other backend
    s.check_too_deep_argument_is_refused_at_enqueue(oq)


def test_too_deep_result_fails_its_task_not_the_worker(oq: OmniQ) -> None:
    s.check_too_deep_result_fails_its_task_only(oq)


# --- 5. stopping running tasks after the grace period --------------------------------------


def test_process_child_is_killed_after_the_grace_period(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_process_task_killed_after_grace(oq, tmp_path, monkeypatch)


def test_coroutine_is_cancelled_after_the_grace_period(oq: OmniQ) -> None:
    s.check_async_task_cancelled_after_grace(oq)


def test_thread_task_is_reported_unstoppable_not_handed_back(
    oq: OmniQ, caplog: pytest.LogCaptureFixture
) -> None:
    s.check_thread_task_reported_unstoppable(oq, caplog)


# --- 6. exceptions that cannot be printed --------------------------------------------------


@pytest.mark.parametrize("worker", ["thread", "async"])
def test_exception_whose_str_raises_fails_the_task(worker: str, oq: OmniQ) -> None:
    s.check_unprintable_exception_fails_the_task(oq, worker=worker)


# --- 7. tasks failed at claim time ---------------------------------------------------------


def test_sqlite_task_with_corrupt_payload_gets_a_failed_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "corrupt.db"
    with OmniQ(task_queue=f"sqlite:///{db}", worker="thread", max_workers=2) as oq:
        add = oq.task(s.add_one)
        damaged = add.enqueue_sync(0)
        good = add.enqueue_sync(1)
        # a separate, plain connection: what a damaged disk or a foreign writer does
        with sqlite3.connect(db, timeout=10) as conn:
            garbage = b"\x01\xc1 garbage, not msgpack"
            changed = conn.execute(
                "UPDATE tasks SET data = ? WHERE id = ?", (garbage, damaged.id)
            ).rowcount
        conn.close()
        assert changed == 1, "the task should have its own row (not a staged batch)"
        s.check_claim_time_failure_is_reported(oq, damaged, good, caplog)
