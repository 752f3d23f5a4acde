"""``omniq`` subcommands that talk to queues: worker, scheduler, enqueue, status, events,
schedules, demo. Registered on :mod:`omniq.cli`'s command registry when it is imported."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from omniq.cli import GROUPS, command
from omniq.errors import ConfigurationError

GROUPS["schedules"] = "list, pause, resume or delete schedules"


def load_app(spec: str | None) -> Any:
    """The AsyncOmniQ of ``--app MODULE:ATTR`` (an OmniQ is unwrapped), or one from settings."""
    from omniq.core import AsyncOmniQ, OmniQ

    if not spec:
        return AsyncOmniQ()
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(f"--app {spec!r}: cannot import {module_name!r}: {e}") from e
    obj = getattr(module, attr or "oq", None)
    if isinstance(obj, OmniQ):
        return obj.async_
    if isinstance(obj, AsyncOmniQ):
        return obj
    raise ConfigurationError(
        f"--app {spec!r}: expected MODULE:ATTR naming an OmniQ or AsyncOmniQ instance, "
        f"found {type(obj).__name__}"
    )


def _app_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", help="MODULE:ATTR of your OmniQ instance (registers its tasks)")


def _worker_args(p: argparse.ArgumentParser) -> None:
    _app_arg(p)
    p.add_argument("--queues", default="default", help="comma-separated, in claim order")
    p.add_argument("--worker", choices=None, help="async, thread, process, gevent")
    p.add_argument("--concurrency", type=int, help="tasks in flight (default: max_workers)")
    p.add_argument(
        "--prefetch",
        type=int,
        help="claimed tasks held ready beyond the running ones (default: adaptive; 0: none)",
    )
    p.add_argument("--no-scheduler", action="store_true", help="do not fire schedules here")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")


async def _run_worker(args: argparse.Namespace, console: Console) -> int:
    from omniq.workers.runner import make_worker

    oq = load_app(args.app)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    options = {} if args.prefetch is None else {"prefetch": args.prefetch}
    worker = make_worker(
        oq, queues, args.concurrency, args.worker, args.burst, not args.no_scheduler, **options
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    console.print(
        f"[bold]omniq worker[/] {worker.id} queues={queues} executor={worker.executor.name} "
        f"concurrency={worker.concurrency}" + (" (burst)" if args.burst else ""),
        highlight=False,
    )
    async with oq:
        await worker.run()
    console.print(f"worker stopped: {worker.processed} tasks processed, {worker.failed} failed")
    if worker.abandoned:
        # threads cannot be stopped, and the interpreter would wait for them at exit:
        # end the process now, which stops them (their leases lapse; they run again)
        console.print(
            f"{len(worker.abandoned)} task(s) still running in threads were stopped with "
            "the process; they run again elsewhere once their leases lapse",
            highlight=False,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


@command(
    "worker",
    help="run a worker until SIGTERM/SIGINT (or until idle with --burst)",
    configure=_worker_args,
)
def _worker(args: argparse.Namespace, console: Console) -> int:
    return asyncio.run(_run_worker(args, console))


async def _run_scheduler(args: argparse.Namespace, console: Console) -> int:
    oq = load_app(args.app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    console.print("[bold]omniq scheduler[/] running (safe next to schedulers in workers)")
    async with oq:
        while not stop.is_set():
            await oq.maintenance(run_scheduler=True)
            try:
                await asyncio.wait_for(stop.wait(), oq.scheduler.interval)
            except TimeoutError:
                pass
    return 0


@command("scheduler", help="run only the scheduler (fires due schedules)", configure=_app_arg)
def _scheduler(args: argparse.Namespace, console: Console) -> int:
    return asyncio.run(_run_scheduler(args, console))


def _enqueue_args(p: argparse.ArgumentParser) -> None:
    _app_arg(p)
    p.add_argument("func", help="task name, module:qualname")
    p.add_argument("args", nargs="*", help="positional arguments (JSON, else strings)")
    p.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    p.add_argument("--queue", default=None)
    p.add_argument("--priority", type=int, default=None)
    p.add_argument("--delay", type=float, default=None, help="seconds before it may run")
    p.add_argument("--wait", type=float, default=None, help="wait this long for the result")


def _json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


@command("enqueue", help="enqueue a task by name", configure=_enqueue_args)
def _enqueue(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            tf = oq._as_task_function(args.func)
            opts = {
                k: v for k in ("queue", "priority", "delay") if (v := getattr(args, k)) is not None
            }
            if opts:
                tf = tf.options(**opts)
            h = await tf.enqueue(*[_json_or_str(a) for a in args.args], **json.loads(args.kwargs))
            console.print(h.id)
            if args.wait is not None:
                console.print(repr(await h.result(timeout=args.wait)))
        return 0

    return asyncio.run(go())


def _status_args(p: argparse.ArgumentParser) -> None:
    _app_arg(p)
    p.add_argument("task_id")


def _fmt_time(ts: float | None) -> str:
    return (
        "" if ts is None else datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")
    )


def _show_status(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            task = await oq.get_task(args.task_id)
            result = await oq.get_result(args.task_id)
        if task is None and result is None:
            raise ConfigurationError(f"no task with id {args.task_id}")
        table = Table(title=f"task {args.task_id}", show_header=False)
        if task is not None:
            for k in (
                "func",
                "queue",
                "priority",
                "status",
                "attempt",
                "retries",
                "worker_id",
                "error",
                "depends_on",
            ):
                table.add_row(k, str(getattr(task, k)))
            table.add_row("created", _fmt_time(task.created_at))
        if result is not None:
            table.add_row("result status", result.status.value)
            table.add_row("result", repr(result.result))
            if result.duration is not None:
                table.add_row("duration", f"{result.duration * 1000:.1f} ms")
            if result.traceback:
                table.add_row("traceback", result.traceback)
        console.print(table)
        return 0

    return asyncio.run(go())


command("status", help="show a task's state and result", configure=_status_args)(_show_status)
command("inspect", help="same as status", configure=_status_args)(_show_status)


def _events_args(p: argparse.ArgumentParser) -> None:
    _app_arg(p)
    p.add_argument("--task", dest="task_id", default=None)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--follow", action="store_true", help="keep printing new events")


@command("events", help="show task lifecycle events", configure=_events_args)
def _events(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            if oq.event_storage is None:
                raise ConfigurationError(
                    "events are off: set OMNIQ_EVENT_STORAGE_TYPE / OMNIQ_EVENT_STORAGE_URL"
                )
            events = await oq.get_events(task_id=args.task_id, limit=args.limit)
            for e in events:
                _print_event(console, e)
            since = events[-1].timestamp if events else time.time()
            seen = {e.id for e in events}
            while args.follow:
                await asyncio.sleep(0.5)
                for e in await oq.get_events(task_id=args.task_id, since=since):
                    if e.id not in seen:
                        seen.add(e.id)
                        since = e.timestamp
                        _print_event(console, e)
        return 0

    return asyncio.run(go())


def _print_event(console: Console, e: Any) -> None:
    console.print(
        f"{_fmt_time(e.timestamp)} [bold]{e.event_type.value:>16}[/] "
        f"{e.task_id or e.schedule_id or ''} {e.func or ''} {e.message or ''}",
        highlight=False,
    )


@command("schedules", "list", help="list schedules", configure=_app_arg)
def _schedules_list(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            schedules = await oq.list_schedules()
        table = Table(title="schedules")
        for col in ("id", "func", "when", "state", "next run", "runs"):
            table.add_column(col)
        for s in schedules:
            when = s.cron or (f"every {s.interval:g} s" if s.interval else f"at {_fmt_time(s.at)}")
            table.add_row(
                s.id, s.func, when, s.state.value, _fmt_time(s.next_run_at), str(s.run_count)
            )
        console.print(table)
        return 0

    return asyncio.run(go())


def _schedule_id_args(p: argparse.ArgumentParser) -> None:
    _app_arg(p)
    p.add_argument("schedule_id")


def _schedule_action(action: str) -> Any:
    def handler(args: argparse.Namespace, console: Console) -> int:
        async def go() -> int:
            oq = load_app(args.app)
            async with oq:
                ok = await getattr(oq, f"{action}_schedule")(args.schedule_id)
            if not ok:
                raise ConfigurationError(f"no schedule with id {args.schedule_id}")
            console.print(f"schedule {args.schedule_id}: {action}d")
            return 0

        return asyncio.run(go())

    return handler


for _action in ("pause", "resume", "delete"):
    command("schedules", _action, help=f"{_action} a schedule", configure=_schedule_id_args)(
        _schedule_action(_action)
    )


@command("demo", help="the quick start: enqueue, work and print results on the default backend")
def _demo(args: argparse.Namespace, console: Console) -> int:
    from omniq.demo import run_demo

    return asyncio.run(run_demo(console))
