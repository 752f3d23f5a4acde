"""The conformance suite: importable test base classes every backend must pass.

Use it the fsspec/SQLAlchemy way (no auto-loaded pytest plugin)::

    from omniq.testing import TaskQueueConformance

    class AcmeFixtures:
        @pytest.fixture
        async def make_task_queue(self):
            made = []
            async def make():
                q = AsyncAcmeQueue(...same per-test namespace...)
                await q.connect()
                made.append(q)
                return q
            yield make
            for q in made:
                await q.close()

    class TestAcmeQueue(TaskQueueConformance, AcmeFixtures):
        pass

The tests run on anyio's pytest plugin (shipped with anyio). The fixture contract is in
:mod:`omniq.testing.base`. Capability flags (``supports_priority``, ``supports_delay``,
``blocking_dequeue``, ...) gate tests with a visible skip reason, never silently.
"""

try:
    import pytest as _pytest  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "omniq.testing (the conformance suite) needs pytest: pip install 'omniq-core[testing]'"
    ) from e

from omniq.testing.base import (
    ConformanceBase,
    component_factory,
    eventually,
    make_task,
    optional_fixture,
    require,
)
from omniq.testing.events_suite import EventStorageConformance
from omniq.testing.queue_suite import TaskQueueConformance
from omniq.testing.results_suite import ResultStorageConformance
from omniq.testing.schedules_suite import ScheduleStorageConformance

__all__ = [
    "ConformanceBase",
    "EventStorageConformance",
    "ResultStorageConformance",
    "ScheduleStorageConformance",
    "TaskQueueConformance",
    "component_factory",
    "eventually",
    "make_task",
    "optional_fixture",
    "require",
]
