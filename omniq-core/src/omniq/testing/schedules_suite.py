"""Conformance tests for schedule storage (CRUD, claim_due exactly once)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter

import anyio
import pytest

from omniq.models import CatchUp, Schedule, ScheduleState
from omniq.storage.base import BaseScheduleStorage
from omniq.testing.base import ConformanceBase, Factory, optional_fixture


class ScheduleStorageConformance(ConformanceBase):
    """Every schedule storage must pass these. Needs the ``make_schedule_storage`` fixture."""

    @pytest.fixture
    async def schedule_storage(self, make_schedule_storage: Factory) -> BaseScheduleStorage:
        return await make_schedule_storage()  # type: ignore[no-any-return]

    async def test_crud(self, schedule_storage: BaseScheduleStorage) -> None:
        s = Schedule(func="m:f", args=(1,), cron="*/5 * * * *", queue="q", timezone="Europe/Berlin")
        await schedule_storage.save(s)
        got = await schedule_storage.get(s.id)
        assert got is not None and got.cron == s.cron and got.timezone == "Europe/Berlin"
        assert list(got.args) == [1] and got.next_run_at == s.next_run_at
        assert await schedule_storage.update(got.paused())
        paused = await schedule_storage.get(s.id)
        assert paused is not None and paused.state is ScheduleState.PAUSED
        assert [x.id for x in await schedule_storage.list(ScheduleState.PAUSED)] == [s.id]
        assert await schedule_storage.list(ScheduleState.ACTIVE) == []
        assert await schedule_storage.delete(s.id)
        assert await schedule_storage.get(s.id) is None
        assert not await schedule_storage.delete(s.id)
        assert not await schedule_storage.update(s)

    async def test_claim_due_advances_once(self, schedule_storage: BaseScheduleStorage) -> None:
        now = time.time()
        due = Schedule(func="m:f", interval=60, start_at=now - 90)  # due at now-30
        later = Schedule(func="m:f", interval=60, start_at=now)  # due at now+60
        await schedule_storage.save(due)
        await schedule_storage.save(later)
        claimed = await schedule_storage.claim_due(now)
        assert [s.id for s in claimed] == [due.id]
        assert claimed[0].fires(now) == [due.next_run_at]
        assert await schedule_storage.claim_due(now) == []
        stored = await schedule_storage.get(due.id)
        assert stored is not None and stored.next_run_at is not None
        assert stored.next_run_at > now and stored.run_count == 1

    async def test_paused_schedule_is_not_claimed(
        self, schedule_storage: BaseScheduleStorage
    ) -> None:
        now = time.time()
        s = Schedule(func="m:f", interval=10, start_at=now - 15).paused()
        await schedule_storage.save(s)
        assert await schedule_storage.claim_due(now) == []
        await schedule_storage.update(s.resumed())
        assert [x.id for x in await schedule_storage.claim_due(now)] == [s.id]

    async def test_one_shot_fires_once(self, schedule_storage: BaseScheduleStorage) -> None:
        now = time.time()
        s = Schedule(func="m:f", at=now - 1)
        await schedule_storage.save(s)
        assert len(await schedule_storage.claim_due(now)) == 1
        assert await schedule_storage.claim_due(now + 3600) == []
        stored = await schedule_storage.get(s.id)
        assert stored is not None and stored.finished

    async def test_cron_schedule_claims(self, schedule_storage: BaseScheduleStorage) -> None:
        s = Schedule(func="m:f", cron="* * * * *", start_at=time.time() - 600)
        await schedule_storage.save(s)
        now = time.time()
        (claimed,) = await schedule_storage.claim_due(now)
        fires = claimed.fires(now)
        assert len(fires) == 1 and now - 60 < fires[0] <= now  # coalesced to the latest
        assert (
            Schedule(func="m:f", cron="* * * * *", start_at=now - 600, catch_up=CatchUp.ALL)
            .fires(now)
            .__len__()
            >= 9
        )

    async def test_three_schedulers_fire_each_due_time_once(
        self, make_schedule_storage: Factory
    ) -> None:
        stores: list[BaseScheduleStorage] = [await make_schedule_storage() for _ in range(3)]
        start = time.time()
        schedules = [Schedule(func="m:f", interval=0.1, start_at=start) for _ in range(10)]
        for s in schedules:
            await stores[0].save(s)
        fired: list[tuple[str, float]] = []
        stop_at = start + 1.5

        async def scheduler(store: BaseScheduleStorage) -> None:
            while time.time() < stop_at:
                now = time.time()
                for s in await store.claim_due(now):
                    fired.extend((s.id, f) for f in s.fires(now))
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(scheduler, store)
        dupes = [k for k, n in Counter(fired).items() if n > 1]
        assert not dupes, f"{len(dupes)} due times fired more than once"
        per_schedule = Counter(sid for sid, _ in fired)
        assert set(per_schedule) == {s.id for s in schedules}
        assert all(n >= 5 for n in per_schedule.values()), per_schedule

    async def test_three_scheduler_processes_fire_each_due_time_once(
        self, make_schedule_storage: Factory, request: pytest.FixtureRequest
    ) -> None:
        """Three processes claim the same schedules: each due time fires in one of them.

        The clock starts only once every process has connected and said so, and each
        process claims a last time after the window, with ``catch_up="all"``: every due
        time in the window fires, however slowly the processes start or run on a busy
        machine, so the test can name each due time that is missing or fired twice."""
        spec = (optional_fixture(request, "process_spec") or {}).get("schedule_storage")
        if not spec:
            pytest.skip("backend gives no process_spec['schedule_storage'] (in-process only)")
        store: BaseScheduleStorage = await make_schedule_storage()
        interval, window, n_schedules = 0.1, 2.05, 5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _SCHEDULER_SCRIPT, json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        try:
            for i, p in enumerate(procs):
                assert p.stdout is not None
                with anyio.move_on_after(_PROCESS_DEADLINE):
                    line = await anyio.to_thread.run_sync(p.stdout.readline, abandon_on_cancel=True)
                if line.strip() != "ready":
                    p.kill()
                    _, err = p.communicate()
                    pytest.fail(
                        f"scheduler process {i} did not connect and print 'ready' within "
                        f"{_PROCESS_DEADLINE} s (got {line!r}, exit code {p.returncode}):\n{err}"
                    )
            # every process is connected and waiting: the clock starts now
            start = time.time() + 0.2
            stop_at = start + window
            schedules = [
                Schedule(func="m:f", interval=interval, start_at=start, catch_up=CatchUp.ALL)
                for _ in range(n_schedules)
            ]
            for s in schedules:
                await store.save(s)
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{stop_at!r}\n")
                p.stdin.flush()  # communicate() below closes it
            fired: list[tuple[str, int]] = []  # (schedule id, k) for due time start + k*interval
            for i, p in enumerate(procs):
                with anyio.move_on_after(_PROCESS_DEADLINE):
                    out, err = await anyio.to_thread.run_sync(p.communicate, abandon_on_cancel=True)
                if p.returncode is None:
                    pytest.fail(
                        f"scheduler process {i} still running {_PROCESS_DEADLINE} s after "
                        f"its window ended at {stop_at}"
                    )
                assert p.returncode == 0, f"scheduler process {i} failed:\n{err}"
                for line in out.split():
                    sid, _, t = line.partition("@")
                    fired.append((sid, round((float(t) - start) / interval)))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        dupes = sorted(k for k, n in Counter(fired).items() if n > 1)
        assert not dupes, f"{len(dupes)} due times fired in two processes: {dupes[:5]}"
        # the due times are start + k*interval for k = 1, 2, ...: each up to stop_at fired
        # (the last claims come after it), and any later one only after all before it
        expected = set(range(1, int(window / interval) + 1))
        for s in schedules:
            ks = {k for sid, k in fired if sid == s.id}
            missing = sorted(expected - ks)
            assert not missing, (
                f"schedule {s.id}: due times start + k*{interval} s for k in {missing} never "
                f"fired (expected each of k = 1..{max(expected)}, before stop_at, once)"
            )
            assert ks == set(range(1, max(ks) + 1)), (
                f"schedule {s.id}: fired due times k = {sorted(ks)} have gaps"
            )
        unknown = {sid for sid, _ in fired} - {s.id for s in schedules}
        assert not unknown, f"fires of schedules never saved: {unknown}"


#: how long a scheduler process may take to start, connect, or finish after its window
_PROCESS_DEADLINE = 120.0

_SCHEDULER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from omniq.plugins.specs import load_object

    async def main():
        spec = json.loads(sys.argv[1])
        store = load_object(spec["class"]).from_url(spec["url"], **spec.get("options", {}))
        await store.connect()
        print("ready", flush=True)
        stop_at = float(sys.stdin.readline())  # the test starts the clock once all are ready
        fired = []
        while True:
            now = time.time()
            for s in await store.claim_due(now):
                fired.extend(f"{s.id}@{f!r}" for f in s.fires(now))
            if now >= stop_at:  # this last claim covers every due time up to stop_at
                break
            await asyncio.sleep(0.005)
        await store.close()
        print("\\n".join(fired))

    asyncio.run(main())
    """
)
