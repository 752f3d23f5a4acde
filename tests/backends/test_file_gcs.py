"""The conformance suite on the file backend over Google Cloud Storage: a
gcp-storage-emulator server started by this module on 127.0.0.1 (in memory), a fresh
key prefix per test.

Claims use GCS generation preconditions (``ifGenerationMatch=0`` creates,
``ifGenerationMatch=<generation>`` deletes). gcp-storage-emulator ignores both (checked
by the ``test_emulator_*`` tests, which are expected to fail): on it an exclusive create
overwrites and a stale delete deletes, so the tests that need exclusive claims or
idempotent enqueues are marked xfail with that reason, and what passes here checks the
GCS requests, listings and layout, not the atomicity (docs/file.md). Without the
emulator or gcsfs the tests skip, and fail under OMNIQ_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from omniq_file._objects import GCSStore

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
)
from tests.backends.cloud_servers import (
    CloudFixtures,
    claim_race,
    free_port,
    server_process,
    unavailable,
)

BUCKET = "omniq-test"

#: The emulator does not enforce generation preconditions (gcp-storage-emulator 2026.7).
NO_PRECONDITIONS = (
    "gcp-storage-emulator ignores ifGenerationMatch (an exclusive create overwrites, a "
    "delete of a stale generation deletes), so claims on it are not exclusive; real GCS "
    "enforces it"
)


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    """A gcp-storage-emulator of this module's own on a free 127.0.0.1 port, one bucket."""
    try:
        import gcp_storage_emulator  # noqa: F401
        from gcsfs.core import GCSFileSystem
    except ImportError as e:
        unavailable(f"gcp-storage-emulator and gcsfs are needed for the GCS tests: {e}")
    port = free_port()
    argv = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
            "--port", str(port), "--in-memory", "--quiet"]  # fmt: skip
    with server_process("gcp-storage-emulator", argv, port):
        endpoint = f"http://127.0.0.1:{port}"
        GCSFileSystem(token="anon", endpoint_url=endpoint, project="test").mkdir(BUCKET)
        yield endpoint


def gcs_options(endpoint: str) -> dict[str, Any]:
    """storage_options for the emulator: anonymous, its endpoint."""
    return {"token": "anon", "endpoint_url": endpoint, "project": "test"}


def gcs_url(endpoint: str, prefix: str) -> str:
    """A base URL on the emulator (options in the query)."""
    return f"gs://{BUCKET}/{prefix}?token=anon&project=test&endpoint_url={endpoint}"


class GCSFixtures(CloudFixtures):
    """Fixture contract of omniq.testing: one fresh key prefix per test."""

    @pytest.fixture
    def backend_url(self, gcs_endpoint: str) -> Iterator[str]:
        yield gcs_url(gcs_endpoint, f"t-{uuid.uuid4().hex}")


_SLOW = (
    "2,000 tasks through the emulator (one Python thread, a connection a request, 4 "
    "requests a move) take many minutes; claims racing on GCS are checked on fewer "
    "tasks by test_gcs_consumers_racing_claim_each_task_once"
)


class TestGCSFileQueue(GCSFixtures, TaskQueueConformance):
    @pytest.mark.skip(reason=_SLOW)
    async def test_exclusive_claim_concurrent_consumers(self) -> None: ...

    @pytest.mark.skip(reason=_SLOW)
    async def test_exclusive_claim_across_processes(self) -> None: ...

    @pytest.mark.xfail(reason=NO_PRECONDITIONS, strict=True)
    async def test_enqueue_is_idempotent_by_id(self, task_queue: Any) -> None:
        await super().test_enqueue_is_idempotent_by_id(task_queue)


#: Seen about once in eight runs of the result-storage class, never on moto or azurite
#: (same object-store code): reading several results in parallel, the emulator served one
#: object body truncated ("Input data was truncated" decoding it). The reader skips the
#: damaged result as it must, so the listing comes back one short.
_TRUNCATED_READS = (
    "gcp-storage-emulator sometimes serves a truncated object body when several objects "
    "are read in parallel; the listing then skips that result"
)


class TestGCSFileResultStorage(GCSFixtures, ResultStorageConformance):
    @pytest.mark.xfail(reason=_TRUNCATED_READS, strict=False)
    async def test_list_by_status(self, result_storage: Any) -> None:
        await super().test_list_by_status(result_storage)


class TestGCSFileEventStorage(GCSFixtures, EventStorageConformance):
    pass


class TestGCSFileScheduleStorage(GCSFixtures, ScheduleStorageConformance):
    @pytest.mark.xfail(reason=NO_PRECONDITIONS, strict=False)
    async def test_three_schedulers_fire_each_due_time_once(
        self, make_schedule_storage: Any
    ) -> None:
        await super().test_three_schedulers_fire_each_due_time_once(make_schedule_storage)

    @pytest.mark.xfail(reason=NO_PRECONDITIONS, strict=False)
    async def test_three_scheduler_processes_fire_each_due_time_once(
        self, make_schedule_storage: Any, request: pytest.FixtureRequest
    ) -> None:
        await super().test_three_scheduler_processes_fire_each_due_time_once(
            make_schedule_storage, request
        )


@pytest.mark.anyio
@pytest.mark.xfail(reason=NO_PRECONDITIONS, strict=False)
async def test_gcs_consumers_racing_claim_each_task_once(gcs_endpoint: str) -> None:
    # fewer tasks than on S3 and Azure: the race is expected to double some claims here
    await claim_race(gcs_url(gcs_endpoint, f"race-{uuid.uuid4().hex}"), tasks=40)


def _store(endpoint: str) -> GCSStore:
    return GCSStore(f"{BUCKET}/cond-{uuid.uuid4().hex}", gcs_options(endpoint))


@pytest.mark.xfail(reason=NO_PRECONDITIONS, strict=True)
def test_emulator_enforces_create_if_absent(gcs_endpoint: str) -> None:
    store = _store(gcs_endpoint)
    assert store.create("a", b"one"), "the first create-if-absent of a new key succeeds"
    assert not store.create("a", b"two"), "ifGenerationMatch=0 must refuse an existing key"


@pytest.mark.xfail(reason=NO_PRECONDITIONS, strict=True)
def test_emulator_enforces_generation_match_on_delete(gcs_endpoint: str) -> None:
    store = _store(gcs_endpoint)
    store.write("a", b"one")
    generation = store._version("a")
    assert generation is not None, "an existing object has a generation"
    store.write("a", b"two")
    assert store._version("a") != generation, "a rewrite makes a new generation"
    assert not store._delete_if("a", generation), "a delete of a stale generation must fail"


def test_gcs_store_requests(gcs_endpoint: str) -> None:
    """The GCS requests themselves (what does not depend on the preconditions)."""
    store = _store(gcs_endpoint)
    store.check()
    assert store.create("q/a", b"one") and store.read("q/a") == b"one"
    assert store.exists("q/a") and not store.exists("q/b")
    assert sorted(store.list("q")) == ["a"] and store.list("nothing") == []
    assert store.move("q/a", "r/b"), "a move of an existing object succeeds"
    assert store.read("q/a") is None and store.exists("r/b"), "q/a moved to r/b"
    assert not store.move("q/a", "r/c"), "a move of a missing object fails"
    assert store.delete("r/b") and not store.delete("r/b"), "one delete per object"
    with pytest.raises(Exception, match="cannot reach bucket"):
        GCSStore(f"missing-{uuid.uuid4().hex}", gcs_options(gcs_endpoint)).check()
