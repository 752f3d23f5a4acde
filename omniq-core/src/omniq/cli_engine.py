"""``omniq`` subcommands that run or feed queues: worker, scheduler, enqueue, status,
events, schedules, demo. Registered on :mod:`omniq.cli`'s command registry when it is
imported. Shared options and app loading are here too (:mod:`omniq.cli_admin` uses them).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from rich.console import Console
from rich.text import Text

from omniq.cli import (
    EXIT_FAILED,
    GROUPS,
    command,
    fmt_time,
    json_flag,
    make_table,
    one_line,
    plain,
    plural,
    positive_int,
    short_name,
    short_time,
    write_json,
)
from omniq.errors import ConfigurationError, TaskFailedError

GROUPS["schedules"] = "list, pause, resume or delete schedules (by id or unique id prefix)"


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


def app_arg(p: argparse.ArgumentParser) -> None:
    """``-A/--app MODULE:ATTR``."""
    p.add_argument(
        "-A",
        "--app",
        metavar="MODULE:ATTR",
        help="your OmniQ instance, e.g. myapp:oq (registers its tasks; default: an app "
        "built from the OMNIQ_* settings)",
    )


def limit_arg(p: argparse.ArgumentParser, default: int = 50) -> None:
    """``-n/--limit N`` (newest first)."""
    p.add_argument(
        "-n",
        "--limit",
        type=positive_int,
        default=default,
        help=f"show at most this many, newest first (default: {default})",
    )


def _queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise argparse.ArgumentTypeError("expected one or more queue names, comma-separated")
    return queues


def _worker_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument(
        "-Q",
        "--queues",
        type=_queues,
        default=["default"],
        metavar="Q1,Q2",
        help="queues to work, comma-separated, in claim order (default: default)",
    )
    p.add_argument(
        "-w",
        "--worker",
        metavar="TYPE",
        help="executor: async, thread, process, gevent (default: OMNIQ_DEFAULT_WORKER)",
    )
    p.add_argument(
        "-c",
        "--concurrency",
        type=positive_int,
        help="tasks in flight, >= 1 (default: OMNIQ_MAX_WORKERS or the executor's pool size)",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        help="claimed tasks held ready beyond the running ones (default: adaptive; 0: none)",
    )
    p.add_argument("--no-scheduler", action="store_true", help="do not fire schedules here")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (or OMNIQ_METRICS_PORT; "
        "needs pip install 'omniq-core[prometheus]')",
    )
    p.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="interface of the metrics server (default: OMNIQ_METRICS_HOST or 127.0.0.1)",
    )


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return port


def _serve_metrics(args: argparse.Namespace, oq: Any, console: Console) -> Any:
    """The metrics server of ``--metrics-port`` / ``OMNIQ_METRICS_PORT``, or None."""
    port = args.metrics_port
    if port is None and os.environ.get("OMNIQ_METRICS_PORT", "").strip():
        try:
            port = _port(os.environ["OMNIQ_METRICS_PORT"].strip())
        except argparse.ArgumentTypeError as e:
            raise ConfigurationError(f"OMNIQ_METRICS_PORT: {e}") from None
    if port is None:
        return None
    from omniq.observability.prometheus import DEFAULT_HOST, serve_metrics

    host = args.metrics_host or os.environ.get("OMNIQ_METRICS_HOST", "").strip() or DEFAULT_HOST
    server = serve_metrics(oq.plugins, port, host)
    console.print(f"metrics at {server.url}", highlight=False)
    return server


async def _run_worker(args: argparse.Namespace, console: Console) -> int:
    from omniq.workers.runner import make_worker

    oq = load_app(args.app)
    queues: list[str] = args.queues
    options = {} if args.prefetch is None else {"prefetch": args.prefetch}
    worker = make_worker(
        oq, queues, args.concurrency, args.worker, args.burst, not args.no_scheduler, **options
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    from omniq.config import redact_url

    tq = oq.config.task_queue
    backend = tq.type or (redact_url(tq.url) if tq.url else "?")  # never a password
    console.print(
        f"[bold]omniq worker[/] {worker.id} queues={','.join(queues)} "
        f"executor={worker.executor.name} concurrency={worker.concurrency} "
        f"backend={backend}" + (" (burst)" if args.burst else ""),
        highlight=False,
    )
    metrics = _serve_metrics(args, oq, console)
    try:
        async with oq:
            await worker.run()
    finally:
        if metrics is not None:
            metrics.close()
    console.print(
        f"worker stopped: {plural(worker.processed, 'task')} processed, {worker.failed} failed",
        highlight=False,
    )
    if worker.abandoned:
        # threads cannot be stopped, and the interpreter would wait for them at exit:
        # end the process now, which stops them (their leases lapse; they run again)
        console.print(
            f"{plural(len(worker.abandoned), 'task')} still running in threads were stopped "
            "with the process; they run again elsewhere once their leases lapse",
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
            await oq.lifecycle.maintenance(run_scheduler=True)
            try:
                await asyncio.wait_for(stop.wait(), oq.scheduler.interval)
            except TimeoutError:
                pass
    return 0


@command("scheduler", help="run only the scheduler (fires due schedules)", configure=app_arg)
def _scheduler(args: argparse.Namespace, console: Console) -> int:
    return asyncio.run(_run_scheduler(args, console))


# --- omniq enqueue -------------------------------------------------------------------------


def _enqueue_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument(
        "func",
        help="task name: as registered (module:qualname), or the bare function name of a "
        "task registered on --app",
    )
    p.add_argument(
        "args", nargs="*", help="positional arguments, each parsed as JSON, else a string"
    )
    p.add_argument(
        "--kwargs", default="{}", help="keyword arguments as a JSON object: '{\"x\": 1}'"
    )
    p.add_argument(
        "-Q", "--queue", default=None, help="queue to put it in (default: the task's own)"
    )
    p.add_argument(
        "-p",
        "--priority",
        type=int,
        default=None,
        help="higher runs first within a queue (default: the task's own, else 0)",
    )
    p.add_argument("--delay", type=float, default=None, help="seconds before it may run")
    p.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for the result and print it (exit 1 on failure or timeout)",
    )
    json_flag(p)


def _json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def resolve_task_name(oq: Any, name: str, app_given: bool) -> Any:
    """The registered task function for ``name``: its exact registered name, or the
    bare function name (``add`` for ``myapp:add``) when that is unique on the app.
    Raises ConfigurationError naming what is registered otherwise."""
    registry = oq.registry
    if name in registry:
        return registry[name]
    matches = [
        tf
        for key, tf in registry.items()
        if key.rpartition(":")[2] == name or key.rpartition(":")[2].rpartition(".")[2] == name
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(sorted(tf.name for tf in matches))
        raise ConfigurationError(f"task name {name!r} is ambiguous: it matches {names}")
    if not app_given:
        if ":" not in name:
            raise ConfigurationError(
                f"unknown task {name!r}: give --app MODULE:ATTR so its registered tasks "
                "are known, or the full registered name (module:qualname)"
            )
        return oq._as_task_function(name)  # a worker elsewhere may have it; not checked here
    known = ", ".join(sorted(registry)) or "none"
    raise ConfigurationError(f"no task {name!r} is registered on this app; registered: {known}")


def _check_arguments(tf: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(tf.fn)
    except (TypeError, ValueError):  # a builtin without a signature: cannot check
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise ConfigurationError(
            f"wrong arguments for task {tf.name}{sig}: {e}; got args={args!r} kwargs={kwargs!r}"
        ) from None


@command("enqueue", help="enqueue a task by name and print its id", configure=_enqueue_args)
def _enqueue(args: argparse.Namespace, console: Console) -> int:
    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"--kwargs is not valid JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise ConfigurationError("--kwargs must be a JSON object, e.g. '{\"x\": 1}'")
    values = [_json_or_str(a) for a in args.args]

    async def go() -> int:
        oq = load_app(args.app)
        tf = resolve_task_name(oq, args.func, bool(args.app))
        if args.app or args.func in oq.registry:
            _check_arguments(tf, values, kwargs)
        opts = {k: v for k in ("queue", "priority", "delay") if (v := getattr(args, k)) is not None}
        if opts:
            tf = tf.options(**opts)
        async with oq:
            h = await tf.enqueue(*values, **kwargs)
            if args.wait is None:
                if args.json:
                    write_json({"id": h.id, "func": tf.name})
                else:
                    console.print(h.id, highlight=False)
                return 0
            if not args.json:
                console.print(h.id, highlight=False)
            try:
                value = await h.result(timeout=args.wait)
            except TimeoutError:
                status = await oq.status(h.id)
                shown = status.value if status is not None else "unknown"
                _fail_line(
                    f"no result within {args.wait:g} s: task {h.id} is {shown} "
                    "(is a worker running on its queue?)"
                )
                return EXIT_FAILED
            except TaskFailedError as e:
                # the message names the task and how it ended ("task X failed: ...")
                _fail_line(one_line(str(e), 300))
                return EXIT_FAILED
        if args.json:
            write_json({"id": h.id, "func": tf.name, "result": value})
        else:
            console.print(repr(value), highlight=False)
        return 0

    return asyncio.run(go())


def _fail_line(message: str) -> None:
    from omniq.cli import print_error

    print_error(message)


# --- omniq status --------------------------------------------------------------------------


def _status_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("task_id", help="the task's id (as enqueue printed it)")
    json_flag(p)


async def task_details(oq: Any, task_id: str) -> tuple[Any, Any]:
    """The stored task and its result; TaskNotFoundError when neither exists."""
    from omniq.errors import TaskNotFoundError

    task = await oq.get_task(task_id)
    result = await oq.get_result(task_id)
    if task is None and result is None:
        raise TaskNotFoundError(f"no task with id {task_id}", task_id=task_id)
    return task, result


def print_task(console: Console, task: Any, result: Any, *, full: bool) -> None:
    """A task as a two-column table; a traceback is printed after it, never in a cell."""
    table = make_table(show_header=False)
    table.add_column("field", style="bold cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    tid = task.id if task is not None else result.task_id
    table.add_row("id", tid)
    if task is not None:
        table.add_row("task", task.func)
        table.add_row("status", task.effective_status().value)
        table.add_row("queue", task.queue)
        table.add_row("priority", str(task.priority))
        table.add_row("attempt", f"{task.attempt} of {task.retries + 1}")
        if task.worker_id:
            table.add_row("worker", task.worker_id)
        table.add_row("created", fmt_time(task.created_at))
        if full:
            table.add_row("args", repr(tuple(task.args)))
            table.add_row("kwargs", repr(dict(task.kwargs)))
            if task.run_at:
                table.add_row("run at", fmt_time(task.run_at))
            if task.expires_at:
                table.add_row("expires", fmt_time(task.expires_at))
            if task.timeout:
                table.add_row("timeout", f"{task.timeout:g} s")
            if task.schedule_id:
                table.add_row("schedule", task.schedule_id)
            if task.metadata:
                table.add_row("metadata", json.dumps(task.metadata, default=str))
        if task.depends_on:
            table.add_row("depends on", ", ".join(task.depends_on))
        if task.error:
            table.add_row("error", one_line(task.error, 500))
    if result is not None:
        table.add_row("result status", result.status.value)
        if result.result is not None or result.status.value == "success":
            table.add_row("result", repr(result.result))
        if result.error and (task is None or result.error != task.error):
            table.add_row("result error", one_line(result.error, 500))
        if result.duration is not None:
            table.add_row("duration", f"{result.duration * 1000:.1f} ms")
    console.print(table)
    if result is not None and result.traceback:
        console.print(Text("traceback:", style="bold"))
        console.print(Text(result.traceback.rstrip(), style="dim"), soft_wrap=True)


def task_json(task: Any, result: Any) -> dict[str, Any]:
    """A task and its result as one JSON-ready dict."""
    out: dict[str, Any] = {}
    if task is not None:
        out = plain(task)
        out["status"] = task.effective_status().value
    if result is not None:
        out["id"] = result.task_id
        out["result"] = plain(result)
    return out


@command(
    "status",
    help="show a task's state, attempt and result (omniq tasks show adds its arguments)",
    configure=_status_args,
)
def _status(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            task, result = await task_details(oq, args.task_id)
        if args.json:
            write_json(task_json(task, result))
        else:
            print_task(console, task, result, full=False)
        return 0

    return asyncio.run(go())


# --- omniq events --------------------------------------------------------------------------


def _events_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("-t", "--task", dest="task_id", default=None, help="only this task's events")
    limit_arg(p, 20)
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new events (Ctrl-C stops); with --json, one object per line",
    )
    json_flag(p)


def _event_json(e: Any) -> dict[str, Any]:
    out: dict[str, Any] = plain(e)
    return out


def _events_table(console: Console, events: list[Any], header: bool) -> None:
    table = make_table(show_header=header)
    table.add_column("TIME", no_wrap=True)
    table.add_column("EVENT", no_wrap=True, style="bold")
    table.add_column("TASK / SCHEDULE", no_wrap=True)
    table.add_column("DETAIL", overflow="ellipsis", no_wrap=True, ratio=1)
    for e in events:
        detail = " ".join(x for x in (short_name(e.func or ""), one_line(e.message)) if x)
        table.add_row(
            short_time(e.timestamp), e.event_type.value, e.task_id or e.schedule_id or "", detail
        )
    console.print(table)


@command(
    "events",
    help="show task lifecycle events, newest last (the --limit most recent)",
    configure=_events_args,
)
def _events(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            if oq.event_storage is None:
                raise ConfigurationError(
                    "events are off: set OMNIQ_EVENT_STORAGE_TYPE / OMNIQ_EVENT_STORAGE_URL"
                )
            events = (await oq.get_events(task_id=args.task_id))[-args.limit :]
            _show_events(console, events, args.json, header=True, lines=args.follow)
            since = events[-1].timestamp if events else time.time()
            seen = {e.id for e in events}
            while args.follow:
                await asyncio.sleep(0.5)
                new = [
                    e
                    for e in await oq.get_events(task_id=args.task_id, since=since)
                    if e.id not in seen
                ]
                for e in new:
                    seen.add(e.id)
                    since = max(since, e.timestamp)
                if new:
                    _show_events(console, new, args.json, header=False, lines=True)
        return 0

    return asyncio.run(go())


def _show_events(
    console: Console, events: list[Any], as_json: bool, header: bool, lines: bool = False
) -> None:
    if as_json and lines:  # --follow: one JSON object per line, as events come
        for e in events:
            sys.stdout.write(json.dumps(_event_json(e), default=str) + "\n")
        sys.stdout.flush()
    elif as_json:
        write_json([_event_json(e) for e in events])
    elif events:
        _events_table(console, events, header)
    elif header:
        console.print("no events", style="dim")


# --- omniq schedules -----------------------------------------------------------------------


def _schedules_list_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    limit_arg(p, 100)
    json_flag(p)


def _when(s: Any) -> str:
    if s.cron:
        return str(s.cron)
    if s.interval:
        return f"every {s.interval:g}s"
    return f"at {short_time(s.at)}"


@command("schedules", "list", help="list schedules, newest first", configure=_schedules_list_args)
def _schedules_list(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            schedules = await oq.list_schedules()
        schedules.sort(key=lambda s: (s.created_at, s.id), reverse=True)
        schedules = schedules[: args.limit]
        if args.json:
            write_json(schedules)
            return 0
        if not schedules:
            console.print("no schedules", style="dim")
            return 0
        table = make_table()
        table.add_column("ID", no_wrap=True)
        table.add_column("TASK", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("WHEN", overflow="ellipsis", no_wrap=True)
        table.add_column("STATE", no_wrap=True)
        table.add_column("NEXT", no_wrap=True)
        table.add_column("RUNS", justify="right", no_wrap=True)
        for s in schedules:
            table.add_row(
                s.id,
                short_name(s.func),
                _when(s),
                s.state.value,
                short_time(s.next_run_at),
                str(s.run_count),
            )
        console.print(table)
        return 0

    return asyncio.run(go())


def _schedule_id_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("schedule_id", help="the schedule's id, or a unique prefix of it")


async def resolve_schedule_id(oq: Any, given: str) -> str:
    """The full id of the schedule ``given`` names: its id, or a unique prefix of it."""
    schedules = await oq.list_schedules()
    ids: list[str] = [s.id for s in schedules]
    if given in ids:
        return given
    matches = [i for i in ids if i.startswith(given)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigurationError(f"no schedule with id or id prefix {given!r}")
    shown = ", ".join(sorted(matches)[:5]) + (" ..." if len(matches) > 5 else "")
    raise ConfigurationError(
        f"schedule id prefix {given!r} is ambiguous: {len(matches)} schedules match ({shown})"
    )


def _schedule_action(action: str) -> Any:
    def handler(args: argparse.Namespace, console: Console) -> int:
        async def go() -> int:
            oq = load_app(args.app)
            async with oq:
                sid = await resolve_schedule_id(oq, args.schedule_id)
                ok = await getattr(oq, f"{action}_schedule")(sid)
            if not ok:
                raise ConfigurationError(f"no schedule with id {sid}")
            console.print(f"schedule {sid}: {action}d", highlight=False)
            return 0

        return asyncio.run(go())

    return handler


for _action in ("pause", "resume", "delete"):
    command(
        "schedules",
        _action,
        help=f"{_action} a schedule (by id or unique id prefix)",
        configure=_schedule_id_args,
    )(_schedule_action(_action))


@command("demo", help="the quick start: enqueue, work and print results on the default backend")
def _demo(args: argparse.Namespace, console: Console) -> int:
    from omniq.demo import run_demo

    if getattr(args, "loglevel", None) is None:  # the flaky task's retry is expected: quiet
        logging.getLogger("omniq.worker").setLevel(logging.ERROR)

    return asyncio.run(run_demo(console))
