"""``omniq migrations show|apply``: a backend's schema migrations, from the command line.

Generic: a component takes part when it has the two methods of :class:`Migrating`
(the PostgreSQL backend's components do); they must work on a component that is not
connected, because connecting usually applies the migrations. Components sharing one
store (a bundle's four components on one schema) are shown once. A backend without
them gets a clear message and exit code 0 for ``show`` (nothing to do), 2 for ``apply``.
Registered on :mod:`omniq.cli`'s command registry when imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Protocol, runtime_checkable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from omniq.cli import EXIT_ERROR, GROUPS, command

GROUPS["migrations"] = "show or apply the storage backend's schema migrations"

#: One migration as a backend reports it: version, description, applied?
MigrationState = tuple[int, str, bool]


@runtime_checkable
class Migrating(Protocol):
    """What a component offers for ``omniq migrations`` (duck-typed)."""

    url: str

    async def migration_status(self) -> list[MigrationState]:
        """Every migration this code knows, in order, and whether the store has it."""

    async def apply_migrations(self) -> list[int]:
        """Apply the missing migrations; the versions applied now."""


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", help="MODULE:ATTR of your OmniQ instance (default: the settings)")
    p.add_argument(
        "--url",
        help="the task queue's URL, instead of the app's or the settings' backend "
        "(e.g. postgresql://admin@db/app?schema=omniq)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _targets(args: argparse.Namespace) -> tuple[list[Migrating], list[str]]:
    """The distinct components with migrations, and the names of those without."""
    components: list[Any]
    if args.url:
        from omniq.plugins.resolution import create_component

        components = [create_component("task_queue", url=args.url)]
    else:
        from omniq.cli_engine import load_app

        oq = load_app(args.app)
        components = [
            oq.task_queue, oq.result_storage, oq.event_storage, oq.schedule_storage,
        ]  # fmt: skip
    found: dict[tuple[str, str], Migrating] = {}
    without: list[str] = []
    for c in components:
        if c is None:
            continue
        if isinstance(c, Migrating):
            found.setdefault((type(c).__module__.split(".")[0], str(c.url)), c)
        elif type(c).__name__ not in without:
            without.append(type(c).__name__)
    return list(found.values()), without


async def _run(args: argparse.Namespace, console: Console, apply: bool) -> int:
    targets, without = _targets(args)
    if not targets:
        names = ", ".join(without) or "no component"
        message = (
            f"{names}: this backend has no schema migrations to "
            f"{'apply' if apply else 'show'} (it sets up its storage itself, if it needs any)"
        )
        if args.json:
            _print_json({"stores": [], "message": message})
        else:
            console.print(Text(message, style="yellow"))
        return EXIT_ERROR if apply else 0
    report = []
    for target in targets:
        applied_now = await target.apply_migrations() if apply else []
        states = await target.migration_status()
        report.append((target, applied_now, states))
    if args.json:
        _print_json(
            {
                "stores": [
                    {
                        "component": type(t).__name__,
                        "url": str(t.url),
                        "applied_now": now,
                        "migrations": [
                            {"version": v, "description": d, "applied": a} for v, d, a in states
                        ],
                    }
                    for t, now, states in report
                ]
            }
        )
        return 0
    for target, applied_now, states in report:
        table = Table(title=f"{type(target).__name__} at {target.url}", title_justify="left")
        table.add_column("Version", justify="right")
        table.add_column("State", no_wrap=True)
        table.add_column("Description", overflow="fold")
        for version, description, applied in states:
            state = Text("applied", style="green") if applied else Text("pending", style="yellow")
            if version in applied_now:
                state = Text("applied now", style="bold green")
            table.add_row(str(version), state, description)
        console.print(table)
        if apply:
            console.print(
                f"applied {', '.join(map(str, applied_now))}"
                if applied_now
                else "nothing to apply: up to date",
                highlight=False,
            )
    return 0


@command(
    "migrations", "show", help="list the schema migrations and which are applied", configure=_args
)
def _show(args: argparse.Namespace, console: Console) -> int:
    return asyncio.run(_run(args, console, apply=False))


@command("migrations", "apply", help="apply the missing schema migrations now", configure=_args)
def _apply(args: argparse.Namespace, console: Console) -> int:
    return asyncio.run(_run(args, console, apply=True))
