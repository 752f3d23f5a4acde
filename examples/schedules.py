"""Schedules: interval, cron and one-shot; pause and resume; catch-up.

Run: ``python examples/schedules.py`` (about ten seconds: it waits for real due times).
A worker fires schedules (``omniq scheduler`` does it alone); each due time fires once,
however many workers run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from omniq import OmniQ

oq = OmniQ()


@oq.task
def tick(label: str) -> str:
    """What the schedules run."""
    return f"{label} at {datetime.now(UTC):%H:%M:%S}"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``check()`` until it is true; fail loudly after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def runs(schedule_id: str) -> int:
    """How many times a schedule has fired."""
    s = oq.get_schedule_sync(schedule_id)
    return s.run_count if s else 0


def main() -> None:
    """Create schedules, let a worker fire them, pause and resume one."""
    with oq:
        every = oq.schedule_sync(tick, args=("interval",), interval=1.0, catch_up="skip")
        nightly = oq.schedule_sync(tick, args=("cron",), cron="0 3 * * *", timezone="Europe/Berlin")
        once = oq.schedule_sync(tick, args=("one-shot",), at=time.time() + 1)
        nxt = oq.get_schedule_sync(nightly)
        assert nxt is not None and nxt.next_run_at is not None
        print("cron next run (UTC):", datetime.fromtimestamp(nxt.next_run_at, UTC))

        with oq.start_worker_sync():
            wait_for("two interval runs", lambda: runs(every) >= 2)
            wait_for("the one-shot run", lambda: runs(once) == 1)
            print("interval fired at least twice; one-shot fired once")

            oq.pause_schedule_sync(every)
            paused_at = runs(every)
            time.sleep(2.5)  # due times pass while it is paused
            print("runs while paused:", runs(every) - paused_at)

            oq.resume_schedule_sync(every)  # catch_up="skip": missed due times are dropped
            wait_for("a run after resume", lambda: runs(every) > paused_at)
            print("resumed: fired again")

        for s in oq.list_schedules_sync():
            left = "done" if s.next_run_at is None else s.state.value
            print(f"schedule {s.args[0]}: {left}")
            oq.delete_schedule_sync(s.id)


if __name__ == "__main__":
    main()
