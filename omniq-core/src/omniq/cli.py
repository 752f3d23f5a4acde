"""The ``omniq`` command line.

Every subcommand is one function registered with :func:`command`; nested commands
(``omniq config show``, later ``omniq schedules list``) name their group first::

    @command("schedules", "list", help="list schedules", configure=_list_args)
    def _schedules_list(args: argparse.Namespace, console: Console) -> int:
        ...
        return 0

A handler prints through the given rich :class:`~rich.console.Console` and returns the
exit code. It imports what it needs inside its body, so ``omniq --help`` stays fast.
An :class:`~omniq.errors.OmniQError` becomes a one-line red message on stderr and exit
code 2 (no traceback); argparse usage errors also exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from omniq import __version__
from omniq.errors import OmniQError

__all__ = ["COMMANDS", "COMMAND_MODULES", "GROUPS", "Command", "build_parser", "command", "main"]

Handler = Callable[[argparse.Namespace, Console], int]
Configure = Callable[[argparse.ArgumentParser], None]
_SubParsers = argparse._SubParsersAction  # argparse gives this type no public name

#: Exit code for errors OmniQ reports (bad settings, unknown backend, ...), as argparse uses.
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """A registered subcommand: its path (``("config", "show")``), help and handler."""

    path: tuple[str, ...]
    help: str
    handler: Handler
    configure: Configure | None = None


#: Registered subcommands by path, in registration order.
COMMANDS: dict[tuple[str, ...], Command] = {}
#: Help texts of command groups (``omniq config ...``).
GROUPS: dict[str, str] = {
    "config": "inspect the effective configuration",
}


def command(
    *path: str, help: str, configure: Configure | None = None
) -> Callable[[Handler], Handler]:
    """Register the decorated function as the subcommand ``omniq PATH...``."""
    if not path:
        raise ValueError("a command needs a name")

    def register(handler: Handler) -> Handler:
        COMMANDS[path] = Command(path=path, help=help, handler=handler, configure=configure)
        return handler

    return register


#: Modules that register more commands when imported (``omniq.cli_engine``: worker,
#: scheduler, enqueue, ...), loaded by :func:`build_parser`; a missing one is skipped.
COMMAND_MODULES: list[str] = ["omniq.cli_engine"]


def _load_command_modules() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but something it imports is missing
                _print_error(f"commands of {name} are unavailable: {e}", label="warning")
        except Exception as e:  # keep `backends` / `config show` usable for diagnosis
            _print_error(
                f"commands of {name} are unavailable: {type(e).__name__}: {e}", label="warning"
            )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every registered command."""
    _load_command_modules()
    parser = argparse.ArgumentParser(
        prog="omniq",
        description="OmniQ: an async-first task queue with pluggable storage backends.",
    )
    parser.add_argument("--version", action="version", version=f"omniq {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    levels: dict[tuple[str, ...], _SubParsers[argparse.ArgumentParser]] = {(): top}

    def subparsers_for(prefix: tuple[str, ...]) -> _SubParsers[argparse.ArgumentParser]:
        found = levels.get(prefix)
        if found is None:
            parent = subparsers_for(prefix[:-1])
            text = GROUPS.get(" ".join(prefix), "")
            group = parent.add_parser(prefix[-1], help=text, description=text)
            found = group.add_subparsers(
                dest="_".join(("command", *prefix)), metavar="COMMAND", required=True
            )
            levels[prefix] = found
        return found

    for cmd in COMMANDS.values():
        sub = subparsers_for(cmd.path[:-1]).add_parser(
            cmd.path[-1], help=cmd.help, description=cmd.help
        )
        if cmd.configure is not None:
            cmd.configure(sub)
        sub.set_defaults(_handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``omniq`` with ``argv`` (default: the process arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args._handler
    try:
        return handler(args, Console())
    except OmniQError as e:
        _print_error(str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED


def _print_error(message: str, *, label: str = "error") -> None:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    line = Text(f"{label}: ", style="bold red")
    line.append(" ".join(message.split()), style="red")
    err.print(line)


def _write_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of a table"
    )


# --- omniq backends -----------------------------------------------------------------------

_COMPONENT_LABELS = {
    "task_queue": "tasks",
    "result_storage": "results",
    "event_storage": "events",
    "schedule_storage": "schedules",
}


@command(
    "backends",
    help="list installed storage backends, their URL schemes and the plugins behind them",
    configure=_json_flag,
)
def _backends(args: argparse.Namespace, console: Console) -> int:
    from omniq.config import redact_url
    from omniq.plugins import COMPONENTS, get_plugin_manager

    pm = get_plugin_manager()
    found = pm.backends()  # before load_errors: a failing omniq_backends() is recorded too
    rows: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "schemes": list(spec.schemes),
            "components": [kind for kind in COMPONENTS if spec.offers(kind)],
            "default_url": None if spec.default_url is None else redact_url(spec.default_url),
            "package": spec.package,
            "plugin": plugin,
            "description": spec.description,
        }
        for spec, plugin in found.values()
    ]
    errors: list[dict[str, str]] = [
        {"plugin": e.name, "source": e.source, "error": e.error} for e in pm.load_errors
    ]
    if args.json:
        _write_json({"backends": rows, "load_errors": errors})
        return 0

    table = Table(title="OmniQ backends", title_justify="left")
    table.add_column("Backend", no_wrap=True)
    table.add_column("Schemes", overflow="fold")
    table.add_column("Components", overflow="fold")
    table.add_column("Default URL", overflow="fold")
    table.add_column("Package", no_wrap=True)
    table.add_column("Plugin", no_wrap=True)
    for row in rows:
        table.add_row(
            Text(row["name"], style="bold cyan"),
            Text(", ".join(f"{s}://" for s in row["schemes"]) or "-"),
            Text(", ".join(_COMPONENT_LABELS[k] for k in row["components"]) or "-"),
            Text(row["default_url"] or "-"),
            Text(row["package"] or "-"),
            Text(row["plugin"]),
        )
    console.print(table)
    console.print(
        Text(
            "Choose one with OMNIQ_TASK_QUEUE_TYPE=NAME, or a URL with its scheme "
            "(OMNIQ_TASK_QUEUE_URL=SCHEME://...).",
            style="dim",
        )
    )
    if errors:
        failed = Table(title="Plugins that failed to load", title_justify="left", style="red")
        for header in ("Plugin", "Source", "Error"):
            failed.add_column(header, overflow="fold")
        for e in errors:
            failed.add_row(Text(e["plugin"]), Text(e["source"]), Text(e["error"], style="red"))
        console.print(failed)
    else:
        console.print(Text("No plugin failed to load.", style="dim"))
    return 0


# --- omniq config show --------------------------------------------------------------------


def _config_show_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="YAML settings file to read (default: the file named by OMNIQ_CONFIG, if any)",
    )
    _json_flag(parser)


