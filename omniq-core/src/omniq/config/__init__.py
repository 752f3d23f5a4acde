"""OmniQ configuration: defaults, YAML, ``OMNIQ_*`` environment variables and arguments.

>>> from omniq.config import load_config
>>> config = load_config(task_queue="memory://", max_workers=4)
"""

from __future__ import annotations

from . import settings
from ._redact import redact_text
from .loader import env_config, load_config, yaml_config
from .logging import LoggingConfig, RedactingFilter, setup_logging
from .model import ComponentConfig, OmniQConfig, redact_url

__all__ = [
    "ComponentConfig",
    "LoggingConfig",
    "OmniQConfig",
    "RedactingFilter",
    "env_config",
    "load_config",
    "redact_text",
    "redact_url",
    "settings",
    "setup_logging",
    "yaml_config",
]
