"""The conformance suite on the file backend over S3: a moto server (``moto[server]``)
started by this module on 127.0.0.1, a fresh key prefix per test.

Claims use S3 conditional writes (``If-None-Match: *`` creates, ``If-Match`` deletes),
which moto's server enforces (checked by ``test_moto_enforces_conditional_writes``).
Without moto installed the tests skip, and fail under OMNIQ_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from omniq_file import (
    AsyncFileEventStorage,
    AsyncFileQueue,
    AsyncFileResultStorage,
    AsyncFileScheduleStorage,
)

from omniq import TaskStatus
from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
    component_factory,
    make_task,
)
from tests.backends.test_file import _CLASSES, _corrupt

BUCKET = "omniq-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (OMNIQ_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server of this module's own on a free 127.0.0.1 port, one bucket."""
    try:
        import moto.server  # noqa: F401
        import s3fs
    except ImportError as e:
        _unavailable(f"moto[server] and s3fs are needed for the S3 tests: {e}")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "the moto server exited at start"
                assert time.monotonic() < deadline, "the moto server did not listen in 60 s"
                time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{port}"
        import s3fs

        fs = s3fs.S3FileSystem(key="test", secret="test", endpoint_url=endpoint)
        fs.call_s3("create_bucket", Bucket=BUCKET)
        yield endpoint
    finally:
        proc.kill()
        proc.wait(30)


def s3_url(endpoint: str, prefix: str) -> str:
    """A base URL on the moto server (credentials in the query: never shown)."""
    return f"s3://{BUCKET}/{prefix}?endpoint_url={endpoint}&key=test&secret=test"


class S3Fixtures:
    """Fixture contract of omniq.testing: one fresh key prefix per test."""

    @pytest.fixture
    def backend_url(self, moto_endpoint: str) -> Iterator[str]:
        yield s3_url(moto_endpoint, f"t-{uuid.uuid4().hex}")

    make_task_queue = component_factory(AsyncFileQueue)
    make_result_storage = component_factory(AsyncFileResultStorage)
    make_event_storage = component_factory(AsyncFileEventStorage)
    make_schedule_storage = component_factory(AsyncFileScheduleStorage)

    @pytest.fixture
    def process_spec(self, backend_url: str) -> dict[str, Any]:
        return {
            kind: {"class": f"omniq_file:{cls}", "url": backend_url, "options": {}}
            for kind, cls in _CLASSES
        }

    @pytest.fixture
    def corrupt_task(self) -> Any:
        return _corrupt


_LATENCY = (
    "timing-bound (0.3-0.6 s TTL and delay windows, 0.1 s schedules over 1.5 s): moto "
    "answers in "
    "~50 ms a request on a loaded 2-core machine, too slow to fit; passes when it is not"
)

_SLOW = (
    "2,000 tasks through moto (one Python process, ~50 ms a request here, 4 requests a "
    "move) take tens of minutes; exclusive claims on S3 are checked on fewer tasks by "
    "test_s3_consumers_racing_claim_each_task_once"
)


class TestS3FileQueue(S3Fixtures, TaskQueueConformance):
    @pytest.mark.skip(reason=_SLOW)
    async def test_exclusive_claim_concurrent_consumers(self) -> None: ...

    @pytest.mark.skip(reason=_SLOW)
    async def test_exclusive_claim_across_processes(self) -> None: ...

    @pytest.mark.xfail(reason=_LATENCY, strict=False)
    async def test_fail_with_retry_at_requeues(self, task_queue: Any) -> None:
        await super().test_fail_with_retry_at_requeues(task_queue)

    @pytest.mark.xfail(reason=_LATENCY, strict=False)
    async def test_delayed_task_not_claimable_early(self, task_queue: Any) -> None:
        await super().test_delayed_task_not_claimable_early(task_queue)


class TestS3FileResultStorage(S3Fixtures, ResultStorageConformance):
    @pytest.mark.xfail(reason=_LATENCY, strict=False)
    async def test_ttl_hides_and_cleanup_deletes(self, result_storage: Any) -> None:
        await super().test_ttl_hides_and_cleanup_deletes(result_storage)


class TestS3FileEventStorage(S3Fixtures, EventStorageConformance):
    pass


class TestS3FileScheduleStorage(S3Fixtures, ScheduleStorageConformance):
    @pytest.mark.xfail(reason=_LATENCY, strict=False)
    async def test_three_schedulers_fire_each_due_time_once(
        self, make_schedule_storage: Any
    ) -> None:
        await super().test_three_schedulers_fire_each_due_time_once(make_schedule_storage)

    @pytest.mark.xfail(reason=_LATENCY, strict=False)
    async def test_three_scheduler_processes_fire_each_due_time_once(
        self, make_schedule_storage: Any, request: pytest.FixtureRequest
    ) -> None:
        await super().test_three_scheduler_processes_fire_each_due_time_once(
            make_schedule_storage, request
        )


@pytest.mark.anyio
async def test_s3_consumers_racing_claim_each_task_once(moto_endpoint: str) -> None:
    url = s3_url(moto_endpoint, f"race-{uuid.uuid4().hex}")
    producer = AsyncFileQueue(url)
    await producer.connect()
    tasks = [make_task(i) for i in range(120)]
    await producer.enqueue_many(tasks)
    consumers = [AsyncFileQueue(url) for _ in range(4)]
    claims: list[str] = []

    async def consume(q: AsyncFileQueue, n: int) -> None:
        await q.connect()
        idle = 0
        while idle < 3:
            got = await q.dequeue_many(["default"], 3, worker_id=f"w{n}", lease=120)
            if not got:
                idle += 1
                continue
            idle = 0
            for t in got:
                claims.append(t.id)
                assert await q.complete(t), "the complete of a fresh claim was refused"

    async with anyio.create_task_group() as tg:
        for n, q in enumerate(consumers):
            tg.start_soon(consume, q, n)
    dupes = [t for t, c in Counter(claims).items() if c > 1]
    assert not dupes, f"{len(dupes)} tasks claimed twice"
    assert sorted(claims) == sorted(t.id for t in tasks), "every task claimed once"
    assert await producer.count(status=TaskStatus.SUCCESS) == len(tasks)


def test_moto_enforces_conditional_writes(moto_endpoint: str) -> None:
    """What the claims rest on: a second exclusive create and a delete with a stale
    ETag are refused by the server (not merely by s3fs)."""
    from omniq_file._store import S3Store

    store = S3Store(f"{BUCKET}/cond-{uuid.uuid4().hex}",
                    {"endpoint_url": moto_endpoint, "key": "test", "secret": "test"})  # fmt: skip
    assert store.create("a", b"one")
    assert not store.create("a", b"two"), "If-None-Match: * must refuse an existing key"
    etag = store._etag("a")
    assert etag is not None
    store.write("a", b"three")
    assert not store._delete_if("a", etag), "a delete with a stale If-Match must fail"
    assert store.read("a") == b"three"
    assert store.move("a", "b") and not store.move("a", "c"), "one move per version"
    assert store.read("b") is not None and store.read("a") is None
