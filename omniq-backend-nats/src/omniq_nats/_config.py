"""Settings of the NATS backend: URL parsing, every seed-002 key, derived names.

A URL is ``nats://[user:password@|token@]host[:port][,host2:port2...][?key=value&...]``
(``tls://`` for TLS). Options given in code override what the URL says. Secrets
(``password``, ``token``) are kept out of ``repr`` and every message.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import ssl
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from omniq.errors import ConfigurationError

__all__ = ["NATSSettings", "decode_token", "encode_token", "redact_urls"]

DEFAULT_PORT = 4222
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_NAME_OK = re.compile(r"[A-Za-z0-9_-]*")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_urls(text: str) -> str:
    """Hide credentials of every URL in free text (``nats://u:pw@h`` -> ``nats://u:***@h``)."""
    if "://" not in text:
        return text
    from omniq.config import redact_url

    return _URL_IN_TEXT.sub(lambda m: str(redact_url(m.group(0))), text)


def encode_token(value: str) -> str:
    """A string as one subject token / KV key part / consumer-name part.

    Plain ``[A-Za-z0-9_-]`` values stay as they are; anything else becomes ``=`` + hex.
    """
    if _PLAIN.fullmatch(value):
        return value
    return "=" + value.encode().hex()


def decode_token(token: str) -> str:
    """Inverse of :func:`encode_token`.

    A token :func:`encode_token` cannot have made (``=`` followed by something other
    than the hex of UTF-8 text: a key written by another tool, or a hostile one) is
    returned as it is: a name no OmniQ call uses, so one foreign key cannot make a
    listing, a sweep or the workers' reads of paused queues fail.
    """
    if token.startswith("="):
        try:
            return bytes.fromhex(token[1:]).decode()
        except ValueError:  # UnicodeDecodeError is one too
            return token
    return token


def _secret_fingerprint(*secrets: str | None) -> str:
    h = hashlib.sha256()
    for s in secrets:
        h.update(b"\x00" + (s or "").encode())
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True, repr=False)
class NATSSettings:
    """Every option of the NATS backend (seed 002's keys plus naming and tuning)."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_hostname: str | None = None
    connect_timeout: float = 2.0
    reconnect_time_wait: float = 2.0
    max_reconnect_attempts: int = 60
    name: str = "omniq"
    verbose: bool = False
    pedantic: bool = False
    # subjects (seed 002)
    tasks_subject: str = "omniq.tasks"
    results_subject: str = "omniq.results"
    events_subject: str = "omniq.events"
    schedules_subject: str = "omniq.schedules"
    dead_letter_subject: str = "omniq.dead"
    queue_group: str = "omniq_workers"
    # streams and buckets
    name_prefix: str = ""
    tasks_stream: str = "OMNIQ_TASKS"
    events_stream: str = "OMNIQ_EVENTS"
    tasks_bucket: str = "omniq_tasks"
    results_bucket: str = "omniq_results"
    schedules_bucket: str = "omniq_schedules"
    storage: str = "file"
    #: replicas of the streams and buckets OmniQ creates; None ("auto"): 3 when the
    #: server reports a cluster of 3 or more servers, else 1
    replicas: int | None = None
    #: replicas of the results bucket and the events stream (None: as ``replicas``)
    results_replicas: int | None = None
    #: placement tags for new streams (servers tagged alike hold their replicas)
    placement_tags: tuple[str, ...] = ()
    #: an existing stream whose replicas or storage differ from these settings is an
    #: error instead of a warning
    strict_streams: bool = False
    # behaviour
    ack_wait: float = 30.0
    max_deliver: int = 5
    result_ttl: float = 7 * 24 * 3600.0
    event_ttl: float = 30 * 24 * 3600.0
    event_max_msgs: int = 10_000_000
    duplicate_window: float = 120.0
    request_timeout: float = 5.0
    retry_window: float = 30.0
    level_refresh: float = 2.0
    shared: bool = True

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigurationError("NATS backend needs at least one server URL")
        if self.storage not in ("file", "memory"):
            raise ConfigurationError(
                f"NATS option storage={self.storage!r}: expected 'file' or 'memory'"
            )
        if not _NAME_OK.fullmatch(self.name_prefix):
            raise ConfigurationError(
                f"NATS option name_prefix={self.name_prefix!r}: use letters, digits, '_' or '-'"
            )
        for key in (
            "queue_group",
            "tasks_stream",
            "events_stream",
            "tasks_bucket",
            "results_bucket",
            "schedules_bucket",
        ):
            if not _PLAIN.fullmatch(getattr(self, key)):
                raise ConfigurationError(
                    f"NATS option {key}={getattr(self, key)!r}: use letters, digits, '_' or '-'"
                )
        for key in (
            "tasks_subject",
            "results_subject",
            "events_subject",
            "schedules_subject",
            "dead_letter_subject",
        ):
            value = getattr(self, key)
            if not value or any(c in value for c in " *>\t") or ".." in value:
                raise ConfigurationError(
                    f"NATS option {key}={value!r}: expected a subject prefix like 'omniq.tasks'"
                )
        for key in ("replicas", "results_replicas"):
            value = getattr(self, key)
            if value is not None and not 1 <= value <= 5:
                raise ConfigurationError(
                    f"NATS option {key}={value!r}: expected 1 to 5 (JetStream's limit), or 'auto'"
                )
        for key in ("ack_wait", "connect_timeout", "request_timeout", "retry_window"):
            if not getattr(self, key) > 0:
                raise ConfigurationError(f"NATS option {key} must be > 0")

    # --- construction ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> NATSSettings:
        """Settings from a URL plus options (options win)."""
        values: dict[str, Any] = {}
        if url:
            values.update(_parse_url(url))
        servers = options.pop("servers", None)
        if servers is not None:
            if isinstance(servers, str):
                servers = [servers]
            parsed = [_parse_url(s) for s in servers]
            values["servers"] = tuple(s for p in parsed for s in p["servers"])
            for p in parsed:
                for k in ("user", "password", "token", "tls"):
                    if k in p and k not in values:
                        values[k] = p[k]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if "stream_prefix" in options:  # the name other OmniQ backends' docs use
            alias = options.pop("stream_prefix")
            if options.setdefault("name_prefix", alias) != alias:
                raise ConfigurationError(
                    "NATS options stream_prefix and name_prefix differ; give one of them"
                )
        values.update(options)
        for key in values:  # URL query options and options given in code alike
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigurationError(
                    f"unknown NATS backend option {key!r}{hint}; known options: "
                    f"{', '.join(sorted(fields))}"
                )
        return cls(**{k: _convert(k, v, fields[k].type) for k, v in values.items()})

    # --- derived names ---------------------------------------------------------------

    def _stream_name(self, base: str) -> str:
        return f"{self.name_prefix}_{base}" if self.name_prefix else base

    def _subject(self, base: str) -> str:
        return f"{self.name_prefix}.{base}" if self.name_prefix else base

    @property
    def tasks_stream_name(self) -> str:
        return self._stream_name(self.tasks_stream)

    @property
    def events_stream_name(self) -> str:
        return self._stream_name(self.events_stream)

    @property
    def tasks_bucket_name(self) -> str:
        return self._stream_name(self.tasks_bucket)

    @property
    def index_bucket_name(self) -> str:
        """The tasks bucket's index (dependents, TTLs): its own stream, so listing it
        costs the size of the index, not the number of tasks."""
        return f"{self.tasks_bucket_name}_index"

    @property
    def results_bucket_name(self) -> str:
        return self._stream_name(self.results_bucket)

    @property
    def schedules_bucket_name(self) -> str:
        return self._stream_name(self.schedules_bucket)

    @property
    def tasks_subject_prefix(self) -> str:
        return self._subject(self.tasks_subject)

    @property
    def events_subject_prefix(self) -> str:
        return self._subject(self.events_subject)

    @property
    def results_subject_prefix(self) -> str:
        return self._subject(self.results_subject)

    @property
    def schedules_subject_prefix(self) -> str:
        return self._subject(self.schedules_subject)

    @property
    def dead_letter_prefix(self) -> str:
        return self._subject(self.dead_letter_subject)

    @property
    def consumer_prefix(self) -> str:
        return f"{self.name_prefix}_{self.queue_group}" if self.name_prefix else self.queue_group

    # --- connection ------------------------------------------------------------------

    def pool_key(self) -> tuple[Any, ...]:
        """What makes two components share a connection (secrets only as a digest)."""
        return (
            self.servers,
            self.user,
            _secret_fingerprint(self.password, self.token),
            self.tls,
            self.tls_cert,
            self.tls_key,
            self.tls_ca,
            self.tls_hostname,
            self.name,
        )

    @property
    def uses_tls(self) -> bool:
        return bool(
            self.tls
            or self.tls_ca
            or self.tls_cert
            or any(s.startswith("tls://") for s in self.servers)
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the connection, or None without TLS."""
        if not self.uses_tls:
            return None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigurationError(
                f"NATS TLS settings are unusable (tls_cert={self.tls_cert!r}, "
                f"tls_key={'***' if self.tls_key else None}, tls_ca={self.tls_ca!r}): {e}"
            ) from e
        return ctx

    def scrub(self, text: str) -> str:
        """``text`` with this configuration's secrets replaced by ``***``."""
        for secret in (self.password, self.token):
            if secret:
                text = text.replace(secret, "***")
        return redact_urls(text)

    def describe(self) -> str:
        """Server list for messages (never with credentials)."""
        return ",".join(self.servers)

    def __repr__(self) -> str:
        auth = "user" if self.user else "token" if self.token else "none"
        return (
            f"NATSSettings(servers={list(self.servers)!r}, auth={auth!r}, tls={self.uses_tls}, "
            f"name_prefix={self.name_prefix!r})"
        )


