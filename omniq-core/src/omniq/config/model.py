"""The configuration model, and the one declaration of every setting.

Each ``OmniQConfig`` field *is* a setting: its name (``OMNIQ_<NAME>`` in the
environment, ``<NAME>`` in :mod:`omniq.config.settings`), its type, its default and, in
its ``Annotated`` :class:`~omniq.config._fields.Setting`, how a raw value converts and
what it means. Loading (:mod:`omniq.config.loader`), validation, the library defaults,
``omniq config show`` and the docs' configuration reference are all derived from here.
"""

from __future__ import annotations

from typing import Annotated, Any, get_type_hints

import msgspec

from omniq.errors import ConfigurationError

from ._component import ComponentConfig
from ._fields import (
    COMPONENTS,
    FLAT_CONVERTERS,
    SECONDS,
    WORKER_EXPECTED,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Setting,
    boolean,
    component,
    level_map,
    log_level,
    number,
    secret,
    str_list,
    text,
)
from ._redact import MASK, redact_url

__all__ = [
    "ALIASES",
    "FIELDS",
    "FLAT_KEYS",
    "ComponentConfig",
    "OmniQConfig",
    "convert",
    "redact_url",
]


def _default_queue() -> ComponentConfig:
    """SQLite, or the only backend installed besides memory (see
    :func:`omniq.plugins.resolution.default_backend_type`)."""
    from omniq.plugins.resolution import default_backend_type

    return ComponentConfig(type=default_backend_type())


def _optional_seconds(op: str, tp: Any) -> Any:
    return number(tp, f"a number {op} 0 {SECONDS}", True)


_LOG_FORMATS = ("text", "json")


def _log_format(value: Any, where: str) -> str:
    fmt: str = text("text or json", lower=True)(value, where)
    if fmt not in _LOG_FORMATS:
        shown = value if isinstance(value, str) else repr(value)
        raise ConfigurationError(f"{where}: invalid value {shown!r}; expected text or json")
    return fmt


