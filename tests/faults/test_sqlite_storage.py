"""SQLite on a hostile file system: a read-only directory, a read-only database file and
a full disk. Each gives a clear error naming the file; the database is not damaged; once
the cause is gone a restart goes on with every task stored before.

As root (CI containers), permissions do not stop writes, so read-only comes from a
tmpfs remounted read-only or a read-only bind mount, and the full disk from a small
tmpfs; where ``mount`` is not allowed those tests are skipped with the reason. As
another user, read-only comes from file modes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from omniq import TaskStatus
from omniq.errors import OmniQError
from tests.faults import fault_app
from tests.faults.harness import RUN_TIMEOUT, SQLiteHarness, all_final, describe, wait_until

pytestmark = pytest.mark.slow

T = TypeVar("T")
IS_ROOT = os.geteuid() == 0


def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


def _umount(path: Path) -> None:
    if _sh("umount", str(path)).returncode != 0:
        _sh("umount", "-l", str(path))


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block (root only)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = _sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield path
    finally:
        _umount(path)


def _within(seconds: float, what: str, fn: Callable[[], T]) -> T:
    """``fn()``, failing (not hanging) if it takes longer than ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise AssertionError(f"{what} hung for {seconds:.0f} s instead of failing") from None
    finally:
        pool.shutdown(wait=False)


def _seed(h: SQLiteHarness, n: int) -> list[str]:
    """``n`` tasks stored through a client that is closed again (no open connection)."""
    oq = fault_app.build(h.url())
    try:
        return [oq.registry["faults.mark"].enqueue_sync(f"seed{i}").id for i in range(n)]
    finally:
        oq.close_sync()


def _refused_write(h: SQLiteHarness) -> OmniQError:
    """Try to enqueue; return the clear error the backend must raise."""
    oq = fault_app.build(h.url())

    def attempt() -> BaseException | None:
        try:
            oq.registry["faults.mark"].enqueue_sync("refused")
        except BaseException as e:
            return e
        return None

    try:
        err = _within(60, "enqueue on a read-only database", attempt)
    finally:
        with contextlib.suppress(Exception):
            oq.close_sync()
    assert err is not None, "enqueue on a read-only database succeeded"
    assert isinstance(err, OmniQError), (
        f"expected an OmniQ error naming the problem, got {type(err).__name__}: {err}"
    )
    message = str(err)
    assert str(h.path) in message, f"the error should name the file {h.path}: {message!r}"
    words = message.replace(str(h.path), "").lower()  # the path may hold the words
    assert any(w in words for w in ("writ", "read-only", "readonly")), (
        f"the error should say the database cannot be written: {message!r}"
    )
    return err


def _restart_continues(h: SQLiteHarness, seeded: list[str]) -> None:
    """A new client and a worker: everything stored before, and new tasks, succeed."""
    h.check_integrity()
    oq = h.client()
    missing = [t for t in seeded if oq.get_task_sync(t) is None]
    assert not missing, f"{len(missing)} tasks stored before the fault are gone"
    new = [oq.registry["faults.mark"].enqueue_sync(f"new{i}").id for i in range(3)]
    ids = [*seeded, *new]
    w = h.worker(concurrency=4)
    wait_until(
        lambda: all_final(oq, ids),
        what=lambda: f"the restarted worker to finish ({describe(oq, ids)})",
        timeout=RUN_TIMEOUT,
        alive=[w],
    )
    bad = [t for t in ids if oq.status_sync(t) is not TaskStatus.SUCCESS]
    assert not bad, f"expected every task SUCCESS after the restart: {describe(oq, ids)}"
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0, w.output()
    h.check_integrity()


def test_readonly_directory_clear_error_then_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with contextlib.ExitStack() as stack:
        if IS_ROOT:
            stack.enter_context(_tmpfs(data_dir, "64m"))
        else:
            data_dir.mkdir()
        h = SQLiteHarness(tmp_path / "work", path=data_dir / "faults.db")
        stack.callback(h.close)  # runs before the umount
        seeded = _seed(h, 10)
        if IS_ROOT:
            r = _sh("mount", "-o", "remount,ro", str(data_dir))
            if r.returncode != 0:
                pytest.skip(f"cannot remount read-only here: {r.stderr.strip()}")
        else:
            data_dir.chmod(0o555)
        try:
            _refused_write(h)
        finally:
            if IS_ROOT:
                assert _sh("mount", "-o", "remount,rw", str(data_dir)).returncode == 0
            else:
                data_dir.chmod(0o755)
        _restart_continues(h, seeded)


