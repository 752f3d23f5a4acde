"""The conformance suite must catch broken backends, not only pass correct ones.

Each broken variant below subclasses a memory component and breaks one guarantee; the
suite's test for that guarantee has to fail on it, while the unmodified memory backend
passes the very same selection (the control).
"""

from __future__ import annotations

import textwrap

import pytest

BROKEN_BACKENDS = textwrap.dedent(
    '''
    """Deliberately broken backends, run through the conformance suite."""

    import heapq
    import time
    import uuid

    import anyio
    import pytest
    from omniq.models import TaskStatus
    from omniq.storage.memory import (
        AsyncMemoryQueue,
        AsyncMemoryScheduleStorage,
        reset_memory_stores,
    )
    from omniq.testing import ScheduleStorageConformance, TaskQueueConformance


    class RacyClaimQueue(AsyncMemoryQueue):
        """Reads the ready tasks, yields, then marks them: two consumers can claim one task."""

        async def dequeue_many(self, queues, limit, *, worker_id, lease=30.0, wait=0.0):
            with self._s.lock:
                self._promote(time.time())
                seen = [
                    (t, t.attempt)
                    for t in self._s.tasks.values()
                    if t.queue in queues and t.is_ready()
                ][:limit]
            if not seen:  # nothing ready: wait the correct way
                return await super().dequeue_many(
                    queues, limit, worker_id=worker_id, lease=lease, wait=wait
                )
            await anyio.sleep(0)  # BUG: another consumer runs between reading and marking
            claimed = []
            with self._s.lock:
                for t, attempt in seen:
                    t.status = TaskStatus.RUNNING
                    t.attempt = attempt + 1
                    t.worker_id = worker_id
                    t.lease_until = time.time() + lease
                    heapq.heappush(self._s.leases, (t.lease_until, t.id, t.attempt))
                    claimed.append(t.copy())
            return claimed


    class UnfencedQueue(AsyncMemoryQueue):
        """complete() ignores the attempt: a worker whose lease lapsed overwrites the new claim."""

        async def complete(self, task):
            with self._s.lock:
                t = self._s.tasks.get(task.id)
                if t is None or t.status.is_final:
                    return False
                t.status, t.lease_until = TaskStatus.SUCCESS, None  # BUG: no attempt check
                return True


    class NonAtomicScheduleStorage(AsyncMemoryScheduleStorage):
        """claim_due reads, yields, then writes: concurrent schedulers fire a due time twice."""

        async def claim_due(self, now, limit=100):
            with self._s.lock:
                due = [s for s in self._s.schedules.values() if s.is_due(now)][:limit]
            await anyio.sleep(0)  # BUG: no compare-and-set between the read and the write
            with self._s.lock:
                for s in due:
                    self._s.schedules[s.id] = s.advanced(now)
            return due


    def factory(cls):
        @pytest.fixture
        async def make(self):
            url = f"memory://broken-{uuid.uuid4().hex}"
            made = []

            async def build():
                component = cls(url)
                await component.connect()
                made.append(component)
                return component

            yield build
            for component in made:
                await component.close()
            reset_memory_stores()

        return make


    class TestRacyClaim(TaskQueueConformance):
        make_task_queue = factory(RacyClaimQueue)


    class TestUnfenced(TaskQueueConformance):
        make_task_queue = factory(UnfencedQueue)


    class TestControlQueue(TaskQueueConformance):
        make_task_queue = factory(AsyncMemoryQueue)


    class TestNonAtomicSchedules(ScheduleStorageConformance):
        make_schedule_storage = factory(NonAtomicScheduleStorage)


    class TestControlSchedules(ScheduleStorageConformance):
        make_schedule_storage = factory(AsyncMemoryScheduleStorage)
    '''
)

EXCLUSIVE = "test_exclusive_claim_concurrent_consumers"
FENCING = "test_lapsed_lease_is_reclaimed_and_stale_claim_fenced"
THREE_SCHEDULERS = "test_three_schedulers_fire_each_due_time_once"


_OUTCOMES: dict[str, str] = {}


@pytest.fixture
def outcomes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Run the selection (once per session); map ``Class::test`` to its summary line
    (``PASSED`` or ``FAILED - reason``)."""
    if _OUTCOMES:
        return _OUTCOMES
    monkeypatch.setenv("COLUMNS", "1000")  # keep the failure reasons in the summary whole
    pytester.makepyfile(test_broken_backends=BROKEN_BACKENDS)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-p",
        "anyio",
        "-rA",
        "-k",
        f"{EXCLUSIVE} or {FENCING} or {THREE_SCHEDULERS}",
    )
    found: dict[str, str] = {}
    for line in result.outlines:
        # short summary lines: "PASSED test_broken_backends.py::TestX::test_y"
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED") and "::" in rest:
            node, _, reason = rest.partition(" - ")
            key = "::".join(node.split("::")[1:])
            found[key] = f"{word} - {reason}" if reason else word
    assert found, "\n".join(result.outlines)
    _OUTCOMES.update(found)
    return _OUTCOMES


def test_racy_claim_fails_exclusive_claim(outcomes: dict[str, str]) -> None:
    outcome = outcomes[f"TestRacyClaim::{EXCLUSIVE}"]
    # usually "N tasks were claimed more than once"; a consumer may trip first on its
    # complete() of a task that the other consumer already finished
    assert outcome.startswith("FAILED"), outcome


def test_unfenced_complete_fails_fencing(outcomes: dict[str, str]) -> None:
    assert outcomes[f"TestUnfenced::{FENCING}"].startswith("FAILED")


def test_non_atomic_claim_due_fails_three_schedulers(outcomes: dict[str, str]) -> None:
    outcome = outcomes[f"TestNonAtomicSchedules::{THREE_SCHEDULERS}"]
    assert outcome.startswith("FAILED") and "fired more than once" in outcome


def test_memory_backend_passes_the_same_selection(outcomes: dict[str, str]) -> None:
    assert outcomes[f"TestControlQueue::{EXCLUSIVE}"] == "PASSED"
    assert outcomes[f"TestControlQueue::{FENCING}"] == "PASSED"
    assert outcomes[f"TestControlSchedules::{THREE_SCHEDULERS}"] == "PASSED"


def test_each_broken_variant_breaks_only_its_guarantee(outcomes: dict[str, str]) -> None:
    # the racy queue still fences late workers, the unfenced one still claims exclusively:
    # each failure above is caused by the one bug planted, not by a broken harness
    assert outcomes[f"TestRacyClaim::{FENCING}"] == "PASSED"
    assert outcomes[f"TestUnfenced::{EXCLUSIVE}"] == "PASSED"
