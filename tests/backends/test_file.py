"""The conformance suite (omniq.testing) on the file backend: a local directory under
pytest's ``tmp_path`` and fsspec's ``memory://`` (a fresh store name per test).

Neither needs a server, so nothing here is skipped for a missing service. The object
store runs (S3, GCS and Azure through local emulators) are in ``test_file_s3.py``,
``test_file_gcs.py`` and ``test_file_azure.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from omniq_file import (
    AsyncFileEventStorage,
    AsyncFileQueue,
    AsyncFileResultStorage,
    AsyncFileScheduleStorage,
)

from omniq.testing import (
    EventStorageConformance,
    ResultStorageConformance,
    ScheduleStorageConformance,
    TaskQueueConformance,
    component_factory,
)

_CLASSES = (
    ("task_queue", "AsyncFileQueue"),
    ("result_storage", "AsyncFileResultStorage"),
    ("event_storage", "AsyncFileEventStorage"),
    ("schedule_storage", "AsyncFileScheduleStorage"),
)


async def _corrupt(task_queue: AsyncFileQueue, task_id: str) -> None:
    # what a damaged disk or a foreign writer does: garbage in place of the record
    task_queue.store.write(f"tasks/{task_id}", b"\x01\xc1 garbage, not msgpack")


class FileFixtures:
    """Fixture contract of omniq.testing: one fresh directory per test."""

    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> Iterator[str]:
        yield f"file://{tmp_path / 'store'}"

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
    def corrupt_task(self) -> Callable[[Any, str], Awaitable[None]]:
        return _corrupt


class MemoryFixtures(FileFixtures):
    """The same on fsspec's memory:// (one process: no process_spec)."""

    @pytest.fixture
    def backend_url(self) -> Iterator[str]:
        name = f"omniq-test-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        from fsspec.implementations.memory import MemoryFileSystem

        fs = MemoryFileSystem()
        for path in [p for p in fs.store if p.startswith(f"/{name}/")]:
            fs.store.pop(path, None)

    @pytest.fixture
    def process_spec(self) -> None:
        return None


class TestFileQueue(FileFixtures, TaskQueueConformance):
    pass


class TestFileResultStorage(FileFixtures, ResultStorageConformance):
    pass


class TestFileEventStorage(FileFixtures, EventStorageConformance):
    pass


class TestFileScheduleStorage(FileFixtures, ScheduleStorageConformance):
    pass


class TestMemoryFileQueue(MemoryFixtures, TaskQueueConformance):
    pass


class TestMemoryFileResultStorage(MemoryFixtures, ResultStorageConformance):
    pass


class TestMemoryFileEventStorage(MemoryFixtures, EventStorageConformance):
    pass


class TestMemoryFileScheduleStorage(MemoryFixtures, ScheduleStorageConformance):
    pass