_UNSET_COMPONENT = {
    "result_storage": "same backend as task_queue",
    "schedule_storage": "same backend as task_queue",
    "event_storage": "off (events are not stored)",
}


def _component_text(name: str, shown: dict[str, Any] | None) -> Text:
    if shown is None:
        return Text(_UNSET_COMPONENT.get(name, "-"), style="dim")
    text = Text()
    text.append("type=", style="dim")
    text.append(shown["type"] or "(from the URL scheme)")
    text.append("  url=", style="dim")
    text.append(shown["url"] or "(the backend's default)")
    for key, value in shown["options"].items():
        text.append(f"  {key}=", style="dim")
        text.append(str(value))
    return text


@command(
    "config",
    "show",
    help="show the effective settings (defaults < YAML < OMNIQ_* variables), secrets redacted",
    configure=_config_show_args,
)
def _config_show(args: argparse.Namespace, console: Console) -> int:
    from omniq.config import load_config
    from omniq.plugins import COMPONENTS

    config = load_config(args.config) if args.config else load_config()
    shown = config.redacted()
    if args.json:
        _write_json(shown)
        return 0
    table = Table(title="OmniQ configuration", title_justify="left")
    table.add_column("Setting", style="bold cyan", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for name, value in shown.items():
        if name in COMPONENTS:
            table.add_row(name, _component_text(name, value))
        elif value is None:
            table.add_row(name, Text("-", style="dim"))
        elif isinstance(value, (dict, list)):
            table.add_row(name, Text(json.dumps(value, default=str) if value else "-"))
        else:
            table.add_row(name, Text(str(value)))
    console.print(table)
    return 0


@command(
    "config",
    "reference",
    help="print the reference of every setting (Markdown, as in docs/configuration.md)",
)
def _config_reference(args: argparse.Namespace, console: Console) -> int:
    from omniq.config.reference import markdown

    print(markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