class OmniQConfig(msgspec.Struct, kw_only=True):
    """Every OmniQ setting, validated. Build one with :func:`omniq.config.load_config`.

    Constructing it directly also validates and normalizes each field (``log_level`` is
    stored upper-case); a bad value raises ConfigurationError.
    """

    task_queue: Annotated[
        ComponentConfig,
        Setting(component, "Where tasks are stored: a URL, a backend type or both "
                "(`OMNIQ_TASK_QUEUE_TYPE`, `OMNIQ_TASK_QUEUE_URL`, `OMNIQ_TASK_QUEUE_OPTIONS`); "
                "the URL scheme picks the backend. Default: sqlite, or the only backend "
                "installed besides memory"),
    ] = msgspec.field(default_factory=_default_queue)
    result_storage: Annotated[
        ComponentConfig | None,
        Setting(component, "Where results are stored (`..._TYPE`, `..._URL`, `..._OPTIONS`); "
                "none: the task queue's backend"),
    ] = None
    event_storage: Annotated[
        ComponentConfig | None,
        Setting(component, "Where lifecycle events are stored; none: events are off"),
    ] = None
    schedule_storage: Annotated[
        ComponentConfig | None,
        Setting(component, "Where schedules are stored; none: the task queue's backend"),
    ] = None
    base_dir: Annotated[
        str,
        Setting(text("a non-empty directory path"),
                "Directory for embedded state (the default SQLite database is "
                "BASE_DIR/omniq.db)"),
    ] = ".omniq"
    fsspec_uri: Annotated[
        str | None,
        Setting(text("a non-empty fsspec URI such as file:///path, s3://bucket or memory://",
                     True),
                "fsspec URI for the file backend when it has no URL"),
    ] = None
    default_worker: Annotated[
        str,
        Setting(text(WORKER_EXPECTED, lower=True),
                "Worker type used when none is named: async, thread, process, gevent "
                "(or a plugin's)"),
    ] = "async"
    max_workers: Annotated[
        int, Setting(number(PositiveInt, "an integer >= 1"), "Tasks in flight per worker")
    ] = 10
    thread_workers: Annotated[
        int | None,
        Setting(number(PositiveInt, "an integer >= 1", True),
                "Thread pool size of the thread worker; none: MAX_WORKERS"),
    ] = None
    process_workers: Annotated[
        int | None,
        Setting(number(PositiveInt, "an integer >= 1", True),
                "Process pool size of the process worker; none: MAX_WORKERS"),
    ] = None
    gevent_workers: Annotated[
        int | None,
        Setting(number(PositiveInt, "an integer >= 1", True),
                "Greenlet pool size of the gevent worker; none: MAX_WORKERS"),
    ] = None
    task_timeout: Annotated[
        float | None,
        Setting(_optional_seconds(">", PositiveFloat),
                "Default task timeout, seconds; none: no timeout"),
    ] = None
    task_ttl: Annotated[
        float | None,
        Setting(_optional_seconds(">", PositiveFloat),
                "Default time-to-live of a queued task, seconds; none: it never expires"),
    ] = None
    retry_attempts: Annotated[
        int,
        Setting(number(NonNegativeInt, "an integer >= 0"),
                "Default number of retries after a failed run"),
    ] = 0
    retry_delay: Annotated[
        float,
        Setting(number(NonNegativeFloat, f"a number >= 0 {SECONDS}"),
                "Base delay between retries, seconds (exponential backoff with jitter)"),
    ] = 1.0
    result_ttl: Annotated[
        float | None,
        Setting(_optional_seconds(">", PositiveFloat),
                "How long results and finished task records are kept, seconds; none: "
                "forever"),
    ] = 86400.0
    log_level: Annotated[
        str,
        Setting(log_level,
                "Library log level: DEBUG, INFO, WARNING, ERROR, CRITICAL or DISABLED"),
    ] = "INFO"
    disable_logging: Annotated[
        bool, Setting(boolean, "Silence all library logging")
    ] = False
    component_log_levels: Annotated[
        dict[str, str],
        Setting(level_map,
                'Per-logger levels, e.g. {"worker": "DEBUG"} for the logger omniq.worker '
                "(JSON in the environment)"),
    ] = msgspec.field(default_factory=dict)
    log_format: Annotated[
        str,
        Setting(_log_format,
                "Format of library log lines: text, or json (one object per line, for "
                "log shippers)"),
    ] = "text"
    worker_stats_interval: Annotated[
        float | None,
        Setting(_optional_seconds(">", PositiveFloat),
                "Seconds between a worker's one-line stats log (processed, failed, rate, "
                "queue depth); none: never"),
    ] = 60.0
    secret_key: Annotated[
        str | None,
        Setting(secret(optional=True),
                "HMAC key that signs dill payloads; none forbids payloads that need dill",
                secret=True),
    ] = None
    old_secret_keys: Annotated[
        list[str],
        Setting(str_list(secret=True),
                "Previous keys still accepted when verifying signatures (key rotation)",
                secret=True),
    ] = msgspec.field(default_factory=list)
    task_import_allowlist: Annotated[
        list[str],
        Setting(str_list(secret=False),
                "Modules (and their submodules) from which workers may import tasks that "
                "are not registered on their app, by module:qualname. Empty: workers run "
                "only registered tasks (a trust boundary: see Workers)"),
    ] = msgspec.field(default_factory=list)
    worker_prefetch: Annotated[
        int | None,
        Setting(number(NonNegativeInt, "an integer >= 0", True),
                "Claimed tasks a worker holds ready beyond those running; none: adaptive "
                "(about 50 ms of work per slot); 0: none"),
    ] = None
    lease_seconds: Annotated[
        float,
        Setting(number(PositiveFloat, f"a number > 0 {SECONDS}"),
                "Seconds a claim stays leased before another worker may take the task"),
    ] = 30.0
    heartbeat_interval: Annotated[
        float | None,
        Setting(_optional_seconds(">", PositiveFloat),
                "Seconds between lease heartbeats; none: a third of LEASE_SECONDS"),
    ] = None
    shutdown_grace: Annotated[
        float,
        Setting(number(NonNegativeFloat, f"a number >= 0 {SECONDS}"),
                "Seconds running tasks get to finish after SIGTERM/SIGINT"),
    ] = 30.0
    event_retention: Annotated[
        float | None,
        Setting(_optional_seconds(">", PositiveFloat),
                "How long lifecycle events are kept, seconds; none: forever"),
    ] = None
    disable_plugin_autoload: Annotated[
        bool, Setting(boolean, "Do not load plugins from the omniq.plugins entry points")
    ] = False
    disabled_plugins: Annotated[
        list[str],
        Setting(str_list(secret=False), "Entry-point plugins that must not be loaded"),
    ] = msgspec.field(default_factory=list)
    trace_plugins: Annotated[
        bool, Setting(boolean, "Log every plugin hook call (a debugging aid)")
    ] = False
    require_services: Annotated[
        bool,
        Setting(boolean,
                "Fail, instead of skipping, tests whose backend server is unreachable "
                "(set by CI)"),
    ] = False

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = convert(name, getattr(self, name), f"OmniQConfig.{name}")
            setattr(self, name, value)
        if self.task_queue is None:
            raise ConfigurationError(
                "OmniQConfig.task_queue: invalid value None; expected a URL, a backend type "
                "or a ComponentConfig (the task queue cannot be turned off)"
            )
        hb, lease = self.heartbeat_interval, self.lease_seconds
        if hb is not None and hb >= lease:
            raise ConfigurationError(
                f"heartbeat_interval: invalid value {hb!r}; expected a number of seconds "
                f"smaller than lease_seconds ({lease!r}) so leases are renewed in time"
            )

    def effective_result_storage(self) -> ComponentConfig:
        """The result storage, or the task queue's backend when none is configured."""
        return self.result_storage if self.result_storage is not None else self.task_queue

    def effective_schedule_storage(self) -> ComponentConfig:
        """The schedule storage, or the task queue's backend when none is configured."""
        return self.schedule_storage if self.schedule_storage is not None else self.task_queue

    @property
    def events_enabled(self) -> bool:
        """Whether task events are stored (an event storage is configured)."""
        return self.event_storage is not None

    def redacted(self) -> dict[str, Any]:
        """A plain dict of every setting for display, with credentials hidden."""
        out: dict[str, Any] = {}
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in COMPONENTS:
                out[name] = None if value is None else value.redacted()
            elif FIELDS[name].secret and isinstance(value, list):
                out[name] = [MASK for _ in value]
            elif FIELDS[name].secret:
                out[name] = None if value is None else MASK
            elif name == "fsspec_uri":
                out[name] = None if value is None else redact_url(value)
            elif isinstance(value, dict):
                out[name] = dict(value)
            elif isinstance(value, list):
                out[name] = list(value)
            else:
                out[name] = value
        return out

    def __repr__(self) -> str:
        shown = self.redacted()
        parts = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            text = repr(value) if isinstance(value, ComponentConfig) else repr(shown[name])
            parts.append(f"{name}={text}")
        return f"OmniQConfig({', '.join(parts)})"

    __str__ = __repr__


