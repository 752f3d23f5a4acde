"""Library logging: levels for the ``omniq`` logger tree and credential redaction.

``setup_logging`` installs one stderr handler on the ``omniq`` logger. Records still
propagate; the handler prints only while the root logger has no handlers of its own, so an
application that configured logging gets each record once, through its own handlers. The
handler's ``RedactingFilter`` runs first either way and hides credentials in URLs before
any handler formats the record.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

import msgspec

from ._fields import normalize_level
from ._redact import redact_text

if TYPE_CHECKING:
    from .model import OmniQConfig

__all__ = ["ROOT_LOGGER", "LoggingConfig", "RedactingFilter", "setup_logging"]

ROOT_LOGGER = "omniq"
_SILENT = logging.CRITICAL + 10
_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
_configured_components: set[str] = set()


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
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


class _UnlessRootHandles(logging.Filter):
    """Let a record through only while the application has not configured root handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


class _OmniQHandler(logging.StreamHandler[TextIO]):
    """The one handler ``setup_logging`` installs (found again by its class)."""


class LoggingConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Library logging settings: a level for ``omniq`` and per-component levels."""

    level: str = "INFO"
    disabled: bool = False
    component_levels: dict[str, str] = msgspec.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: OmniQConfig) -> LoggingConfig:
        """Take the logging settings out of an OmniQConfig."""
        return cls(
            level=config.log_level,
            disabled=config.disable_logging or config.log_level == "DISABLED",
            component_levels=dict(config.component_log_levels),
        )

    def apply(self) -> None:
        """Configure the ``omniq`` logger tree; calling it again replaces, never adds."""
        root = logging.getLogger(ROOT_LOGGER)
        handler = next((h for h in root.handlers if isinstance(h, _OmniQHandler)), None)
        if handler is None:
            handler = _OmniQHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(_FORMAT))
            handler.addFilter(RedactingFilter())
            handler.addFilter(_UnlessRootHandles())
            root.addHandler(handler)
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


def _logger_name(component: str) -> str:
    if component == ROOT_LOGGER or component.startswith(ROOT_LOGGER + "."):
        return component
    return f"{ROOT_LOGGER}.{component}"


def _level_number(level: str) -> int:
    name = normalize_level(level) or "INFO"
    return _SILENT if name == "DISABLED" else logging.getLevelNamesMapping()[name]


def setup_logging(config: OmniQConfig | LoggingConfig | None = None) -> None:
    """Configure library logging from ``config`` (default: :func:`load_config`)."""
    if config is None:
        from .loader import load_config

        config = load_config()
    if not isinstance(config, LoggingConfig):
        config = LoggingConfig.from_config(config)
    config.apply()