def _parse_url(url: str) -> dict[str, Any]:
    """Servers, credentials, TLS flag and query options from a (multi-host) URL."""
    if "://" not in url:
        raise ConfigurationError(
            "malformed NATS URL: expected nats://host:port or tls://host:port "
            "(several servers separated by commas)"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("nats", "tls"):
        raise ConfigurationError(f"NATS URL scheme must be nats:// or tls://, got {scheme}://")
    out: dict[str, Any] = {}
    body, _, query = url.partition("?")
    servers: list[str] = []
    for piece in body.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if "://" not in piece:
            piece = f"{scheme}://{piece}"
        try:
            parts = urlsplit(piece)
            port = parts.port or DEFAULT_PORT
        except ValueError as e:
            raise ConfigurationError(f"malformed NATS URL: bad host or port ({e})") from None
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ConfigurationError("malformed NATS URL: expected nats://host:port")
        if parts.username is not None:
            if parts.password is not None:
                out.setdefault("user", unquote(parts.username))
                out.setdefault("password", unquote(parts.password))
            else:
                out.setdefault("token", unquote(parts.username))
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        servers.append(f"{parts.scheme}://{host}:{port}")
        if parts.scheme == "tls":
            out["tls"] = True
    if not servers:
        raise ConfigurationError("malformed NATS URL: no server host given")
    out["servers"] = tuple(servers)
    for key, value in parse_qsl(query, keep_blank_values=True):
        out[key] = value
    return out


def _convert(key: str, value: Any, annotation: Any) -> Any:
    """Convert URL query strings (and lists) to the field's type; clear errors otherwise."""
    kind = str(annotation)
    try:
        if key == "servers":
            return tuple(value)
        if key == "placement_tags":
            if isinstance(value, str):
                return tuple(t.strip() for t in value.split(",") if t.strip())
            return tuple(value)
        if key in ("replicas", "results_replicas") and (
            value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto"))
        ):
            return None
        if isinstance(value, str):
            if kind.startswith("bool"):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            if kind.startswith("int"):
                return int(value)
            if kind.startswith("float"):
                return float(value)
        elif kind.startswith("float") and isinstance(value, int | float):
            return float(value)
    except ValueError:
        shown = "***" if key in ("password", "token") else repr(value)
        raise ConfigurationError(
            f"NATS option {key}={shown}: expected {kind.split(' ')[0]}"
        ) from None
    return value
