"""The operator's ``omniq`` commands, in process against SQLite in a temporary directory:
enqueue by name, --wait, worker, status, tasks/failed/queues/info/workers, schedules by
id prefix, events, --json everywhere, 80-column tables and one-line errors."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import cli
from omniq.config import logging as omniq_logging
from omniq.plugins import reset_plugin_manager

APP = textwrap.dedent(
    """
    from omniq import OmniQ

    oq = OmniQ()

    @oq.task(queue="math", retries=2, priority=3)
    def add(x: int, y: int) -> int:
        return x + y

    @oq.task(queue="math")
    def boom() -> None:
        raise ValueError("kaboom")

    @oq.task(queue="slow")
    def nap(seconds: float) -> float:
        return seconds
    """
)


class Cli:
    """Runs ``omniq`` in process with a fresh app module each time."""

    def __init__(self, capsys: pytest.CaptureFixture[str], app: str) -> None:
        self.capsys = capsys
        self.app = app

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        sys.modules.pop(self.app, None)
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, f"omniq {' '.join(argv)} exited {code}: {err}"
        return out

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--json"))


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("omniq")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)
    omniq_logging._applied = False


@pytest.fixture
def omniq(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Cli]:
    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_TYPE", "sqlite")
    monkeypatch.setenv("OMNIQ_EVENT_STORAGE_TYPE", "sqlite")
    monkeypatch.setenv("OMNIQ_WORKER_STATS_INTERVAL", "none")
    monkeypatch.chdir(tmp_path)
    name = f"cliapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_plugin_manager()
    yield Cli(capsys, name)
    sys.modules.pop(name, None)
    reset_plugin_manager()


def assert_fits_80(out: str) -> None:
    wide = [line for line in out.splitlines() if len(line) > 80]
    assert not wide, f"lines wider than 80 columns: {wide}"


def enqueue(omniq: Cli, *argv: str) -> str:
    return omniq.ok("enqueue", "-A", f"{omniq.app}:oq", *argv).strip()


def work(omniq: Cli, *queues: str) -> str:
    return omniq.ok("worker", "-A", f"{omniq.app}:oq", "-Q", ",".join(queues), "--burst")


# --- enqueue ------------------------------------------------------------------------------------


def test_enqueue_by_bare_name_uses_the_registered_task_and_its_defaults(omniq: Cli) -> None:
    task_id = enqueue(omniq, "add", "3", "4")
    task = omniq.json("tasks", "show", "-A", f"{omniq.app}:oq", task_id)
    assert task["func"] == f"{omniq.app}:add", "the registered name, not the bare one"
    assert (task["queue"], task["retries"], task["priority"]) == ("math", 2, 3)
    assert "1 task processed, 0 failed" in work(omniq, "math")
    shown = omniq.json("status", task_id)
    assert shown["status"] == "success" and shown["result"]["result"] == 7


def test_enqueue_options_override_the_decorator(omniq: Cli) -> None:
    task_id = enqueue(omniq, "add", "1", "2", "-Q", "other", "-p", "9")
    task = omniq.json("tasks", "show", task_id)
    assert (task["queue"], task["priority"], task["retries"]) == ("other", 9, 2)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nope", "1"], "no task 'nope' is registered"),
        (["add", "1"], "missing a required argument: 'y'"),
        (["add", "1", "2", "3"], "too many positional arguments"),
        (["add", "1", "--kwargs", "[1]"], "--kwargs must be a JSON object"),
    ],
)
def test_enqueue_refuses_bad_calls_in_one_line(omniq: Cli, argv: list[str], expected: str) -> None:
    code, out, err = omniq("enqueue", "-A", f"{omniq.app}:oq", *argv)
    assert code == 2 and out == ""
    assert expected in err and err.count("\n") == 1, err
    assert omniq.json("tasks", "list") == [], "nothing was enqueued"


def test_enqueue_a_bare_name_without_app_is_refused(omniq: Cli) -> None:
    code, _, err = omniq("enqueue", "add", "1", "2")
    assert code == 2 and "--app" in err and err.count("\n") == 1


def test_wait_timeout_is_one_line(omniq: Cli) -> None:
    code, out, err = omniq("enqueue", "-A", f"{omniq.app}:oq", "add", "1", "2", "--wait", "0.2")
    assert code == 1
    assert len(out.split()) == 1, "the task id is printed first"
    assert "no result within 0.2 s" in err and "pending" in err
    assert "Traceback" not in err and err.count("\n") == 1, err


# --- worker -------------------------------------------------------------------------------------


def test_worker_refuses_zero_concurrency(omniq: Cli) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["worker", "-c", "0"])
    assert e.value.code == 2
    assert "expected an integer >= 1" in omniq.capsys.readouterr().err


def test_worker_banner_counts_in_words(omniq: Cli) -> None:
    enqueue(omniq, "add", "1", "2")
    out = work(omniq, "math")
    assert "worker stopped: 1 task processed, 0 failed" in out
    enqueue(omniq, "add", "1", "2")
    enqueue(omniq, "boom")
    assert "2 tasks processed, 1 failed" in work(omniq, "math")


# --- status / tasks show ------------------------------------------------------------------------


def test_status_keeps_the_traceback_out_of_the_table(omniq: Cli) -> None:
    task_id = enqueue(omniq, "boom")
    work(omniq, "math")
    out = omniq.ok("status", task_id)
    table, _, after = out.partition("traceback:")
    assert_fits_80(table)  # the traceback below it keeps its own lines
    assert "ValueError: kaboom" in table  # the error, on one line
    assert "Traceback (most recent call last)" not in table
    assert "raise ValueError" in after
    full = omniq.ok("tasks", "show", task_id)
    assert "args" in full and "()" in full  # tasks show adds the arguments


def test_unknown_task_is_one_line(omniq: Cli) -> None:
    for argv in (["status", "nope"], ["tasks", "show", "nope"]):
        code, out, err = omniq(*argv)
        assert code == 2 and out == "" and err == "error: no task with id nope\n"


def test_inspect_is_gone() -> None:
    cli.build_parser()  # loads every command module
    assert ("inspect",) not in cli.COMMANDS, "inspect only duplicated status"


# --- tasks list / cancel / retry ----------------------------------------------------------------


def test_tasks_list_is_newest_first_with_filters_and_limit(omniq: Cli) -> None:
    ids = [enqueue(omniq, "add", str(i), "1") for i in range(4)]
    other = enqueue(omniq, "nap", "0")
    listed = omniq.json("tasks", "list")
    assert [t["id"] for t in listed] == [other, *reversed(ids)]
    assert [t["id"] for t in omniq.json("tasks", "list", "-n", "2")] == [other, ids[-1]]
    assert [t["id"] for t in omniq.json("tasks", "list", "-Q", "slow")] == [other]
    assert [t["id"] for t in omniq.json("tasks", "list", "--name", "nap")] == [other]
    by_full_name = omniq.json("tasks", "list", "--name", f"{omniq.app}:add", "-n", "1")
    assert [t["id"] for t in by_full_name] == [ids[-1]]
    assert omniq.json("tasks", "list", "-s", "failed") == []
    out = omniq.ok("tasks", "list")
    assert_fits_80(out)
    for task_id in (other, *ids):
        assert task_id in out, "ids are shown whole"


def test_tasks_list_bad_status_is_a_usage_error(omniq: Cli) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["tasks", "list", "-s", "done"])
    assert e.value.code == 2
    assert "expected one of pending" in omniq.capsys.readouterr().err


def test_cancel_then_retry(omniq: Cli) -> None:
    task_id = enqueue(omniq, "add", "1", "2")
    assert omniq.ok("tasks", "cancel", task_id) == f"{task_id}: cancelled\n"
    assert omniq.json("status", task_id)["status"] == "cancelled"
    code, _, err = omniq("tasks", "cancel", task_id, "nope")
    assert code == 1
    assert "is cancelled: only pending, waiting or running" in err
    assert "no task with id nope" in err
    assert omniq.json("tasks", "retry", task_id) == {"requeued": [task_id], "errors": {}}
    assert omniq.json("status", task_id)["status"] == "pending"
    code, _, err = omniq("tasks", "retry", task_id)
    assert code == 1 and "not ended" in err and err.count("\n") == 1
    work(omniq, "math")
    assert omniq.json("status", task_id)["result"]["result"] == 3


# --- failed -------------------------------------------------------------------------------------


def test_failed_list_and_requeue(omniq: Cli) -> None:
    bad = [enqueue(omniq, "boom") for _ in range(3)]
    good = enqueue(omniq, "add", "1", "1")
    work(omniq, "math")
    failed = omniq.json("failed", "list")
    assert [t["id"] for t in failed] == list(reversed(bad))
    assert {t["error"] for t in failed} == {"ValueError: kaboom"}
    out = omniq.ok("failed", "list")
    assert_fits_80(out)
    assert "ValueError: kaboom" in out and good not in out
    missing = [b for b in bad if b not in out]
    assert not missing, f"ids must be shown whole at 80 columns (to copy): {missing}\n{out}"
    assert omniq.ok("failed", "requeue", bad[0]) == f"{bad[0]}: requeued\n"
    assert [t["id"] for t in omniq.json("failed", "list")] == [bad[2], bad[1]]
    assert omniq.json("failed", "requeue", "--all")["requeued"] == [bad[1], bad[2]]
    assert omniq.json("failed", "list") == []
    code, _, err = omniq("failed", "requeue")
    assert code == 2 and "--all" in err


# --- queues purge -------------------------------------------------------------------------------


def test_purge_asks_unless_yes(omniq: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        enqueue(omniq, "add", "1", "1")
    slow = enqueue(omniq, "nap", "0")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code, _, err = omniq("queues", "purge", "math")
    assert code == 2 and "pass --yes" in err and "3 tasks" in err
    assert len(omniq.json("tasks", "list", "-Q", "math")) == 3
    assert omniq.ok("queues", "purge", "math", "--yes") == "queue 'math': deleted 3 tasks\n"
    assert [t["id"] for t in omniq.json("tasks", "list")] == [slow]
    assert omniq.json("queues", "purge", "--all", "-y") == {"queue": None, "deleted": 1}


def test_pause_and_resume_queues(omniq: Cli) -> None:
    assert omniq.json("queues", "paused") == {"paused": []}
    out = omniq.ok("queues", "pause", "math", "slow")
    assert "math, slow: paused" in out and "paused now: math, slow" in out
    first = enqueue(omniq, "add", "2", "3")
    work(omniq, "math")  # a burst worker whose only queue is paused claims nothing
    assert omniq.json("tasks", "show", first)["status"] == "pending"
    assert omniq.json("queues", "resume", "math") == {"paused": ["slow"]}
    work(omniq, "math")
    assert omniq.json("tasks", "show", first)["status"] == "success"
    assert omniq.ok("queues", "paused") == "slow\n"


# --- info / workers -----------------------------------------------------------------------------


def test_info_counts_per_queue_and_status(omniq: Cli) -> None:
    enqueue(omniq, "add", "1", "1")
    enqueue(omniq, "boom")
    enqueue(omniq, "nap", "0")
    work(omniq, "math")
    info = omniq.json("info")
    assert info["queues"]["math"]["success"] == 1
    assert info["queues"]["math"]["failed"] == 1
    assert info["queues"]["slow"]["pending"] == 1
    out = omniq.ok("info")
    assert_fits_80(out)
    assert "math" in out and "slow" in out


def test_workers_lists_a_live_worker(omniq: Cli) -> None:
    from omniq.core import OmniQ

    oq = OmniQ()
    with oq, oq.start_worker_sync(queues=["math", "slow"]) as handle:
        deadline = time.monotonic() + 15
        listed: list[dict[str, Any]] = []
        while not listed:
            assert time.monotonic() < deadline, "the worker never appeared in omniq workers"
            code, out, err = omniq("workers", "--json")
            if code == 2 and "keeps no worker registry" in err:
                pytest.skip("this backend keeps no worker registry yet")
            assert code == 0, err
            listed = json.loads(out)
        (worker,) = listed
        assert worker["id"] == handle.worker.id and worker["queues"] == ["math", "slow"]
        assert worker["pid"] == os.getpid()
        table = omniq.ok("workers")
        assert_fits_80(table)
        assert "math,slow" in table
        info = omniq.json("info")
        assert [w["id"] for w in info["workers"]] == [handle.worker.id]


# --- schedules ----------------------------------------------------------------------------------


def _schedules(omniq: Cli, n: int) -> list[str]:
    from omniq.core import OmniQ

    oq = OmniQ()
    with oq:
        return [oq.schedule_sync("m:f", interval=60 + i) for i in range(n)]


def test_schedules_by_unique_prefix(omniq: Cli) -> None:
    first, second = _schedules(omniq, 2)
    listed = omniq.json("schedules", "list")
    assert {s["id"] for s in listed} == {first, second}
    out = omniq.ok("schedules", "list")
    assert_fits_80(out)
    assert first in out and second in out, "ids are shown whole"
    common = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)]
    code, _, err = omniq("schedules", "pause", common)
    assert code == 2 and "ambiguous" in err and err.count("\n") == 1
    prefix = first[: len(common) + 1]
    assert omniq.ok("schedules", "pause", prefix) == f"schedule {first}: paused\n"
    states = {s["id"]: s["state"] for s in omniq.json("schedules", "list")}
    assert states == {first: "paused", second: "active"}
    assert omniq.ok("schedules", "resume", prefix) == f"schedule {first}: resumed\n"
    assert omniq.ok("schedules", "delete", second) == f"schedule {second}: deleted\n"
    code, _, err = omniq("schedules", "delete", "zzz")
    assert code == 2 and err == "error: no schedule with id or id prefix 'zzz'\n"
    assert [s["id"] for s in omniq.json("schedules", "list", "-n", "1")] == [first]


# --- events -------------------------------------------------------------------------------------


def test_events_show_the_newest_and_json(omniq: Cli) -> None:
    ids = [enqueue(omniq, "add", str(i), "1") for i in range(5)]
    events = omniq.json("events", "-n", "2")
    assert [e["task_id"] for e in events] == ids[-2:], "the two newest, oldest of them first"
    assert {e["event_type"] for e in events} == {"enqueued"}
    out = omniq.ok("events", "-n", "3")
    assert_fits_80(out)
    assert ids[-1] in out and ids[0] not in out


def test_events_follow_does_not_replay_history(omniq: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    ids = [enqueue(omniq, "add", str(i), "1") for i in range(4)]
    real_sleep = asyncio.sleep
    calls = 0

    async def one_round(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise KeyboardInterrupt  # stop following after two polls
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", one_round)
    code, out, _ = omniq("events", "-n", "1", "--follow", "--json")
    assert code == 130
    printed = [json.loads(line)["task_id"] for line in out.splitlines()]  # JSON lines
    assert printed == [ids[-1]], f"history replayed: {printed}"


# --- the command line as a whole ----------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _parsers(sub):
                    yield f"{name} {inner}", subsub


def test_every_option_has_help() -> None:
    parser = cli.build_parser()
    missing = [
        f"omniq {name} {'/'.join(a.option_strings) or a.dest}"
        for name, sub in _parsers(parser)
        for a in sub._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and not (a.help or "").strip()
    ]
    assert not missing, f"options without help text: {missing}"


def test_every_listing_command_has_json() -> None:
    parser = cli.build_parser()
    listings = {
        "backends", "config show", "status", "events", "info", "workers",
        "schedules list", "tasks list", "tasks show", "failed list",
    }  # fmt: skip
    found = {
        name: any("--json" in a.option_strings for a in sub._actions)
        for name, sub in _parsers(parser)
    }
    assert {name for name in listings if not found.get(name)} == set()


def test_short_options() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["worker", "-A", "m:oq", "-Q", "a,b", "-c", "3"])
    assert (args.app, args.queues, args.concurrency) == ("m:oq", ["a", "b"], 3)
    args = parser.parse_args(["enqueue", "-A", "m:oq", "-Q", "q", "f"])
    assert (args.app, args.queue) == ("m:oq", "q")


def test_loglevel_option_in_either_position() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["--loglevel", "debug", "backends"]).loglevel == "DEBUG"
    assert parser.parse_args(["backends", "--loglevel", "warn"]).loglevel == "WARNING"
    assert parser.parse_args(["backends"]).loglevel is None


class DriverConnectionError(Exception):
    """Like redis.exceptions.ConnectionError: not a builtin ConnectionError."""


DriverConnectionError.__name__ = "ConnectionError"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "error: cannot reach the store"),
        (DriverConnectionError("Error 111 connecting"), "error: cannot reach the store"),
        (RuntimeError("driver bug"), "error: builtins.RuntimeError: driver bug"),
    ],
)
def test_unexpected_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], error: Exception, expected: str
) -> None:
    @cli.command("zz-test-raise", help="raise an error")
    def explode(args: argparse.Namespace, console: Any) -> int:
        raise error

    try:
        code = cli.main(["zz-test-raise"])
    finally:
        cli.COMMANDS.pop(("zz-test-raise",))
    out, err = capsys.readouterr()
    assert code in (1, 2) and out == ""
    assert err.startswith(expected) and err.count("\n") == 1, err


# --- demo ---------------------------------------------------------------------------------------


def test_demo_points_to_its_code_and_reports_real_statuses(omniq: Cli) -> None:
    out = omniq.ok("demo")
    assert "omniq/demo.py" in out.replace(os.sep, "/")
    assert "success 200" in out and "success 50" in out
    assert "bulk work: 250 tasks in" in out
    assert "deliberate waits" in out and "schedule now paused" in out


# --- setup commands at 80 columns ---------------------------------------------------------------


def test_backends_and_config_fit_80_columns(omniq: Cli) -> None:
    out = omniq.ok("backends")
    assert_fits_80(out)
    assert "omniq-backend-sqlite" in out, "package names are not cut"
    shown = omniq.ok("config", "show")
    assert_fits_80(shown)
    assert "sqlite:///" in shown, "the URL in effect, not a placeholder"


def test_logging_settings_apply_in_the_command(omniq: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_LOG_LEVEL", "ERROR")
    monkeypatch.setenv("OMNIQ_COMPONENT_LOG_LEVELS", '{"worker": "DEBUG"}')
    omniq.ok("backends", "--json")
    assert logging.getLogger("omniq").level == logging.ERROR
    assert logging.getLogger("omniq.worker").level == logging.DEBUG
    omniq.ok("backends", "--json", "--loglevel", "warning")
    assert logging.getLogger("omniq").level == logging.WARNING
    assert logging.getLogger("omniq.worker").level == logging.DEBUG, "components kept"
    logging.getLogger("omniq.worker").setLevel(logging.NOTSET)
