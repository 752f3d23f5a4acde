"""The Schedule model: cron, interval or one-shot timing with pause/resume.

All next-run maths is pure and lives here, so every schedule storage only has to store
schedules and advance ``next_run_at`` atomically (compare-and-set on its old value).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

from omniq.models.enums import CatchUp, ScheduleState
from omniq.models.ids import new_id

#: A due time older than this (seconds) counts as missed, for ``catch_up="skip"``.
MISFIRE_GRACE = 60.0
#: ``catch_up="all"`` never enqueues more than this many missed runs at once.
MAX_CATCH_UP_RUNS = 1000
#: Interval schedules: a time within this many intervals of a due time is that due time
#: (float rounding), so it is never fired twice.
DUE_TIME_SNAP = 1e-6


class Schedule(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A recurring (cron, interval) or one-shot (``at``) enqueue of a task."""

    func: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str = msgspec.field(default_factory=new_id)
    cron: str | None = None
    interval: float | None = None
    """Seconds between runs, anchored at ``start_at``."""
    at: float | None = None
    """One-shot run time (Unix seconds)."""
    timezone: str = "UTC"
    """Time zone the cron expression is read in."""
    start_at: float | None = None
    state: ScheduleState = ScheduleState.ACTIVE
    catch_up: CatchUp = CatchUp.COALESCE
    next_run_at: float | None = None
    last_run_at: float | None = None
    run_count: int = 0
    created_at: float = msgspec.field(default_factory=time.time)
    queue: str = "default"
    priority: int = 0
    timeout: float | None = None
    retries: int | None = None
    retry_delay: float | None = None
    ttl: float | None = None
    result_ttl: float | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = sum(x is not None for x in (self.cron, self.interval, self.at))
        if kinds != 1:
            raise ValueError(
                "a schedule needs exactly one of cron=, interval= or at= "
                f"(got cron={self.cron!r}, interval={self.interval!r}, at={self.at!r})"
            )
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(
                f"invalid cron expression {self.cron!r}: expected five fields "
                "'minute hour day month weekday', e.g. '*/5 * * * *'"
            )
        if self.interval is not None and not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError(
                f"interval must be a positive number of seconds, got {self.interval!r}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as 'Europe/Berlin'"
            ) from e
        if self.start_at is None:
            self.start_at = self.created_at
        if self.next_run_at is None and self.run_count == 0 and self.last_run_at is None:
            self.next_run_at = self.first_run()

    # --- constructors --------------------------------------------------------------

    @classmethod
    def create(
        cls,
        func: str,
        *,
        cron: str | None = None,
        interval: float | timedelta | None = None,
        at: float | datetime | None = None,
        **fields: Any,
    ) -> Schedule:
        """Build a schedule, accepting ``timedelta`` intervals and ``datetime`` run times."""
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        if isinstance(at, datetime):
            at = (
                at.timestamp()
            )  # naive datetimes are local time, as datetime.timestamp() reads them
        return cls(func=func, cron=cron, interval=interval, at=at, **fields)

    @classmethod
    def from_cron(
        cls,
        cron_expression: str,
        func: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        queue_name: str = "default",
        **fields: Any,
    ) -> Schedule:
        """Seed-compatible constructor: ``Schedule.create(func, cron=...)``."""
        return cls.create(
            func, cron=cron_expression, args=tuple(args), kwargs=dict(kwargs or {}),
            queue=queue_name, **fields,
        )  # fmt: skip

    # --- timing maths (pure) -------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"cron"``, ``"interval"`` or ``"once"``."""
        return (
            "cron" if self.cron is not None else "interval" if self.interval is not None else "once"
        )

    def first_run(self) -> float | None:
        """The first due time of a new schedule."""
        start = self.start_at if self.start_at is not None else self.created_at
        if self.at is not None:
            return self.at
        if self.interval is not None:
            return start + self.interval
        return self.next_after(start)

    def next_after(self, t: float) -> float | None:
        """The first due time strictly after ``t`` (None when a one-shot has passed)."""
        if self.at is not None:
            return self.at if self.at > t else None
        if self.interval is not None:
            anchor = self.start_at if self.start_at is not None else self.created_at
            if t < anchor:
                return anchor + self.interval
            # Due times are anchor + k * interval for whole k, always computed that way.
            # A t that is itself a due time (give or take float rounding) is followed by
            # k + 1: without the snap, 1.99999809 could be followed by 2.00000048, the
            # same due time twice.
            span = (t - anchor) / self.interval
            n = round(span)
            k = n + 1 if abs(span - n) <= DUE_TIME_SNAP else math.floor(span) + 1
            return anchor + k * self.interval
        assert self.cron is not None
        tz = ZoneInfo(self.timezone)
        base = datetime.fromtimestamp(t, tz)
        fire: datetime = croniter(self.cron, base).get_next(datetime)
        return fire.timestamp()

    def due_times(self, now: float) -> list[float]:
        """Every due time from ``next_run_at`` up to ``now`` (at most MAX_CATCH_UP_RUNS)."""
        times: list[float] = []
        t = self.next_run_at
        while t is not None and t <= now and len(times) < MAX_CATCH_UP_RUNS:
            times.append(t)
            t = self.next_after(t)
        return times

    def fires(self, now: float, *, grace: float = MISFIRE_GRACE) -> list[float]:
        """The due times to enqueue now, by the catch-up policy.

        ``coalesce``: the latest due time only; ``all``: each of them; ``skip``: the latest
        only if it is not older than ``grace`` seconds.
        """
        if self.state is not ScheduleState.ACTIVE:
            return []
        due = self.due_times(now)
        if not due:
            return []
        if self.catch_up is CatchUp.ALL:
            return due
        if self.catch_up is CatchUp.SKIP:
            return [due[-1]] if now - due[-1] <= grace else []
        return [due[-1]]

    def is_due(self, now: float) -> bool:
        """True when an active schedule has a due time at or before ``now``."""
        return (
            self.state is ScheduleState.ACTIVE
            and self.next_run_at is not None
            and self.next_run_at <= now
        )

    def advanced(self, now: float) -> Schedule:
        """A copy moved past ``now``: what ``claim_due`` stores for a due schedule."""
        fired = self.fires(now)
        due = self.due_times(now)
        return msgspec.structs.replace(
            self,
            next_run_at=self.next_after(now),
            # a skipped one-shot records its due time too, so it is never re-armed
            last_run_at=fired[-1] if fired else (due[-1] if due else self.last_run_at),
            run_count=self.run_count + len(fired),
        )

    # --- state ---------------------------------------------------------------------

    def paused(self) -> Schedule:
        """A paused copy (due times keep accruing for the catch-up policy)."""
        return msgspec.structs.replace(self, state=ScheduleState.PAUSED)

    def resumed(self) -> Schedule:
        """An active copy."""
        return msgspec.structs.replace(self, state=ScheduleState.ACTIVE)

    @property
    def finished(self) -> bool:
        """True when the schedule will never fire again (a one-shot that ran)."""
        return self.next_run_at is None

    def fire_id(self, fire_time: float) -> str:
        """The task id of the run for ``fire_time``: one task per (schedule, due time)."""
        return f"sched-{self.id}-{round(fire_time * 1000):013d}"
