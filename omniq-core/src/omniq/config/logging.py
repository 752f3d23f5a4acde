"""Library logging: levels for the ``omniq`` logger tree, text or JSON lines, and
credential redaction.

``setup_logging`` installs one stderr handler on the ``omniq`` logger. Records still
propagate; the handler prints only while the root logger has no handlers of its own, so an
application that configured logging gets each record once, through its own handlers. The
handler's ``RedactingFilter`` runs first either way and hides credentials in URLs before
any handler formats the record.

Entry points apply the settings: the ``omniq`` command calls :func:`setup_logging` (its
``--loglevel`` wins over ``OMNIQ_LOG_LEVEL``), and a worker started from library code calls
:func:`ensure_logging`, which leaves an application's own logging alone unless an
``OMNIQ_*`` logging setting asks for something. Importing omniq or building an app never
touches logging.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from ._fields import normalize_level
from ._redact import redact_text

if TYPE_CHECKING:
    from .model import OmniQConfig

__all__ = [
    "LOG_FORMATS",
    "ROOT_LOGGER",
    "JsonFormatter",
    "LoggingConfig",
    "RedactingFilter",
    "ensure_logging",
    "setup_logging",
]

ROOT_LOGGER = "omniq"
#: Values of the ``log_format`` setting.
LOG_FORMATS = ("text", "json")
_SILENT = logging.CRITICAL + 10
_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
_configured_components: set[str] = set()
_applied = False  # setup_logging ran in this process: ensure_logging leaves it alone

#: LogRecord attributes that are not "extra" fields given by the caller.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class RedactingFilter(logging.Filter):
    """Replace credentials in URLs in a record's message (and traceback text) by ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``exc`` (the traceback, when there is one) and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                out[key] = value
        return json.dumps(out, default=str)


class _UnlessRootHandles(logging.Filter):
    """Let a record through only while the application has not configured root handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


class _OmniQHandler(logging.StreamHandler[TextIO]):
    """The one handler ``setup_logging`` installs (found again by its class). It writes
    to the current ``sys.stderr``, whatever replaced it since (as logging's last resort
    handler does)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class LoggingConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Library logging settings: a level for ``omniq``, per-component levels, a format."""

    level: str = "INFO"
    disabled: bool = False
    component_levels: dict[str, str] = msgspec.field(default_factory=dict)
    format: str = "text"

    @classmethod
    def from_config(cls, config: OmniQConfig) -> LoggingConfig:
        """Take the logging settings out of an OmniQConfig."""
        return cls(
            level=config.log_level,
            disabled=config.disable_logging or config.log_level == "DISABLED",
            component_levels=dict(config.component_log_levels),
            format=config.log_format,
        )

    @property
    def is_default(self) -> bool:
        """True when nothing differs from the defaults (no logging setting was given)."""
        return self == LoggingConfig()

    def apply(self) -> None:
        """Configure the ``omniq`` logger tree; calling it again replaces, never adds."""
        root = logging.getLogger(ROOT_LOGGER)
        handler = next((h for h in root.handlers if isinstance(h, _OmniQHandler)), None)
        if handler is None:
            handler = _OmniQHandler()
            handler.addFilter(RedactingFilter())
            handler.addFilter(_UnlessRootHandles())
            root.addHandler(handler)
        handler.setFormatter(JsonFormatter() if self.format == "json" else _text_formatter())
        for name in _configured_components:
            logging.getLogger(name).setLevel(logging.NOTSET)
        _configured_components.clear()
        if self.disabled:
            root.setLevel(_SILENT)
            return
        root.setLevel(_level_number(self.level))
        for component, level in self.component_levels.items():
            name = _logger_name(component)
            logging.getLogger(name).setLevel(_level_number(level))
            _configured_components.add(name)


def _text_formatter() -> logging.Formatter:
    return logging.Formatter(_FORMAT)


def _logger_name(component: str) -> str:
    if component == ROOT_LOGGER or component.startswith(ROOT_LOGGER + "."):
        return component
    return f"{ROOT_LOGGER}.{component}"


def _level_number(level: str) -> int:
    name = normalize_level(level) or "INFO"
    return _SILENT if name == "DISABLED" else logging.getLevelNamesMapping()[name]


def _as_logging_config(config: OmniQConfig | LoggingConfig | None) -> LoggingConfig:
    if config is None:
        from .loader import load_config

        config = load_config()
    if not isinstance(config, LoggingConfig):
        config = LoggingConfig.from_config(config)
    return config


def setup_logging(
    config: OmniQConfig | LoggingConfig | None = None, *, level: str | None = None
) -> None:
    """Configure library logging from ``config`` (default: :func:`load_config`);
    ``level`` (e.g. a ``--loglevel`` option) replaces the configured level."""
    global _applied
    cfg = _as_logging_config(config)
    if level is not None:
        cfg = msgspec.structs.replace(cfg, level=normalize_level(level) or cfg.level)
    cfg.apply()
    _applied = True


def ensure_logging(config: OmniQConfig | LoggingConfig) -> None:
    """What an entry point inside someone else's process (a worker started from library
    code) does: apply the settings unless :func:`setup_logging` already ran, or the
    application configured root logging itself and no logging setting was given."""
    if _applied:
        return
    cfg = _as_logging_config(config)
    if logging.getLogger().handlers and cfg.is_default:
        return  # the host's logging, left alone
    setup_logging(cfg)
