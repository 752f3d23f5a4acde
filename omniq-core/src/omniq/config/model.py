"""The configuration model: ``OmniQConfig``, ``ComponentConfig`` and ``redact_url``."""

from __future__ import annotations

from typing import Any

import msgspec

from omniq.errors import ConfigurationError

from . import settings
from ._component import ComponentConfig
from ._fields import COMPONENTS, convert
from ._redact import MASK, redact_url

__all__ = ["ComponentConfig", "OmniQConfig", "redact_url"]


def _default_task_queue() -> ComponentConfig:
    return ComponentConfig(type=settings.TASK_QUEUE_TYPE, url=settings.TASK_QUEUE_URL)


class OmniQConfig(msgspec.Struct, kw_only=True):
    """Every OmniQ setting, validated. Build one with :func:`omniq.config.load_config`.

    Constructing it directly also validates and normalizes each field (``log_level`` is
    stored upper-case); a bad value raises ConfigurationError.
    """

    task_queue: ComponentConfig = msgspec.field(default_factory=_default_task_queue)
    result_storage: ComponentConfig | None = None
    event_storage: ComponentConfig | None = None
    schedule_storage: ComponentConfig | None = None
    base_dir: str = settings.BASE_DIR
    fsspec_uri: str | None = settings.FSSPEC_URI
    default_worker: str = settings.DEFAULT_WORKER
    max_workers: int = settings.MAX_WORKERS
    thread_workers: int | None = settings.THREAD_WORKERS
    process_workers: int | None = settings.PROCESS_WORKERS
    gevent_workers: int | None = settings.GEVENT_WORKERS
    task_timeout: float | None = settings.TASK_TIMEOUT
    task_ttl: float | None = settings.TASK_TTL
    retry_attempts: int = settings.RETRY_ATTEMPTS
    retry_delay: float = settings.RETRY_DELAY
    result_ttl: float | None = settings.RESULT_TTL
    log_level: str = settings.LOG_LEVEL
    disable_logging: bool = settings.DISABLE_LOGGING
    component_log_levels: dict[str, str] = msgspec.field(
        default_factory=lambda: dict(settings.COMPONENT_LOG_LEVELS)
    )
    secret_key: str | None = settings.SECRET_KEY
    old_secret_keys: list[str] = msgspec.field(
        default_factory=lambda: list(settings.OLD_SECRET_KEYS)
    )
    task_import_allowlist: list[str] = msgspec.field(
        default_factory=lambda: list(settings.TASK_IMPORT_ALLOWLIST)
    )
    worker_prefetch: int | None = settings.WORKER_PREFETCH
    lease_seconds: float = settings.LEASE_SECONDS
    heartbeat_interval: float | None = settings.HEARTBEAT_INTERVAL
    shutdown_grace: float = settings.SHUTDOWN_GRACE
    event_retention: float | None = settings.EVENT_RETENTION
    disable_plugin_autoload: bool = settings.DISABLE_PLUGIN_AUTOLOAD
    disabled_plugins: list[str] = msgspec.field(
        default_factory=lambda: list(settings.DISABLED_PLUGINS)
    )
    trace_plugins: bool = settings.TRACE_PLUGINS
    require_services: bool = settings.REQUIRE_SERVICES

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
            elif name == "secret_key":
                out[name] = None if value is None else MASK
            elif name == "old_secret_keys":
                out[name] = [MASK for _ in value]
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
