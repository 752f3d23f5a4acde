"""The conformance suite on the file backend over S3: a moto server (``moto[server]``)
started by this module on 127.0.0.1, a fresh key prefix per test.

Claims use S3 conditional writes (``If-None-Match: *`` creates, ``If-Match`` deletes),
which moto's server enforces (checked by ``test_moto_enforces_conditional_writes``).
Without moto installed the tests skip, and fail under OMNIQ_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from omniq_file._objects import S3Store

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
)
from tests.backends.cloud_servers import (
    CloudFixtures,
    check_conditional_writes,
    claim_race,
    free_port,
    server_process,
    unavailable,
)

BUCKET = "omniq-test"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server of this module's own on a free 127.0.0.1 port, one bucket."""
    try:
        import moto.server  # noqa: F401
        import s3fs
    except ImportError as e:
        unavailable(f"moto[server] and s3fs are needed for the S3 tests: {e}")
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with server_process("the moto server", argv, port):
        endpoint = f"http://127.0.0.1:{port}"
        fs = s3fs.S3FileSystem(key="test", secret="test", endpoint_url=endpoint)
        fs.call_s3("create_bucket", Bucket=BUCKET)
        yield endpoint


def s3_url(endpoint: str, prefix: str) -> str:
    """A base URL on the moto server (credentials in the query: never shown)."""
    return f"s3://{BUCKET}/{prefix}?endpoint_url={endpoint}&key=test&secret=test"


class S3Fixtures(CloudFixtures):
    """Fixture contract of omniq.testing: one fresh key prefix per test."""

    @pytest.fixture
    def backend_url(self, moto_endpoint: str) -> Iterator[str]:
        yield s3_url(moto_endpoint, f"t-{uuid.uuid4().hex}")


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
    await claim_race(s3_url(moto_endpoint, f"race-{uuid.uuid4().hex}"))


def test_moto_enforces_conditional_writes(moto_endpoint: str) -> None:
    """What the claims rest on: a second exclusive create and a delete with a stale
    ETag are refused by the server (not merely by s3fs)."""
    opts = {"endpoint_url": moto_endpoint, "key": "test", "secret": "test"}
    check_conditional_writes(S3Store(f"{BUCKET}/cond-{uuid.uuid4().hex}", opts))
