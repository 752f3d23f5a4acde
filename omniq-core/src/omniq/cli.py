"""The ``omniq`` command line.

Every subcommand is one function registered with :func:`command`; nested commands
(``omniq config show``, later ``omniq schedules list``) name their group first::

    @command("schedules", "list", help="list schedules", configure=_list_args)
    def _schedules_list(args: argparse.Namespace, console: Console) -> int:
        ...
        return 0

A handler prints through the given rich :class:`~rich.console.Console` and returns the
exit code. It imports what it needs inside its body, so ``omniq --help`` stays fast.
An :class:`~omniq.errors.OmniQError` (and an unreachable server) becomes a one-line red
message on stderr and exit code 2 (no traceback); argparse usage errors also exit with 2.
Every command accepts ``--loglevel`` and ``--log-format``, which override
``OMNIQ_LOG_LEVEL`` and ``OMNIQ_LOG_FORMAT`` (library logs go to stderr).

Helpers shared by the command modules (:mod:`omniq.cli_engine`, :mod:`omniq.cli_admin`)
live here too: ``--json`` output, compact tables that fit 80 columns, times and plurals.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich import box
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
#: Exit code of a command that ran but did not get what was asked (a task failed, a wait
#: timed out).
EXIT_FAILED = 1


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
COMMAND_MODULES: list[str] = [
    "omniq.cli_engine",
    "omniq.cli_admin",
    "omniq.cli_migrations",
    "omniq.dashboard.cli",
]


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


def _logging_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--loglevel",
        "--log-level",
        dest="loglevel",
        metavar="LEVEL",
        default=default,
        type=_level_arg,
        help="library log level: DEBUG, INFO, WARNING, ERROR, CRITICAL or DISABLED "
        "(default: OMNIQ_LOG_LEVEL, else INFO)",
    )
    parser.add_argument(
        "--log-format",
        dest="log_format",
        choices=("text", "json"),
        default=default,
        help="log lines as text or as JSON objects (default: OMNIQ_LOG_FORMAT, else text)",
    )


def _level_arg(value: str) -> str:
    from omniq.config._fields import normalize_level

    level = normalize_level(value)
    if level is None:
        raise argparse.ArgumentTypeError(
            f"invalid level {value!r}; expected DEBUG, INFO, WARNING, ERROR, CRITICAL or DISABLED"
        )
    return level


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every registered command."""
    _load_command_modules()
    parser = argparse.ArgumentParser(
        prog="omniq",
        description="OmniQ: an async-first task queue with pluggable storage backends.",
    )
    parser.add_argument("--version", action="version", version=f"omniq {__version__}")
    _logging_options(parser, None)
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

    # the same order however the modules happened to be imported: this module's
    # commands, then each of COMMAND_MODULES' in turn (each in registration order)
    rank = {m: i for i, m in enumerate([__name__, *COMMAND_MODULES])}
    ordered = sorted(COMMANDS.values(), key=lambda c: rank.get(c.handler.__module__, len(rank)))
    for cmd in ordered:
        sub = subparsers_for(cmd.path[:-1]).add_parser(
            cmd.path[-1], help=cmd.help, description=cmd.help
        )
        if cmd.configure is not None:
            cmd.configure(sub)
        # after the command's own options; SUPPRESS: `omniq --loglevel X cmd` is kept
        _logging_options(sub, argparse.SUPPRESS)
        sub.set_defaults(_handler=cmd.handler)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    """Apply the logging settings, with ``--loglevel`` / ``--log-format`` on top. Bad
    settings are left for the command to report (``config show`` must still run)."""
    from omniq.config import LoggingConfig, load_config, setup_logging

    # first the defaults, so warnings while the settings load are formatted already
    setup_logging(LoggingConfig(format=args.log_format or "text"))
    try:
        cfg = LoggingConfig.from_config(load_config())
    except OmniQError:
        cfg = LoggingConfig()
    if args.log_format is not None:
        cfg = LoggingConfig(
            level=cfg.level,
            disabled=cfg.disabled,
            component_levels=cfg.component_levels,
            format=args.log_format,
        )
    if args.loglevel is not None and args.loglevel != "DISABLED":
        cfg = LoggingConfig(
            level=args.loglevel, component_levels=cfg.component_levels, format=cfg.format
        )
    elif args.loglevel == "DISABLED":
        cfg = LoggingConfig(disabled=True, format=cfg.format)
    setup_logging(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``omniq`` with ``argv`` (default: the process arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args._handler
    try:
        _setup_logging(args)
        return handler(args, Console())
    except OmniQError as e:
        _print_error(str(e))
        return EXIT_ERROR
    except (ConnectionError, OSError) as e:  # a server that is down, a refused connection
        _print_error(f"cannot reach the store: {type(e).__name__}: {e}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # a driver's own error (redis, nats, asyncpg): still one line
        import logging

        logging.getLogger("omniq.cli").debug("omniq %s failed", argv, exc_info=True)
        if any(c.__name__ == "ConnectionError" for c in type(e).__mro__):
            _print_error(f"cannot reach the store: {type(e).__name__}: {e}")
            return EXIT_ERROR
        _print_error(
            f"{type(e).__module__}.{type(e).__name__}: {e} (--loglevel DEBUG shows the traceback)"
        )
        return EXIT_FAILED


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


# --- helpers shared by the command modules ---------------------------------------------


def print_error(message: str, *, label: str = "error") -> None:
    """One red line on stderr (what main prints for an OmniQError)."""
    _print_error(message, label=label)


def plain(data: Any) -> Any:
    """``data`` as JSON-ready builtins; msgspec structs with every field, defaults too."""
    import msgspec

    if isinstance(data, msgspec.Struct):
        return {f: plain(getattr(data, f)) for f in data.__struct_fields__}
    if isinstance(data, (list, tuple)):
        return [plain(x) for x in data]
    if isinstance(data, dict):
        return {str(k): plain(v) for k, v in data.items()}
    return msgspec.to_builtins(data, enc_hook=repr)


def write_json(data: Any) -> None:
    """Print ``data`` (msgspec structs, enums and the like included) as indented JSON."""
    sys.stdout.write(json.dumps(plain(data), indent=2, default=str) + "\n")


def short_name(func: str) -> str:
    """A task name for narrow tables: ``myapp.jobs:send`` -> ``send`` (JSON keeps it all)."""
    return func.rpartition(":")[2] or func


def json_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` to a listing command."""
    _json_flag(parser)


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}; expected an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}; expected an integer >= 1")
    return n


def plural(n: int, word: str, words: str | None = None) -> str:
    """``"1 task"``, ``"2 tasks"``."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def fmt_time(ts: float | None) -> str:
    """A local time with milliseconds, or "" for None."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def short_time(ts: float | None, now: float | None = None) -> str:
    """A compact local time for tables: ``HH:MM:SS`` within a day of now, else a date."""
    if ts is None:
        return "-"
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(ts)
    if abs(now - ts) < 86400:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d")


def age(ts: float | None, now: float | None = None) -> str:
    """How long ago: ``"12s"``, ``"5m"``, ``"3h"``, ``"2d"`` ("-" for None)."""
    if ts is None:
        return "-"
    seconds = max(0.0, (time.time() if now is None else now) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def one_line(text: str | None, limit: int = 200) -> str:
    """The first line of ``text`` (an error, a traceback's last line), cut at ``limit``."""
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def make_table(title: str | None = None, *, show_header: bool = True) -> Table:
    """A compact table (no vertical borders) that fits narrow terminals; give long
    columns ``overflow="ellipsis"`` or ``"fold"`` and ids ``no_wrap=True``."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_header=show_header,
        show_edge=False,
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

    wide = console.width >= 120  # the URL and plugin columns only where they fit
    table = make_table("OmniQ backends")
    table.add_column("Backend", no_wrap=True)
    table.add_column("Schemes", overflow="fold")
    table.add_column("Components", overflow="fold")
    if wide:
        table.add_column("Default URL", overflow="fold")
    table.add_column("Package", no_wrap=True)
    if wide:
        table.add_column("Plugin", overflow="fold")
    for row in rows:
        cells = [
            Text(row["name"], style="bold cyan"),
            Text(", ".join(f"{s}://" for s in row["schemes"]) or "-"),
            Text(", ".join(_COMPONENT_LABELS[k] for k in row["components"]) or "-"),
            Text(row["default_url"] or "-"),
            Text(row["package"] or "-"),
            Text(row["plugin"]),
        ]
        if not wide:
            del cells[5], cells[3]
        table.add_row(*cells)
    console.print(table)
    console.print(
        Text(
            "Choose one with OMNIQ_TASK_QUEUE_TYPE=NAME, or a URL with its scheme "
            "(OMNIQ_TASK_QUEUE_URL=SCHEME://...).",
            style="dim",
        )
    )
    if errors:
        failed = make_table("Plugins that failed to load")
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


def _component_text(name: str, shown: dict[str, Any] | None, queue_type: str | None) -> Text:
    if shown is None:
        unset = _UNSET_COMPONENT.get(name, "-")
        if "task_queue" in unset and queue_type:
            unset += f" ({queue_type})"
        return Text(unset, style="dim")
    text = Text()
    text.append("type=", style="dim")
    text.append(shown["type"] or "(from the URL scheme)")
    text.append("  url=", style="dim")
    text.append(shown["url"] or _default_url(shown["type"]))
    for key, value in shown["options"].items():
        text.append(f"  {key}=", style="dim")
        text.append(str(value))
    return text


def _default_url(backend: str | None) -> str:
    """What a component without a URL connects to: its backend's default URL."""
    from omniq.config import redact_url
    from omniq.plugins import find_backend

    try:
        url = find_backend(backend).default_url if backend else None
    except OmniQError as e:
        return f"(none: {e})"
    if not url:
        return "(none)"
    where = " under base_dir" if url.startswith("sqlite:///") and url[10:11] != "/" else ""
    return f"{redact_url(url)}{where} (the backend's default)"


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
    table = make_table("OmniQ configuration")
    table.add_column("Setting", style="bold cyan", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for name, value in shown.items():
        if name in COMPONENTS:
            table.add_row(name, _component_text(name, value, config.task_queue.type))
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
