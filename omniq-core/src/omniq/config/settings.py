"""Library defaults, the lowest configuration layer: ``settings.<NAME>``.

Each name is a setting of :class:`~omniq.config.model.OmniQConfig` in upper case, without
the ``OMNIQ_`` prefix (``TASK_TTL``, ``BASE_DIR``, ``TASK_QUEUE_TYPE`` ...); its value is
the default declared there. Assigning one (``settings.TASK_TTL = 60``) changes the
default for every configuration loaded afterwards; a YAML file, the environment variable
``OMNIQ_<NAME>`` and arguments in code override it (see :func:`omniq.config.load_config`).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    from .model import FIELDS, FLAT_KEYS, default_of

    key = name.lower()
    if name != key.upper() or (key not in FIELDS and key not in FLAT_KEYS):
        raise AttributeError(f"omniq.config.settings has no setting {name!r}")
    return default_of(key)


def __dir__() -> list[str]:
    from .model import FIELDS, FLAT_KEYS

    return sorted(key.upper() for key in (*FIELDS, *FLAT_KEYS))
