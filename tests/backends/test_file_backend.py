"""The file backend beyond the conformance suite: plugin selection, reprs, claims racing
in two OS processes, a SIGKILLed claimer whose tasks come back after the lease, hostile
files written straight into the store, and OmniQ end to end on a local directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from omniq_file import (
    AsyncFileEventStorage,
    AsyncFileQueue,
    AsyncFileResultStorage,
    AsyncFileScheduleStorage,
    FileBackend,
)

from omniq import OmniQ, TaskStatus
from omniq.models import EventType, Schedule, TaskEvent, TaskResult
from omniq.plugins.resolution import create_component, find_backend
from omniq.testing import make_task
from tests.core.test_engine_correctness import (  # run here with the fixtures below
    test_arguments_and_results_arrive_as_annotated,
    test_big_ints_round_trip,
    test_cancelling_a_running_thread_task_keeps_status_and_result_agreeing,
    test_depending_on_an_unknown_task_is_refused,
)

__all__ = [
    "test_arguments_and_results_arrive_as_annotated",
    "test_big_ints_round_trip",
    "test_cancelling_a_running_thread_task_keeps_status_and_result_agreeing",
    "test_depending_on_an_unknown_task_is_refused",
]

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture
def app(url: str) -> Iterator[OmniQ]:
    with OmniQ(task_queue={"type": "file", "url": url}, worker="async", max_workers=4) as oq:
        yield oq


# --- selection and reprs ------------------------------------------------------------------


def test_selected_by_type_and_by_scheme(url: str) -> None:
    assert find_backend("file").name == "file"
    assert find_backend(None, url).name == "file"
    assert find_backend(None, "memory://x").name == "memory", "memory:// alone stays in-process"
    q = create_component("task_queue", "file", "memory://omniq-selected")
    assert isinstance(q, AsyncFileQueue)
    with OmniQ(task_queue={"type": "file", "url": url}) as oq:
        assert isinstance(oq.async_.task_queue, AsyncFileQueue)
        assert isinstance(oq.async_.result_storage, AsyncFileResultStorage)


def test_credentials_never_shown() -> None:
    secret = "s3cr3t-Value"
    url = f"s3://user:{secret}@bucket/prefix?secret={secret}"
    for cls in (AsyncFileQueue, AsyncFileResultStorage, AsyncFileEventStorage,
                AsyncFileScheduleStorage):  # fmt: skip
        c = cls(url, storage_options={"key": "k", "secret": secret})
        assert secret not in repr(c) and secret not in c.url, repr(c)
    assert secret not in repr(FileBackend("memory://omniq-repr", storage_options={"x": secret}))


def test_store_without_conditional_writes_is_refused_clearly() -> None:
    from omniq_file._store import open_store

    from omniq.errors import ConfigurationError

    # Azure Data Lake Gen1 (adl://) offers no conditional writes the claims could use
    with pytest.raises(ConfigurationError, match="must be file://"):
        open_store("adl://store/prefix")


# --- two OS processes racing ----------------------------------------------------------------

_CLAIMER = textwrap.dedent(
    """
    import asyncio, sys
    from omniq_file import AsyncFileQueue

    async def main():
        q = AsyncFileQueue(sys.argv[1])
        await q.connect()
        print("ready", flush=True)
        sys.stdin.readline()  # both start together
        got, idle = [], 0
        while idle < 20:
            t = await q.dequeue(["default"], worker_id=sys.argv[2], lease=60)
            if t is None:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            got.append(f"{t.id} {t.priority}")
            assert await q.complete(t)
        print("\\n".join(got), flush=True)

    asyncio.run(main())
    """
)


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


async def test_two_processes_racing_claim_each_task_once(url: str) -> None:
    q = AsyncFileQueue(url)
    tasks = [make_task(i, priority=i % 5) for i in range(600)]
    await q.enqueue_many(tasks)
    procs = [_spawn(_CLAIMER, url, f"p{n}") for n in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.stderr
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    claims: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"claimer failed:\n{err}"
        lines = [line.split() for line in out.splitlines() if line.strip()]
        prios = [int(pr) for _, pr in lines]
        assert prios == sorted(prios, reverse=True), "each process claims higher priority first"
        claims.extend(tid for tid, _ in lines)
    dupes = [t for t, n in Counter(claims).items() if n > 1]
    assert not dupes, f"{len(dupes)} tasks claimed by both processes"
    assert sorted(claims) == sorted(t.id for t in tasks), "every task claimed exactly once"
    assert await q.count(status=TaskStatus.SUCCESS) == 600


# --- SIGKILL with tasks in flight -------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import asyncio, json, sys
    from omniq_file import AsyncFileQueue

    async def main():
        q = AsyncFileQueue(sys.argv[1])
        got = await q.dequeue_many(["default"], 5, worker_id="doomed", lease=1.5)
        print(json.dumps([[t.id, t.attempt, t.lease_until] for t in got]), flush=True)
        await asyncio.sleep(3600)  # killed here, with its claims in flight

    asyncio.run(main())
    """
)


