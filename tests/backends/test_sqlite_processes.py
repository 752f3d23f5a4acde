"""Several real processes on one SQLite file: exclusive claims, crash recovery, schedules.

Children are started with ``subprocess`` (a fresh interpreter, like separate workers) and
report what they did on stdout; a crash is a real SIGKILL. No timing assertions: leases
are short so recovery is quick, and every wait has a generous deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from omniq.models import Schedule, Task, TaskStatus
from omniq_sqlite import AsyncSQLiteQueue, AsyncSQLiteScheduleStorage

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _kill(p: subprocess.Popen[str]) -> None:
    """SIGKILL a child (a crash), reap it and close its pipes."""
    p.send_signal(signal.SIGKILL)
    await anyio.to_thread.run_sync(p.communicate)


_PRODUCER = """
import asyncio, sys
from omniq.models import Task
from omniq_sqlite import AsyncSQLiteQueue

async def main(url, name, n):
    async with AsyncSQLiteQueue(url) as q:
        tasks = [Task(func="tests:noop", args=(f"{name}-{i}",)) for i in range(n)]
        half = n // 2
        for t in tasks[:half]:                       # one by one (group commit)
            await q.enqueue(t)
        for i in range(half, n, 100):                # and in batches
            await q.enqueue_many(tasks[i:i + 100])

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

_CONSUMER = """
import asyncio, sys
from omniq.models import TaskStatus
from omniq_sqlite import AsyncSQLiteQueue

async def main(url, name, total):
    claimed = []
    async with AsyncSQLiteQueue(url) as q:
        while True:
            got = await q.dequeue_many(["default"], 5, worker_id=name, lease=60, wait=0.2)
            for t in got:
                claimed.append(t.id)
                assert await q.complete(t), "complete of a fresh claim was rejected"
            if not got and await q.count(status=TaskStatus.SUCCESS) >= total:
                break
    print("\\n".join(claimed))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_processes_share_one_file_without_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with AsyncSQLiteQueue(url):  # create the schema once, up front
        pass
    n_producers, per_producer, n_consumers = 3, 600, 5
    total = n_producers * per_producer
    procs = [_spawn(_CONSUMER, url, f"c{i}", str(total)) for i in range(n_consumers)]
    procs += [_spawn(_PRODUCER, url, f"p{i}", str(per_producer)) for i in range(n_producers)]
    claims: list[str] = []
    for p in procs:
        out, err = await anyio.to_thread.run_sync(p.communicate, None, 300)
        assert p.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err, err
        claims.extend(out.split())
    dupes = [tid for tid, c in Counter(claims).items() if c > 1]
    assert not dupes, f"{len(dupes)} tasks were claimed twice"
    assert len(claims) == total
    async with AsyncSQLiteQueue(url) as q:
        assert await q.count(status=TaskStatus.SUCCESS) == total
        assert await q.count() == total


_CRASHER = """
import asyncio, json, sys, time
from omniq_sqlite import AsyncSQLiteQueue

async def main(url):
    q = AsyncSQLiteQueue(url)
    await q.connect()
    claimed = await q.dequeue_many(["default"], 20, worker_id="doomed", lease=1.0)
    done = claimed[:5]
    for t in done:
        assert await q.complete(t)
    print(json.dumps({"claimed": [t.id for t in claimed], "done": [t.id for t in done]}),
          flush=True)
    sys.stdin.readline()  # wait here, holding 15 claims, until killed