def test_readonly_database_file_clear_error_then_restart(tmp_path: Path) -> None:
    h = SQLiteHarness(tmp_path / "work", path=tmp_path / "faults.db")
    try:
        seeded = _seed(h, 10)
        if IS_ROOT:
            r = _sh("mount", "--bind", str(h.path), str(h.path))
            if r.returncode != 0:
                pytest.skip(f"cannot bind-mount here: {r.stderr.strip()}")
            r = _sh("mount", "-o", "remount,ro,bind", str(h.path))
            if r.returncode != 0:
                _umount(h.path)
                pytest.skip(f"cannot remount a bind mount read-only here: {r.stderr.strip()}")
        else:
            h.path.chmod(0o444)
        try:
            _refused_write(h)
        finally:
            if IS_ROOT:
                _umount(h.path)
            else:
                h.path.chmod(0o644)
        _restart_continues(h, seeded)
    finally:
        h.close()


def _says_disk_full(text: str, db: Path) -> bool:
    """True when ``text`` (the path aside: it may contain the word) says the disk is full."""
    return bool(re.search(r"disk is full|free space|no space", text.replace(str(db), ""), re.I))


def _fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        for _ in range(1_000_000):
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                return
    raise AssertionError("the file system never filled up")


def test_disk_full_clear_error_no_damage_then_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "small"
    with _tmpfs(data_dir, "8m"):
        h = SQLiteHarness(tmp_path / "work", path=data_dir / "faults.db")
        try:
            seeded = _seed(h, 20)
            filler = data_dir / "filler"
            _fill(filler)
            oq = fault_app.build(h.url())
            mark = oq.registry["faults.mark"]
            error: BaseException | None = None

            def fill_queue() -> None:
                nonlocal error
                for i in range(2000):
                    try:
                        seeded.append(mark.enqueue_sync(f"fill{i}-" + "p" * 8000).id)
                    except BaseException as e:
                        error = e
                        return

            try:
                _within(120, "enqueue on a full disk", fill_queue)
            finally:
                with contextlib.suppress(Exception):
                    oq.close_sync()
            assert error is not None, "2000 enqueues of 8 KB fit on an 8 MB disk already full"
            assert isinstance(error, OmniQError), (
                f"expected an OmniQ error naming the problem, got {type(error).__name__}: {error}"
            )
            message = str(error)
            assert str(h.path) in message and _says_disk_full(message, h.path), (
                f"the error should name the file and say the disk is full: {message!r}"
            )
            filler.unlink()  # space again: the file must be sound and everything stored there
            _restart_continues(h, seeded)
        finally:
            h.close()


def test_disk_full_under_a_running_worker_then_space_returns(tmp_path: Path) -> None:
    """The disk fills while a worker runs tasks with 8 KB results. The worker either
    goes on (retrying, and logging why) or stops with a clear error; either way nothing
    is damaged, and with space back everything completes with its result."""
    data_dir = tmp_path / "small"
    with _tmpfs(data_dir, "8m"):
        h = SQLiteHarness(tmp_path / "work", path=data_dir / "faults.db")
        try:
            oq = fault_app.build(h.url())
            try:
                sizes = oq.registry["faults.big_result"].map_sync([(8192,)] * 300)
            finally:
                oq.close_sync()
            ids = [s.id for s in sizes]
            filler = data_dir / "filler"
            _fill(filler)
            w = h.worker(concurrency=4, name="worker-full")
            wait_until(
                lambda: not w.running or _says_disk_full(w.output(), h.path),
                what="the worker to meet the full disk (log it, or stop with the error)",
            )
            filler.unlink()
            client = h.client()
            wait_until(
                lambda: not w.running or all_final(client, ids),
                what=lambda: f"every task to finish once space is back ({describe(client, ids)})",
                timeout=RUN_TIMEOUT,
            )
            workers = [w]
            if not all_final(client, ids):  # the worker stopped on the full disk: restart
                assert w.returncode != 0 and _says_disk_full(w.output(), h.path), (
                    f"a worker stopped by a full disk must say so:\n{w.output()}"
                )
                h.check_integrity()
                workers = [h.worker(concurrency=4, name="worker-restart")]
                wait_until(
                    lambda: all_final(client, ids),
                    what=lambda: f"the restarted worker to finish ({describe(client, ids)})",
                    timeout=RUN_TIMEOUT,
                    alive=workers,
                )
            bad = [t for t in ids if client.status_sync(t) is not TaskStatus.SUCCESS]
            assert not bad, f"expected every task SUCCESS: {describe(client, ids)}"
            no_result = [t for t in ids if client.get_result_sync(t) is None]
            assert not no_result, f"{len(no_result)} SUCCESS tasks have no result"
            for p in workers:
                assert p.running, f"{p.name} died:\n{p.output()}"
                p.signal(signal.SIGTERM)
                assert p.wait(60) == 0, p.output()
            h.check_integrity()
        finally:
            h.close()
