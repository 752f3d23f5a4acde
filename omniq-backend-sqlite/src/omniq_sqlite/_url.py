"""Parsing ``sqlite://`` URLs and backend options (pure, no I/O except path checks).

URL forms (SQLAlchemy's, so they read familiar):

* ``sqlite:///relative/path.db`` — relative to the base directory (see below);
* ``sqlite:////abs/path.db`` — an absolute path;
* ``sqlite://:memory:`` (or ``sqlite:///:memory:``) — a private in-memory database for one
  process: the components of one :class:`~omniq_sqlite.SQLiteBackend` share it, separate
  components get separate databases.

The base directory is OmniQ's data directory, ``BASE_DIR`` of :mod:`omniq.config`: the
``base_dir=`` option if given, else the ``OMNIQ_BASE_DIR`` environment variable, else
``omniq.config.settings.BASE_DIR`` (``.omniq``); a relative one is taken from the current
directory. It is resolved once, when the component is built. The default URL
``sqlite:///omniq.db`` is thus ``.omniq/omniq.db``, or ``$OMNIQ_BASE_DIR/omniq.db``.

Options come as keyword arguments or in the query string (``?synchronous=normal``);
keyword arguments win. A missing base directory (or any directory named ``.omniq``) is
created on connect; any other missing directory is an error naming the path and the fix
(or pass ``create_dirs=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

from omniq.errors import ConfigurationError

MEMORY = ":memory:"
DEFAULT_URL = "sqlite:///omniq.db"
#: A missing parent directory with this name is created automatically.
DATA_DIR_NAME = ".omniq"
#: Used when omniq.config does not say otherwise.
DEFAULT_BASE_DIR = ".omniq"
SYNCHRONOUS_MODES = ("full", "normal", "extra")


class SQLiteOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Connection options shared by every SQLite component."""

    synchronous: str = "full"
    """``full`` (default: a returned write survives power loss) or ``normal`` (faster;
    in WAL mode a power loss may drop the last commits, never corrupt the file)."""
    busy_timeout: float = 5.0
    """Seconds SQLite itself waits for another connection's write lock."""
    lock_timeout: float = 60.0
    """Total seconds of retries with backoff before a lock is reported as an error."""
    create_dirs: bool = False
    """Create a missing parent directory (always done for a ``.omniq`` directory)."""
    poll_interval: float = 0.05
    """Longest sleep between polls of ``dequeue(wait=...)`` / ``wait()`` (seconds)."""
    stage_min: int = 64
    """A bulk enqueue of at least this many new tasks without dependencies is written as
    staged rows (up to 1,000 tasks each), moved into the task table by the claim or read
    that needs them (bulk enqueue several times faster); 0 turns staging off."""

    def validate(self) -> SQLiteOptions:
        """Return self, or raise ConfigurationError naming the bad option."""
        if self.synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"invalid SQLite option synchronous={self.synchronous!r}: expected one of "
                f"{', '.join(SYNCHRONOUS_MODES)} (full is the durable default)"
            )
        if not (isinstance(self.stage_min, int) and self.stage_min >= 0):
            raise ConfigurationError(
                f"invalid SQLite option stage_min={self.stage_min!r}: expected a whole "
                "number of tasks >= 0 (0 turns staging off)"
            )
        for name in ("busy_timeout", "lock_timeout", "poll_interval"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigurationError(
                    f"invalid SQLite option {name}={value!r}: expected a number of seconds >= 0"
                )
        return self


class Location(msgspec.Struct, frozen=True):
    """Where a database lives: an absolute path, or ``:memory:``."""

    path: str
    url: str
    """The URL as given (SQLite URLs carry no credentials, so it is safe to show)."""
    data_dir: str = ""
    """The base directory the URL was resolved against (created on demand)."""

    @property
    def memory(self) -> bool:
        """True for a private in-memory database."""
        return self.path == MEMORY

    @property
    def auto_create_dir(self) -> bool:
        """True when the parent directory is OmniQ's data directory (created on demand)."""
        if self.memory:
            return False
        parent = Path(self.path).parent
        return str(parent) == self.data_dir or parent.name == DATA_DIR_NAME


def base_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """OmniQ's data directory, which relative database paths are resolved against."""
    if explicit is None:
        explicit = os.environ.get("OMNIQ_BASE_DIR") or None
    if explicit is None:
        try:
            from omniq.config import settings

            explicit = str(getattr(settings, "BASE_DIR", DEFAULT_BASE_DIR))
        except ImportError:  # pragma: no cover - an omniq-core without config
            explicit = DEFAULT_BASE_DIR
    return Path(os.path.abspath(Path(explicit).expanduser()))


def parse_url(
    url: str | None, *, base: str | os.PathLike[str] | None = None
) -> tuple[Location, dict[str, str]]:
    """Split a ``sqlite://`` URL into its location and query-string options."""
    url = url or DEFAULT_URL
    if "://" not in url:
        raise ConfigurationError(
            f"malformed SQLite URL {url!r}: expected sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite://:memory:"
        )
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(
            f"the SQLite backend needs a sqlite:// URL, got scheme {parts.scheme!r} in {url!r}"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    netloc = unquote(parts.netloc)
    path = unquote(parts.path)
    if netloc == MEMORY or path in ("/" + MEMORY, MEMORY):
        if netloc not in ("", MEMORY) or (netloc == MEMORY and path not in ("", "/")):
            raise ConfigurationError(f"malformed SQLite URL {url!r}: use sqlite://:memory:")
        return Location(MEMORY, url), query
    if netloc:
        raise ConfigurationError(
            f"malformed SQLite URL {url!r}: {netloc!r} is read as a host name. Use three "
            f"slashes for a relative path (sqlite:///{netloc}{path}) or four for an absolute "
            "one (sqlite:////var/lib/app/omniq.db)"
        )
    if path in ("", "/"):
        raise ConfigurationError(
            f"SQLite URL {url!r} names no database file: use sqlite:///omniq.db "
            "(relative), sqlite:////abs/path/omniq.db or sqlite://:memory:"
        )
    rel = path[1:]  # sqlite:///x -> "x"; sqlite:////abs -> "/abs"
    data_dir = base_dir(base)
    p = Path(rel).expanduser()
    if not p.is_absolute():
        p = data_dir / p
    return Location(os.path.abspath(p), url, str(data_dir)), query


def build_options(query: dict[str, str], options: dict[str, Any]) -> SQLiteOptions:
    """Merge query-string options with keyword options (which win) and validate them."""
    merged: dict[str, Any] = {**query, **options}
    try:
        opts = msgspec.convert(merged, SQLiteOptions, strict=False)
    except msgspec.ValidationError as e:
        known = ", ".join(SQLiteOptions.__struct_fields__)
        raise ConfigurationError(f"invalid SQLite option: {e} (known options: {known})") from e
    return opts.validate()


def check_location(loc: Location, options: SQLiteOptions) -> None:
    """Fail early, naming the path and the fix, when the file cannot be used."""
    if loc.memory:
        return
    path = Path(loc.path)
    parent = path.parent
    if not parent.exists():
        if loc.auto_create_dir or options.create_dirs:
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigurationError(
                    f"cannot create directory {parent} for SQLite database {path}: "
                    f"{e.strerror or e}. Create it yourself or choose another path."
                ) from e
        else:
            raise ConfigurationError(
                f"cannot open SQLite database {path}: directory {parent} does not exist. "
                f"Create it (mkdir -p {parent}), pass create_dirs=True, or fix the URL."
            )
    if not parent.is_dir():
        raise ConfigurationError(
            f"cannot open SQLite database {path}: {parent} is not a directory. "
            "Choose a path inside a directory."
        )
    if path.is_dir():
        raise ConfigurationError(
            f"cannot open SQLite database {path}: it is a directory. "
            "Point the URL at a file, e.g. .../omniq.db"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"cannot use SQLite database {path}: directory {parent} is not writable (SQLite "
            "creates the -wal and -shm files next to the database). Fix its permissions "
            "or choose a writable directory."
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigurationError(
            f"cannot use SQLite database {path}: the file is not readable and writable by "
            "this user. Fix its permissions or choose another path."
        )