async def test_sigkilled_claimer_tasks_come_back_after_the_lease(url: str) -> None:
    q = AsyncFileQueue(url)
    tasks = [make_task(i) for i in range(8)]
    await q.enqueue_many(tasks)
    holder = _spawn(_HOLDER, url)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        held = json.loads(line) if line else []
        assert len(held) == 5, f"the holder should claim 5 tasks: {holder.stderr}"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    lease_until = max(lu for _, _, lu in held)
    rest = await q.dequeue_many(["default"], 10, worker_id="w", lease=30)
    assert len(rest) == 3, "the 3 tasks nobody held are claimable at once"
    back = []
    while len(back) < 5:
        got = await q.dequeue(["default"], worker_id="w", lease=30, wait=10)
        assert got is not None, f"only {len(back)} of the 5 held tasks came back"
        back.append(got)
    assert time.time() >= lease_until - 0.05, "a held task came back before its lease ended"
    assert sorted(t.id for t in back) == sorted(tid for tid, _, _ in held)
    assert all(t.attempt == 2 for t in back), "a re-claim carries a new fencing token"
    for t in back + rest:
        assert await q.complete(t)


# --- hostile files ----------------------------------------------------------------------------


async def test_hostile_files_do_not_stop_the_store(tmp_path: Path, url: str) -> None:
    q = AsyncFileQueue(url)
    good = [make_task(i) for i in range(3)]
    await q.enqueue_many(good)
    root = tmp_path / "store"
    ready = root / "q" / "default" / "ready"
    (ready / "garbage").write_bytes(b"x")
    (ready / "0-notanumber-x@y").write_bytes(b"")
    (ready / "0000000000000-00000000000000000-dir@0").mkdir()
    orphan = "0000000000000-00000000000000000-orphan@0"  # a token without a record
    (ready / orphan).write_bytes(b"")
    for state in ("running", "done"):
        (root / "q" / "default" / state).mkdir(parents=True, exist_ok=True)
    (root / "q" / "default" / "running" / "junk@@").write_bytes(b"")
    (root / "q" / "default" / "done" / "junk").write_bytes(b"")
    (root / "events").mkdir(exist_ok=True)
    (root / "events" / "1-2-x.jsonl").write_bytes(b"{not json\n\x00\xff\n")
    (root / "events" / "foreign.txt").write_bytes(b"hello")
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / "bad").write_bytes(b"\x00\xffnot a result")
    (root / "schedules").mkdir(exist_ok=True)
    (root / "schedules" / "bad").write_bytes(b"\x00\xffnot a schedule")

    claimed = []
    while (t := await q.dequeue(["default"], worker_id="w", lease=30)) is not None:
        claimed.append(t.id)
        assert await q.complete(t)
    assert sorted(claimed) == sorted(t.id for t in good), "the good tasks all run"
    stub = await q.get("orphan")
    assert stub is not None and stub.status is TaskStatus.FAILED, "a token without record fails"
    assert await q.count(status=TaskStatus.SUCCESS) == 3
    assert len(await q.list(limit=100)) == 5, "3 good tasks, 2 tokens without a record"

    events = AsyncFileEventStorage(url)
    await events.log(TaskEvent(task_id="t", event_type=EventType.ENQUEUED))
    assert [e.task_id for e in await events.query()] == ["t"]
    results = AsyncFileResultStorage(url)
    await results.set(TaskResult(task_id="ok", status=TaskStatus.SUCCESS, result=1))
    assert [r.task_id for r in await results.list()] == ["ok"]
    schedules = AsyncFileScheduleStorage(url)
    s = Schedule(func="tests:noop", interval=60, next_run_at=time.time() - 1)
    await schedules.save(s)
    assert [x.id for x in await schedules.list()] == [s.id]
    assert [x.id for x in await schedules.claim_due(time.time())] == [s.id]


# --- end to end -------------------------------------------------------------------------------


def test_public_api_end_to_end_on_a_directory(url: str) -> None:
    cfg: dict[str, Any] = {"type": "file", "url": url}
    with OmniQ(task_queue=cfg, event_storage=cfg, worker="thread", max_workers=4) as oq:
        order: list[str] = []

        @oq.task
        def record(tag: str) -> str:
            order.append(tag)
            return tag

        @oq.task
        def boom() -> None:
            raise RuntimeError("boom")

        high = [record.options(queue="high", priority=p).enqueue_sync(f"p{p}") for p in (1, 9)]
        late = record.options(queue="high", delay=0.3).enqueue_sync("late")
        first = record.enqueue_sync("first")
        then = record.options(depends_on=[first.id]).enqueue_sync("then")
        bad = boom.enqueue_sync()
        skipped = record.options(depends_on=[bad.id]).enqueue_sync("skipped")
        with oq.start_worker_sync(queues=["high", "default"], concurrency=1):
            assert [h.result_sync(timeout=30) for h in high] == ["p1", "p9"]
            assert late.result_sync(timeout=30) == "late"
            assert then.result_sync(timeout=30) == "then"
            for _ in range(200):
                if skipped.status_sync() is TaskStatus.CANCELLED:
                    break
                time.sleep(0.05)
        assert order.index("p9") < order.index("p1")
        assert bad.status_sync() is TaskStatus.FAILED
        assert skipped.status_sync() is TaskStatus.CANCELLED and "skipped" not in order
        events = oq.get_events_sync(task_id=first.id)
        assert {EventType.ENQUEUED, EventType.COMPLETE} <= {e.event_type for e in events}
