"""Models: Task identity and copies, ids, TTL; Schedule timing maths (cron, interval, once)."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniq.models import CatchUp, Schedule, ScheduleState, Task, TaskStatus, new_id, new_ids
from omniq.models.ids import id_timestamp
from omniq.models.schedule import MAX_CATCH_UP_RUNS, MISFIRE_GRACE

BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, tz: ZoneInfo = BERLIN) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc, arg-type]


def local(t: float | None, tz: ZoneInfo = BERLIN) -> datetime:
    assert t is not None
    return datetime.fromtimestamp(t, tz)


# --- Task ---------------------------------------------------------------------------------


class TestTask:
    def test_eq_and_hash_by_id(self) -> None:
        a = Task(func="m:f", args=(1,))
        same_id = Task(func="m:other", args=(2,), id=a.id, queue="q", priority=5)
        other = Task(func="m:f", args=(1,))
        assert a == same_id and hash(a) == hash(same_id)
        assert a != other
        assert a != a.id  # not equal to its bare id
        assert len({a, same_id, other}) == 2
        assert {a: 1}[same_id] == 1

    def test_status_changes_keep_identity(self) -> None:
        a = Task(func="m:f")
        assert a.copy(status=TaskStatus.RUNNING, attempt=3) == a

    def test_ids_are_time_sortable(self) -> None:
        ids = [new_id() for _ in range(5000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        assert all(len(i) == 26 for i in ids)
        tasks = [Task(func="m:f") for _ in range(100)]
        assert [t.id for t in tasks] == sorted(t.id for t in tasks)

    def test_bulk_ids_interleave_with_single_ids(self) -> None:
        ids = [new_id(), *new_ids(3000), new_id(), *new_ids(1), *new_ids(0), new_id()]
        assert len(ids) == 3004 and ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(len(i) == 26 for i in ids)

    def test_id_tails_keep_14_digits_when_the_counter_passes_them(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from omniq.models import ids as ids_module

        monkeypatch.setattr(ids_module, "_last_ms", 2**46)  # "now" is always earlier
        monkeypatch.setattr(ids_module, "_seq", ids_module._TAIL_MASK - 1)
        tails = [i[12:] for i in new_ids(3)]
        assert tails == ["ffffffffffffff", "00000000000000", "00000000000001"]

    def test_id_encodes_creation_time(self) -> None:
        before = datetime.now(UTC).timestamp()
        i = new_id()
        after = datetime.now(UTC).timestamp()
        assert before - 0.002 <= id_timestamp(i) <= after + 0.002

    def test_ids_unique_and_increasing_across_threads(self) -> None:
        per_thread: list[list[str]] = [[] for _ in range(16)]
        barrier = threading.Barrier(16)

        def make(out: list[str]) -> None:
            barrier.wait()
            out.extend(new_id() for _ in range(2000))

        threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [i for out in per_thread for i in out]
        assert len(set(every)) == len(every) == 16 * 2000
        for out in per_thread:  # monotonic within each thread
            assert out == sorted(out)

    def test_copy_is_independent(self) -> None:
        t = Task(
            func="m:f",
            args=(1, [2]),
            kwargs={"k": 1},
            depends_on=["a"],
            metadata={"trace": "x"},
        )
        c = t.copy()
        c.kwargs["new"] = 2
        c.depends_on.append("b")
        c.metadata["other"] = "y"
        c.status = TaskStatus.RUNNING
        assert t.kwargs == {"k": 1}
        assert t.depends_on == ["a"]
        assert t.metadata == {"trace": "x"}
        assert t.status is TaskStatus.PENDING
        assert c.id == t.id and c.args == t.args

    def test_copy_applies_changes(self) -> None:
        t = Task(func="m:f", kwargs={"a": 1})
        c = t.copy(queue="high", priority=9, kwargs={"b": 2})
        assert (c.queue, c.priority, c.kwargs) == ("high", 9, {"b": 2})
        assert (t.queue, t.priority, t.kwargs) == ("default", 0, {"a": 1})

    def test_effective_status_with_ttl(self) -> None:
        now = 1_000_000.0
        t = Task(func="m:f", expires_at=now + 10)
        assert t.effective_status(now) is TaskStatus.PENDING
        assert not t.is_expired(now + 9.999)
        assert t.is_expired(now + 10)
        assert t.effective_status(now + 10) is TaskStatus.EXPIRED
        assert t.copy(status=TaskStatus.WAITING).effective_status(now + 11) is TaskStatus.EXPIRED
        # final and running tasks keep their status: TTL only stops tasks that have not run
        for status in (TaskStatus.RUNNING, TaskStatus.SUCCESS, TaskStatus.FAILED):
            assert t.copy(status=status).effective_status(now + 11) is status
        assert Task(func="m:f").effective_status(now) is TaskStatus.PENDING  # no TTL

    def test_explicit_now_zero_is_respected(self) -> None:
        # now=0.0 is a time, not "use the clock"
        t = Task(func="m:f", expires_at=5.0)
        assert not t.is_expired(0.0)
        assert t.is_ready(0.0)
        running = Task(func="m:f", status=TaskStatus.RUNNING, lease_until=5.0)
        assert not running.lease_lapsed(0.0)

    def test_is_ready_respects_delay(self) -> None:
        now = 1_000.0
        assert Task(func="m:f").is_ready(now)
        assert not Task(func="m:f", run_at=now + 1).is_ready(now)
        assert Task(func="m:f", run_at=now).is_ready(now)
        assert not Task(func="m:f", status=TaskStatus.RUNNING).is_ready(now)

    def test_lease_lapsed(self) -> None:
        t = Task(func="m:f", status=TaskStatus.RUNNING, lease_until=100.0)
        assert not t.lease_lapsed(100.0)
        assert t.lease_lapsed(100.1)
        assert not t.copy(status=TaskStatus.SUCCESS).lease_lapsed(200.0)

    def test_sort_key_priority_then_due_then_id(self) -> None:
        a = Task(func="m:f", priority=1, created_at=10)
        b = Task(func="m:f", priority=5, created_at=20)
        c = Task(func="m:f", priority=5, created_at=20)
        d = Task(func="m:f", priority=5, created_at=15)
        assert sorted([a, b, c, d], key=Task.sort_key) == [d, b, c, a]

    def test_status_finality(self) -> None:
        assert TaskStatus.SUCCESS.is_final and TaskStatus.EXPIRED.is_final
        assert not TaskStatus.PENDING.is_final and not TaskStatus.RUNNING.is_final

    def test_repr_is_short(self) -> None:
        t = Task(func="m:f", kwargs={"password": "hunter2"})
        assert "hunter2" not in repr(t) and t.id in repr(t)


# --- Schedule: construction and validation --------------------------------------------------


class TestScheduleValidation:
    def test_needs_exactly_one_timing(self) -> None:
        with pytest.raises(ValueError, match="exactly one of cron=, interval= or at="):
            Schedule(func="m:f")
        with pytest.raises(ValueError, match="exactly one"):
            Schedule(func="m:f", cron="* * * * *", interval=5)

    @pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "every minute", "*/0 * * * *"])
    def test_invalid_cron(self, expr: str) -> None:
        with pytest.raises(ValueError, match=r"invalid cron expression .*'minute hour day month"):
            Schedule(func="m:f", cron=expr)

    @pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan")])
    def test_invalid_interval(self, interval: float) -> None:
        with pytest.raises(ValueError, match="interval must be a positive number of seconds"):
            Schedule(func="m:f", interval=interval)

    @pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd"])
    def test_invalid_timezone(self, tz: str) -> None:
        with pytest.raises(ValueError, match=r"unknown time zone .*IANA name"):
            Schedule(func="m:f", cron="* * * * *", timezone=tz)

    def test_invalid_values_fail_on_decode_too(self) -> None:
        data = msgspec.json.encode({"func": "m:f", "cron": "not cron"})
        with pytest.raises(msgspec.ValidationError, match="invalid cron"):
            msgspec.json.decode(data, type=Schedule)

    def test_create_accepts_timedelta_and_datetime(self) -> None:
        s = Schedule.create("m:f", interval=timedelta(minutes=5), start_at=1000.0)
        assert s.interval == 300 and s.kind == "interval"
        at = datetime(2030, 1, 1, 12, tzinfo=UTC)
        one = Schedule.create("m:f", at=at)
        assert one.at == at.timestamp() and one.next_run_at == at.timestamp()
        assert one.kind == "once"
        assert Schedule.create("m:f", cron="0 * * * *").kind == "cron"


# --- Schedule: timing -------------------------------------------------------------------------


class TestScheduleTiming:
    def test_interval_anchored_at_start(self) -> None:
        s = Schedule(func="m:f", interval=60, start_at=1000.0)
        assert s.next_run_at == 1060.0
        assert s.next_after(1000.0) == 1060.0
        assert s.next_after(1059.9) == 1060.0
        assert s.next_after(1060.0) == 1120.0  # strictly after
        assert s.next_after(500.0) == 1060.0  # before the anchor
        assert s.next_after(1000.0 + 60 * 1000 + 1) == 1000.0 + 60 * 1001

    def test_short_interval_never_yields_a_due_time_twice(self) -> None:
        """Float rounding of anchor + k * interval once gave 1.99999809 then 2.00000048
        (the same due time twice) for this anchor: a catch-up fired it twice."""
        s = Schedule(func="m:f", interval=0.1, start_at=1796660000.123456, catch_up="all")
        times = s.due_times(1796660000.123456 + 100.05)
        steps = [round((t - 1796660000.123456) / 0.1) for t in times]
        assert steps == list(range(1, len(times) + 1)), "each due time once, in order"
        assert len(times) == 1000 or times[-1] > 1796660000.123456 + 99.9

    def test_one_shot(self) -> None:
        s = Schedule(func="m:f", at=5000.0, start_at=1000.0)
        assert s.next_run_at == 5000.0
        assert s.next_after(4999.0) == 5000.0
        assert s.next_after(5000.0) is None
        assert s.fires(4999.0) == []
        assert s.fires(5000.0) == [5000.0]
        done = s.advanced(5000.0)
        assert done.finished and done.run_count == 1 and done.last_run_at == 5000.0
        assert done.fires(10_000.0) == []
        # decoding a finished one-shot does not re-arm it
        again = msgspec.json.decode(msgspec.json.encode(done), type=Schedule)
        assert again.finished

    def test_cron_utc(self) -> None:
        start = ts(2024, 1, 1, 10, 7, tz=ZoneInfo("UTC"))
        s = Schedule(func="m:f", cron="*/15 * * * *", start_at=start)
        assert local(s.next_run_at, ZoneInfo("UTC")) == datetime(2024, 1, 1, 10, 15, tzinfo=UTC)
        assert s.next_after(ts(2024, 1, 1, 10, 15, tz=ZoneInfo("UTC"))) == ts(
            2024, 1, 1, 10, 30, tz=ZoneInfo("UTC")
        )
        assert s.next_after(ts(2024, 1, 1, 10, 14, 59, tz=ZoneInfo("UTC")) + 0.999) == ts(
            2024, 1, 1, 10, 15, tz=ZoneInfo("UTC")
        )

    def test_cron_is_read_in_its_time_zone(self) -> None:
        start = ts(2024, 6, 1, 0, 0, tz=ZoneInfo("UTC"))
        berlin = Schedule(func="m:f", cron="0 9 * * *", timezone="Europe/Berlin", start_at=start)
        utc = Schedule(func="m:f", cron="0 9 * * *", start_at=start)
        assert local(berlin.next_run_at) == datetime(2024, 6, 1, 9, tzinfo=BERLIN)
        assert utc.next_run_at is not None and berlin.next_run_at is not None
        assert utc.next_run_at - berlin.next_run_at == 2 * 3600  # CEST is UTC+2

    def test_daily_cron_across_spring_forward(self) -> None:
        # Europe/Berlin: 2024-03-31 02:00 CET -> 03:00 CEST (the day has 23 hours)
        s = Schedule(
            func="m:f", cron="0 9 * * *", timezone="Europe/Berlin", start_at=ts(2024, 3, 29, 12)
        )
        fires = [s.next_run_at]
        for _ in range(3):
            fires.append(s.next_after(fires[-1]))  # type: ignore[arg-type]
        assert [local(f).replace(tzinfo=None) for f in fires] == [
            datetime(2024, 3, 30, 9),
            datetime(2024, 3, 31, 9),
            datetime(2024, 4, 1, 9),
            datetime(2024, 4, 2, 9),
        ]
        gaps = [b - a for a, b in itertools.pairwise(fires)]  # type: ignore[operator]
        assert gaps == [23 * 3600, 24 * 3600, 24 * 3600]
        assert local(fires[0]).utcoffset() == timedelta(hours=1)
        assert local(fires[1]).utcoffset() == timedelta(hours=2)

    def test_daily_cron_across_fall_back(self) -> None:
        # 2024-10-27 03:00 CEST -> 02:00 CET (the day has 25 hours)
        s = Schedule(
            func="m:f", cron="0 9 * * *", timezone="Europe/Berlin", start_at=ts(2024, 10, 26, 12)
        )
        first = s.next_run_at
        second = s.next_after(first)  # type: ignore[arg-type]
        assert local(first).replace(tzinfo=None) == datetime(2024, 10, 27, 9)
        assert local(second).replace(tzinfo=None) == datetime(2024, 10, 28, 9)
        s2 = Schedule(
            func="m:f", cron="0 9 * * *", timezone="Europe/Berlin", start_at=ts(2024, 10, 25, 12)
        )
        assert first - s2.next_run_at == 25 * 3600  # type: ignore[operator]

    def test_hourly_cron_through_both_dst_changes(self) -> None:
        # an hourly job fires once per real hour: 23 times on the short day, 25 on the long
        for day, expected in (((2024, 3, 31), 23), ((2024, 10, 27), 25)):
            begin = ts(*day, 0, 0)
            end = (datetime(*day, tzinfo=BERLIN) + timedelta(days=1)).timestamp()  # type: ignore[misc]
            s = Schedule(func="m:f", cron="0 * * * *", timezone="Europe/Berlin", start_at=begin)
            fires, t = [], begin - 1
            while (t := s.next_after(t)) is not None and t < end:  # type: ignore[assignment]
                fires.append(t)
            assert len(fires) == expected, day
            assert all(b - a == 3600 for a, b in itertools.pairwise(fires))

    def test_cron_job_in_skipped_hour_still_runs_that_day(self) -> None:
        # 02:30 does not exist on 2024-03-31 in Berlin; the job is not silently dropped
        s = Schedule(
            func="m:f", cron="30 2 * * *", timezone="Europe/Berlin", start_at=ts(2024, 3, 30, 12)
        )
        fire = local(s.next_run_at)
        assert fire.date() == datetime(2024, 3, 31).date()
        assert (
            datetime(2024, 3, 31, 3, tzinfo=BERLIN)
            <= fire
            < datetime(2024, 3, 31, 4, tzinfo=BERLIN)
        )
        assert local(s.next_after(s.next_run_at)).replace(tzinfo=None) == datetime(  # type: ignore[arg-type]
            2024, 4, 1, 2, 30
        )


# --- Schedule: state, catch-up, fire ids ---------------------------------------------------------


class TestScheduleState:
    def make(self, catch_up: CatchUp = CatchUp.COALESCE) -> Schedule:
        return Schedule(func="m:f", interval=60, start_at=0.0, catch_up=catch_up)

    def test_pause_and_resume(self) -> None:
        s = self.make()
        p = s.paused()
        assert p.state is ScheduleState.PAUSED and s.state is ScheduleState.ACTIVE
        assert not p.is_due(1000.0) and p.fires(1000.0) == []
        r = p.resumed()
        assert r.state is ScheduleState.ACTIVE and r.is_due(1000.0)
        assert r.next_run_at == s.next_run_at  # due times accrued while paused

    def test_catch_up_coalesce_is_one_run(self) -> None:
        s = self.make(CatchUp.COALESCE)
        now = 60 * 10 + 5  # due at 60, 120, ..., 600
        assert s.due_times(now) == [60.0 * i for i in range(1, 11)]
        assert s.fires(now) == [600.0]
        adv = s.advanced(now)
        assert adv.next_run_at == 660.0 and adv.run_count == 1 and adv.last_run_at == 600.0

    def test_catch_up_all_runs_each(self) -> None:
        s = self.make(CatchUp.ALL)
        now = 60 * 10 + 5
        assert s.fires(now) == [60.0 * i for i in range(1, 11)]
        adv = s.advanced(now)
        assert adv.run_count == 10 and adv.next_run_at == 660.0

    def test_catch_up_all_is_bounded(self) -> None:
        s = Schedule(func="m:f", interval=1, start_at=0.0, catch_up=CatchUp.ALL)
        assert len(s.fires(10 * MAX_CATCH_UP_RUNS)) == MAX_CATCH_UP_RUNS

    def test_catch_up_skip(self) -> None:
        s = Schedule(func="m:f", interval=600, start_at=0.0, catch_up=CatchUp.SKIP)
        # due at 600, 1200, ..., 6000; the latest is recent enough: it alone runs
        assert s.fires(6000.0 + MISFIRE_GRACE / 2) == [6000.0]
        # every due time is stale: none runs, and the schedule moves on to the next one
        late = 6000.0 + MISFIRE_GRACE + 1
        assert s.fires(late) == []
        adv = s.advanced(late)
        assert adv.run_count == 0 and adv.next_run_at == 6600.0
        assert adv.fires(late) == []

    def test_skipped_one_shot_is_not_rearmed(self) -> None:
        s = Schedule(func="m:f", at=100.0, start_at=0.0, catch_up=CatchUp.SKIP)
        adv = s.advanced(100.0 + MISFIRE_GRACE + 10)
        assert adv.finished and adv.run_count == 0 and adv.last_run_at == 100.0
        again = msgspec.json.decode(msgspec.json.encode(adv), type=Schedule)
        assert again.finished

    def test_fire_id_identifies_schedule_and_time(self) -> None:
        s = self.make()
        assert s.fire_id(60.0) == s.fire_id(60.0)
        assert s.fire_id(60.0) != s.fire_id(120.0)
        assert s.fire_id(60.0) != self.make().fire_id(60.0)
        assert s.id in s.fire_id(60.0)
        assert s.fire_id(1.0001) == s.fire_id(1.0002)  # millisecond resolution

    def test_advanced_leaves_original_untouched(self) -> None:
        s = self.make()
        s.advanced(1000.0)
        assert s.next_run_at == 60.0 and s.run_count == 0


# --- property: cron next-run against a brute-force scan ------------------------------------------


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    n = st.integers(lo, hi)
    return st.one_of(
        st.just("*"),
        n.map(str),
        st.integers(2, max(2, (hi - lo) // 2)).map(lambda k: f"*/{k}"),
        st.tuples(n, n).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.lists(n, min_size=2, max_size=3, unique=True).map(lambda v: ",".join(map(str, v))),
    )


# day-of-month/month/weekday stay unrestricted so the scan ends within a day
cron_exprs = st.tuples(_field(0, 59), _field(0, 23)).map(lambda mh: f"{mh[0]} {mh[1]} * * *")
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
starts = st.floats(min_value=1.6e9, max_value=1.9e9, allow_nan=False)


def brute_force_next(expr: str, t: float, tz: ZoneInfo) -> float:
    minute = (int(t) // 60 + 1) * 60  # the first whole minute strictly after t
    for i in range(2 * 24 * 60):
        cand = minute + 60 * i
        if croniter.match(expr, datetime.fromtimestamp(cand, tz)):
            return float(cand)
    raise AssertionError(f"{expr!r} never matched within two days of {t}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=cron_exprs, start=starts, zone=zones)
def test_cron_next_run_matches_brute_force(expr: str, start: float, zone: str) -> None:
    s = Schedule(func="m:f", cron=expr, timezone=zone, start_at=start)
    assert s.next_run_at == brute_force_next(expr, start, ZoneInfo(zone))
    assert s.next_after(s.next_run_at) > s.next_run_at  # type: ignore[arg-type, operator]


@settings(max_examples=60, deadline=None)
@given(
    interval=st.floats(min_value=0.5, max_value=1e6, allow_nan=False),
    start=st.floats(min_value=0, max_value=2e9),
    offset=st.floats(min_value=-1e6, max_value=1e7),
)
def test_interval_next_after_is_the_next_grid_point(
    interval: float, start: float, offset: float
) -> None:
    s = Schedule(func="m:f", interval=interval, start_at=start)
    t = start + offset
    nxt = s.next_after(t)
    assert nxt is not None and nxt > t
    if t >= start:
        k = round((nxt - start) / interval)
        assert k >= 1 and abs(start + k * interval - nxt) <= 1e-6 * max(1.0, abs(nxt))
        assert nxt - interval <= t + 1e-6 * max(1.0, abs(nxt))  # nothing skipped
