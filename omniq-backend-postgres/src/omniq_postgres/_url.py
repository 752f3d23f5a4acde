"""``postgresql://`` URLs and options: parsing, the ``schema`` option, redaction."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omniq.errors import ConfigurationError

#: Used when no URL is given: the local server's ``postgres`` database.
DEFAULT_URL = "postgresql://127.0.0.1:5432/postgres"
SCHEMES = ("postgresql", "postgres")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: URL query parameters (and keyword options) that are OmniQ's, not libpq's.
_OWN = {
    "schema", "min_size", "max_size", "connect_timeout", "poll_interval", "command_timeout",
    "retry_window",
}  # fmt: skip


@dataclass(frozen=True)
class PostgresOptions:
    """Options of the PostgreSQL backend (URL query parameters or keyword options)."""

    dsn: str = DEFAULT_URL
    """The libpq URL given to asyncpg (without OmniQ's own query parameters)."""
    schema: str = "omniq"
    """Schema holding OmniQ's tables: several apps (and tests) share a database safely."""
    min_size: int = 1
    """Fewest pooled connections."""
    max_size: int = 10
    """Most pooled connections (shared by the four components of a bundle)."""
    connect_timeout: float = 10.0
    """Seconds to wait for a connection before failing with a clear error."""
    command_timeout: float | None = 60.0
    """Seconds a statement may take (None: no limit)."""
    poll_interval: float = 1.0
    """Fallback poll of an idle ``dequeue(wait=)`` (LISTEN/NOTIFY wakes it sooner)."""
    retry_window: float = 30.0
    """Seconds an operation is retried while the server is unreachable or restarting
    (0: fail at once); then it raises BackendUnavailableError."""
    server_settings: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """``host:port`` of the server, for messages."""
        parts = urlsplit(self.dsn)
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 5432}"

    @property
    def database(self) -> str:
        """The database name, for messages."""
        path = urlsplit(self.dsn).path.lstrip("/")
        return path or (urlsplit(self.dsn).username or "(default)")

    @property
    def url(self) -> str:
        """The URL with the password redacted and the schema as a query parameter."""
        return redact(_with_query(self.dsn, {"schema": self.schema}))


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
        return urlunsplit(parts._replace(query=urlencode(query)))
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), *extra.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


def parse(url: str | None, **options: Any) -> PostgresOptions:
    """Options from a URL plus keyword options (keywords win)."""
    url = url or DEFAULT_URL
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise ConfigurationError(f"malformed PostgreSQL URL {redact(url)!r}: {e}") from e
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(
            f"not a PostgreSQL URL: {redact(url)!r} (expected postgresql:// or postgres://)"
        )
    own: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for k, v in parse_qsl(parts.query):
        (own.__setitem__(k, v) if k in _OWN else rest.append((k, v)))
    own.update({k: v for k, v in options.items() if v is not None})
    unknown = set(own) - _OWN - {"server_settings"}
    if unknown:
        raise ConfigurationError(
            f"unknown PostgreSQL backend option(s): {', '.join(sorted(unknown))}"
        )
    dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
    opts = PostgresOptions(dsn=dsn)
    kwargs: dict[str, Any] = {}
    try:
        for k, v in own.items():
            if k in ("min_size", "max_size"):
                kwargs[k] = int(v)
            elif k in ("connect_timeout", "poll_interval", "retry_window"):
                kwargs[k] = float(v)
            elif k == "command_timeout":
                kwargs[k] = None if v in ("", "none", "None") else float(v)
            elif k == "server_settings":
                kwargs[k] = dict(v)
            else:
                kwargs[k] = str(v)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"bad PostgreSQL backend option: {e}") from e
    opts = replace(opts, **kwargs)
    if not _IDENT.match(opts.schema):
        raise ConfigurationError(
            f"bad PostgreSQL schema name {opts.schema!r}: use letters, digits and "
            "underscores (at most 63), not starting with a digit"
        )
    return opts