def _declarations() -> dict[str, Setting]:
    hints = get_type_hints(OmniQConfig, include_extras=True)
    found: dict[str, Setting] = {}
    for name in OmniQConfig.__struct_fields__:
        meta = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Setting)]
        assert meta, f"OmniQConfig.{name} has no Setting declaration"
        found[name] = meta[0]
    return found


#: Every setting's declaration, by name (derived from ``OmniQConfig``'s fields).
FIELDS: dict[str, Setting] = _declarations()

#: Flat per-component keys: ``task_queue_type``, ``task_queue_url``, ``..._options``, ...
FLAT_KEYS: dict[str, Setting] = {
    f"{name}_{part}": Setting(conv, f"{FIELDS[name].doc} ({part})")
    for name in COMPONENTS
    for part, conv in FLAT_CONVERTERS.items()
}

_STRUCT_FIELDS = {f.name: f for f in msgspec.structs.fields(OmniQConfig)}

#: Friendly spellings accepted in YAML, dicts and arguments.
ALIASES: dict[str, str] = {"worker": "default_worker"}


def convert(key: str, value: Any, where: str) -> Any:
    """Convert and validate ``value`` for setting ``key`` (a field or a flat component key).

    Raises ConfigurationError naming ``where``, the (redacted) value and what was expected.
    """
    spec = FIELDS.get(key) or FLAT_KEYS[key]
    return spec.convert(value, where)


def default_of(key: str) -> Any:
    """The declared default of setting ``key`` (a field or a flat component key)."""
    if key in FIELDS:
        field = _STRUCT_FIELDS[key]
        if field.default_factory is not msgspec.NODEFAULT:
            return field.default_factory()
        return field.default
    name, _, part = key.rpartition("_")
    default = default_of(name)
    if part == "options":
        return dict(default.options) if default is not None else {}
    return None if default is None else getattr(default, part)