asyncio.run(main(sys.argv[1]))
"""


async def test_sigkill_with_claimed_tasks_recovers_every_task(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    tasks = [Task(func="tests:noop", args=(i,)) for i in range(50)]
    async with AsyncSQLiteQueue(url) as q:
        await q.enqueue_many(tasks)
        child = _spawn(_CRASHER, url)
        assert child.stdout is not None
        line = await anyio.to_thread.run_sync(child.stdout.readline)
        assert line, child.stderr.read() if child.stderr else ""
        report = json.loads(line)
        await _kill(child)
        in_flight = set(report["claimed"]) - set(report["done"])
        assert len(in_flight) == 15

        runs: Counter[str] = Counter()
        deadline = time.monotonic() + 60
        while await q.count(status=TaskStatus.SUCCESS) < len(tasks):
            assert time.monotonic() < deadline, "tasks were not recovered"
            for t in await q.dequeue_many(["default"], 10, worker_id="second", wait=0.5):
                runs[t.id] += 1
                assert await q.complete(t)
        # every task ran to completion; only the in-flight ones ran a second time
        assert set(runs) | set(report["done"]) == {t.id for t in tasks}
        assert not set(runs) & set(report["done"]), "a completed task was run again"
        assert all(n == 1 for n in runs.values())
        for t in tasks:
            stored = await q.get(t.id)
            assert stored is not None and stored.status is TaskStatus.SUCCESS
            assert stored.attempt == (2 if t.id in in_flight else 1), t.id


_LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("DELETE FROM tasks")
print("locked", flush=True)
sys.stdin.readline()
"""


async def test_sigkill_inside_a_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "txn.db"
    url = f"sqlite:///{path}"
    async with AsyncSQLiteQueue(url, busy_timeout=0.1) as q:
        await q.enqueue_many([Task(func="tests:noop", args=(i,)) for i in range(10)])
        child = _spawn(_LOCK_HOLDER, str(path))
        assert child.stdout is not None
        assert (await anyio.to_thread.run_sync(child.stdout.readline)).strip() == "locked"
        await _kill(child)
        # the dead process's uncommitted delete is gone and its lock with it
        assert await q.count() == 10
        assert await q.enqueue(Task(func="tests:noop")) is TaskStatus.PENDING
        assert len(await q.dequeue_many(["default"], 20, worker_id="w")) == 11


_SCHEDULER = """
import asyncio, json, os, sys, time
from omniq_sqlite import AsyncSQLiteScheduleStorage

async def main(url, stop_file):
    fired = []
    async with AsyncSQLiteScheduleStorage(url) as s:
        print("ready", flush=True)
        while not os.path.exists(stop_file):
            now = time.time()
            for sch in await s.claim_due(now):
                fired.extend([sch.id, f] for f in sch.fires(now))
            await asyncio.sleep(0.005)
    print(json.dumps(fired))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_schedulers_in_three_processes_fire_each_due_time_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sched.db'}"
    stop = tmp_path / "stop"
    async with AsyncSQLiteScheduleStorage(url):
        pass  # the schema exists before three processes open the file
    procs = [_spawn(_SCHEDULER, url, str(stop)) for _ in range(3)]
    for p in procs:
        line = await anyio.to_thread.run_sync(p.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "ready", f"a scheduler process did not start: {p.stderr}"
    start = time.time()
    schedules = [Schedule(func="m:f", interval=0.1, start_at=start) for _ in range(5)]
    async with AsyncSQLiteScheduleStorage(url) as s:
        for sch in schedules:
            await s.save(sch)
        # the three schedulers compete until each schedule has fired 5 times (however
        # slow the machine), then stop
        with anyio.fail_after(120):
            while True:
                stored = [await s.get(sch.id) for sch in schedules]
                if all(x is not None and x.run_count >= 5 for x in stored):
                    break
                await anyio.sleep(0.02)
    stop.touch()
    fired: list[tuple[str, float]] = []
    for p in procs:
        out, err = await anyio.to_thread.run_sync(p.communicate, None, 120)
        assert p.returncode == 0, err
        fired.extend((sid, f) for sid, f in json.loads(out))
    dupes = [k for k, n in Counter(fired).items() if n > 1]
    assert not dupes, f"{len(dupes)} due times fired more than once"
    per_schedule = Counter(sid for sid, _ in fired)
    assert set(per_schedule) == {s.id for s in schedules}
    assert all(n >= 5 for n in per_schedule.values()), per_schedule
