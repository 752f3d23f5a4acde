"""``omniq`` subcommands for looking after a queue: ``info``, ``tasks list/show/cancel/
retry``, ``queues purge``, ``failed list/requeue`` and ``workers``. Registered on
:mod:`omniq.cli`'s command registry when it is imported.

Listings are newest first and honour ``--limit``; every listing has ``--json``; tables
fit 80 columns (ids whole, long cells cut with an ellipsis).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from omniq.cli import (
    EXIT_FAILED,
    GROUPS,
    age,
    command,
    json_flag,
    make_table,
    one_line,
    plain,
    plural,
    print_error,
    short_name,
    write_json,
)
from omniq.cli_engine import app_arg, limit_arg, load_app, print_task, task_details, task_json
from omniq.errors import ConfigurationError, OmniQError, TaskNotFoundError
from omniq.models import Task, TaskStatus

GROUPS["tasks"] = "list, show, cancel or retry tasks"
GROUPS["queues"] = "look after whole queues (purge, pause, resume, paused)"
GROUPS["failed"] = "list failed tasks and re-queue them"

#: Above this many tasks, an operation on each shows a progress bar.
PROGRESS_FROM = 20
#: Statuses shown by ``omniq info``, in lifecycle order.
INFO_STATUSES = (
    TaskStatus.PENDING,
    TaskStatus.WAITING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.EXPIRED,
)


def _status_arg(value: str) -> TaskStatus:
    try:
        return TaskStatus(value.strip().lower())
    except ValueError:
        names = ", ".join(s.value for s in TaskStatus)
        raise argparse.ArgumentTypeError(
            f"invalid status {value!r}; expected one of {names}"
        ) from None


def _filter_args(p: argparse.ArgumentParser, *, status: bool = True) -> None:
    app_arg(p)
    p.add_argument("-Q", "--queue", help="only tasks of this queue")
    if status:
        p.add_argument(
            "-s",
            "--status",
            type=_status_arg,
            help="only tasks in this status: " + ", ".join(s.value for s in TaskStatus),
        )
    p.add_argument(
        "--name",
        metavar="TASK",
        help="only tasks of this task name (full module:qualname, or the bare function name)",
    )
    limit_arg(p, 50)
    json_flag(p)


def _name_matches(func: str, name: str | None) -> bool:
    if not name:
        return True
    if func == name:
        return True
    qualname = func.rpartition(":")[2]
    return name in (qualname, qualname.rpartition(".")[2])


async def find_tasks(
    oq: Any,
    queue: str | None,
    status: TaskStatus | None,
    name: str | None,
    limit: int,
) -> list[Task]:
    """Up to ``limit`` tasks matching the filters, newest first. The store returns the
    newest first; a name filter reads further until ``limit`` match (or none is left)."""
    tq = oq.task_queue
    want = limit if name is None else await tq.count(queue, status)
    if want == 0:
        return []
    tasks: list[Task] = await tq.list(queue, status, want, newest_first=True)
    if status is not None:  # a stored PENDING task past its TTL reads EXPIRED
        tasks = [t for t in tasks if t.effective_status() is status or t.status is status]
    tasks = [t for t in tasks if _name_matches(t.func, name)]
    tasks.sort(key=lambda t: (t.created_at, t.id), reverse=True)
    return tasks[:limit]


def _tasks_table(console: Console, tasks: Sequence[Task], *, errors: bool = False) -> None:
    table = make_table()
    # ids are shown whole on any terminal width: they are what the next command takes
    table.add_column("ID", no_wrap=True, min_width=max((len(t.id) for t in tasks), default=2))
    if errors:
        table.add_column("TASK", overflow="ellipsis", no_wrap=True, max_width=16)
        table.add_column("ERROR", overflow="ellipsis", no_wrap=True, ratio=1, min_width=16)
    else:
        table.add_column("STATUS", no_wrap=True, min_width=9)  # "cancelled" whole
        widest = max((len(t.queue) for t in tasks), default=5)
        table.add_column(
            "QUEUE", overflow="ellipsis", no_wrap=True, min_width=min(widest, 12), max_width=12
        )
        table.add_column("TASK", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("TRY", justify="right", no_wrap=True)
    table.add_column("AGE", justify="right", no_wrap=True)
    now = time.time()
    for t in tasks:
        tries = f"{t.attempt}/{t.retries + 1}"
        if errors:
            func = short_name(t.func)
            table.add_row(t.id, func, one_line(t.error), tries, age(t.created_at, now))
        else:
            status = t.effective_status().value
            func = short_name(t.func)
            table.add_row(t.id, status, t.queue, func, tries, age(t.created_at, now))
    console.print(table)


def _task_row(t: Task) -> dict[str, Any]:
    row: dict[str, Any] = plain(t)
    row["status"] = t.effective_status().value
    return row


def _print_listing(
    console: Console, tasks: list[Task], as_json: bool, *, errors: bool = False
) -> None:
    if as_json:
        write_json([_task_row(t) for t in tasks])
    elif not tasks:
        console.print("no tasks", style="dim")
    else:
        _tasks_table(console, tasks, errors=errors)


# --- omniq info ----------------------------------------------------------------------------


def _info_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument(
        "-Q",
        "--queues",
        metavar="Q1,Q2",
        help="queues to count, comma-separated (default: every queue seen in recent tasks "
        "and live workers)",
    )
    json_flag(p)


async def _known_queues(oq: Any, workers: list[Any]) -> list[str]:
    queues: set[str] = {"default"}
    for w in workers:
        queues.update(w.queues)
    for t in await oq.task_queue.list(None, None, 1000):
        queues.add(t.queue)
    return sorted(queues)


async def _list_workers(oq: Any) -> list[Any] | None:
    """Live workers, or None when the backend keeps no worker registry."""
    try:
        workers: list[Any] = await oq.list_workers()
    except (NotImplementedError, AttributeError):
        return None
    return workers


@command(
    "info",
    help="counts per queue and status, the backend and the live workers",
    configure=_info_args,
)
def _info(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            workers = await _list_workers(oq)
            if args.queues:
                queues = [q.strip() for q in args.queues.split(",") if q.strip()]
            else:
                queues = await _known_queues(oq, workers or [])
            tq = oq.task_queue
            counts = {q: {s.value: await tq.count(q, s) for s in INFO_STATUSES} for q in queues}
        backend = type(tq).__name__
        if args.json:
            write_json(
                {
                    "backend": backend,
                    "queues": counts,
                    "workers": workers,
                }
            )
            return 0
        console.print(f"[bold]backend[/] {backend}", highlight=False)
        table = make_table()
        table.add_column("QUEUE", overflow="ellipsis", no_wrap=True, ratio=1)
        short = {"pending": "PEND", "waiting": "WAIT", "running": "RUN", "success": "OK",
                 "failed": "FAIL", "cancelled": "CANC", "expired": "EXP"}  # fmt: skip
        for s in INFO_STATUSES:
            table.add_column(short[s.value], justify="right", no_wrap=True)
        for q, row in counts.items():
            table.add_row(q, *(str(row[s.value]) for s in INFO_STATUSES))
        console.print(table)
        if workers is None:
            console.print("workers: this backend keeps no worker registry", style="dim")
        else:
            busy = sum(w.running for w in workers)
            console.print(
                f"[bold]workers[/] {len(workers)} live, {plural(busy, 'task')} running "
                "(omniq workers lists them)",
                highlight=False,
            )
        return 0

    return asyncio.run(go())


# --- omniq tasks ...------------------------------------------------------------------------


@command(
    "tasks",
    "list",
    help="list tasks, newest first, by queue, status and name",
    configure=_filter_args,
)
def _tasks_list(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            tasks = await find_tasks(oq, args.queue, args.status, args.name, args.limit)
        _print_listing(console, tasks, args.json)
        return 0

    return asyncio.run(go())


def _show_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("task_id", help="the task's id")
    json_flag(p)


@command(
    "tasks",
    "show",
    help="show everything about a task: arguments, state, result, traceback",
    configure=_show_args,
)
def _tasks_show(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            task, result = await task_details(oq, args.task_id)
        if args.json:
            write_json(task_json(task, result))
        else:
            print_task(console, task, result, full=True)
        return 0

    return asyncio.run(go())


def _ids_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID", help="ids of the tasks")
    json_flag(p)


async def _each(
    console: Console,
    items: Sequence[str],
    action: Any,
    label: str,
    quiet: bool,
) -> list[tuple[str, str | None]]:
    """Run ``action(id)`` for each id; returns ``(id, error or None)`` pairs. Shows a
    progress bar for many ids (on a terminal, and not with --json)."""
    outcomes: list[tuple[str, str | None]] = []
    show = not quiet and len(items) >= PROGRESS_FROM and console.is_terminal
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not show,
    ) as progress:
        bar = progress.add_task(label, total=len(items))
        for item in items:
            try:
                outcomes.append((item, await action(item)))
            except OmniQError as e:
                outcomes.append((item, str(e)))
            progress.advance(bar)
    return outcomes


def _report(
    console: Console, outcomes: list[tuple[str, str | None]], done: str, as_json: bool
) -> int:
    ok = [i for i, err in outcomes if err is None]
    bad = [(i, err) for i, err in outcomes if err is not None]
    if as_json:
        write_json({done: ok, "errors": {i: err for i, err in bad}})
    else:
        for i in ok:
            console.print(f"{i}: {done}", highlight=False)
        for _, err in bad:
            print_error(err or "")
    return 0 if not bad else EXIT_FAILED


@command(
    "tasks",
    "cancel",
    help="cancel tasks: a queued one never runs, a running one is stopped",
    configure=_ids_args,
)
def _tasks_cancel(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:

            async def cancel(task_id: str) -> str | None:
                if await oq.cancel(task_id):
                    return None
                task = await oq.get_task(task_id)
                if task is None:
                    return f"no task with id {task_id}"
                return (
                    f"task {task_id} is {task.effective_status().value}: "
                    "only pending, waiting or running tasks can be cancelled"
                )

            outcomes = await _each(console, args.task_ids, cancel, "cancelling", args.json)
        return _report(console, outcomes, "cancelled", args.json)

    return asyncio.run(go())


async def _requeue(oq: Any, task_id: str) -> str | None:
    try:
        await oq.requeue(task_id)
    except TaskNotFoundError:
        return f"no task with id {task_id}"
    except ValueError as e:  # not final (TaskNotFinalError)
        return str(e)
    return None


@command(
    "tasks",
    "retry",
    help="run ended tasks (failed, cancelled, expired) again with a fresh retry budget",
    configure=_ids_args,
)
def _tasks_retry(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            outcomes = await _each(
                console, args.task_ids, lambda i: _requeue(oq, i), "re-queueing", args.json
            )
        return _report(console, outcomes, "requeued", args.json)

    return asyncio.run(go())


# --- omniq queues purge --------------------------------------------------------------------


def _purge_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("queue", nargs="?", help="the queue whose tasks are deleted")
    target.add_argument("--all", action="store_true", help="delete the tasks of every queue")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    json_flag(p)


@command(
    "queues",
    "purge",
    help="delete every task of a queue (all statuses); asks first unless --yes",
    configure=_purge_args,
)
def _queues_purge(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        queue = None if args.all else args.queue
        what = "every queue" if queue is None else f"queue {queue!r}"
        async with oq:
            n = await oq.task_queue.count(queue, None)
            if n == 0:
                if args.json:
                    write_json({"queue": queue, "deleted": 0})
                else:
                    console.print(f"{what}: no tasks to delete", highlight=False)
                return 0
            if not args.yes:
                if not sys.stdin.isatty():
                    raise ConfigurationError(
                        f"refusing to delete {plural(n, 'task')} of {what} without "
                        "confirmation: pass --yes"
                    )
                answer = console.input(f"delete {plural(n, 'task')} of {what}? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    console.print("nothing deleted")
                    return EXIT_FAILED
            deleted = await oq.task_queue.purge(queue)
        if args.json:
            write_json({"queue": queue, "deleted": deleted})
        else:
            console.print(f"{what}: deleted {plural(deleted, 'task')}", highlight=False)
        return 0

    return asyncio.run(go())


# --- omniq queues pause / resume / paused ------------------------------------------------


def _pause_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("queues", nargs="+", metavar="QUEUE", help="the queues")
    json_flag(p)


async def _set_paused(args: argparse.Namespace, console: Console, pause: bool) -> int:
    oq = load_app(args.app)
    async with oq:
        for q in args.queues:
            await (oq.pause_queue(q) if pause else oq.resume_queue(q))
        paused = sorted(await oq.paused_queues())
    if args.json:
        write_json({"paused": paused})
    else:
        verb = "paused (workers stop claiming within a second)" if pause else "resumed"
        console.print(f"{', '.join(args.queues)}: {verb}", highlight=False)
        console.print(f"paused now: {', '.join(paused) or 'none'}", highlight=False)
    return 0


@command(
    "queues",
    "pause",
    help="stop workers claiming from queues (running tasks finish, enqueues still work)",
    configure=_pause_args,
)
def _queues_pause(args: argparse.Namespace, console: Console) -> int:
    return asyncio.run(_set_paused(args, console, pause=True))


@command(
    "queues", "resume", help="let workers claim from paused queues again", configure=_pause_args
)
def _queues_resume(args: argparse.Namespace, console: Console) -> int:
    return asyncio.run(_set_paused(args, console, pause=False))


def _paused_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    json_flag(p)


@command("queues", "paused", help="list the paused queues", configure=_paused_args)
def _queues_paused(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            paused = sorted(await oq.paused_queues())
        if args.json:
            write_json({"paused": paused})
        else:
            console.print("\n".join(paused) if paused else "no paused queues", highlight=False)
        return 0

    return asyncio.run(go())


# --- omniq failed ... ----------------------------------------------------------------------


def _failed_list_args(p: argparse.ArgumentParser) -> None:
    _filter_args(p, status=False)


@command(
    "failed",
    "list",
    help="list failed tasks, newest first, with their errors",
    configure=_failed_list_args,
)
def _failed_list(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            tasks = await find_tasks(oq, args.queue, TaskStatus.FAILED, args.name, args.limit)
        _print_listing(console, tasks, args.json, errors=True)
        return 0

    return asyncio.run(go())


def _failed_requeue_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="ids of failed tasks")
    p.add_argument(
        "--all", action="store_true", help="every failed task (of --queue / --name, if given)"
    )
    p.add_argument("-Q", "--queue", help="with --all: only failed tasks of this queue")
    p.add_argument("--name", metavar="TASK", help="with --all: only failed tasks of this task")
    json_flag(p)


@command(
    "failed",
    "requeue",
    help="run failed tasks again with a fresh retry budget (ids, or --all)",
    configure=_failed_requeue_args,
)
def _failed_requeue(args: argparse.Namespace, console: Console) -> int:
    if bool(args.task_ids) == bool(args.all):
        raise ConfigurationError("give the ids of failed tasks, or --all (not both)")

    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            ids: list[str] = list(args.task_ids)
            if args.all:
                n = await oq.task_queue.count(args.queue, TaskStatus.FAILED)
                found = await find_tasks(oq, args.queue, TaskStatus.FAILED, args.name, max(n, 1))
                ids = [t.id for t in reversed(found)]  # oldest first, as they failed
            outcomes = await _each(
                console, ids, lambda i: _requeue(oq, i), "re-queueing", args.json
            )
        if args.all and not outcomes and not args.json:
            console.print("no failed tasks", style="dim")
            return 0
        return _report(console, outcomes, "requeued", args.json)

    return asyncio.run(go())


# --- omniq workers -------------------------------------------------------------------------


def _workers_args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    json_flag(p)


@command(
    "workers",
    help="list live workers (their heartbeats in the store): queues, running tasks, counts",
    configure=_workers_args,
)
def _workers(args: argparse.Namespace, console: Console) -> int:
    async def go() -> int:
        oq = load_app(args.app)
        async with oq:
            workers = await _list_workers(oq)
        if workers is None:
            raise ConfigurationError(
                f"{type(oq.task_queue).__name__} keeps no worker registry: live workers "
                "cannot be listed on this backend"
            )
        if args.json:
            write_json(workers)
            return 0
        if not workers:
            console.print("no live workers", style="dim")
            return 0
        now = time.time()
        table = make_table()
        table.add_column("WORKER", overflow="fold", ratio=1)
        table.add_column("QUEUES", overflow="ellipsis", no_wrap=True, max_width=16)
        table.add_column("RUN", justify="right", no_wrap=True)
        table.add_column("DONE", justify="right", no_wrap=True)
        table.add_column("FAIL", justify="right", no_wrap=True)
        table.add_column("UP", justify="right", no_wrap=True)
        table.add_column("SEEN", justify="right", no_wrap=True)
        for w in sorted(workers, key=lambda w: w.started_at, reverse=True):
            table.add_row(
                w.id,
                ",".join(w.queues),
                str(w.running),
                str(w.processed),
                str(w.failed),
                age(w.started_at, now),
                age(w.last_seen, now) + " ago",
            )
        console.print(table)
        return 0

    return asyncio.run(go())
