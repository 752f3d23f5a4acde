"""Converters of setting values (msgspec, lax mode) with precise error messages, and the
``Setting`` metadata that declares each setting on its ``OmniQConfig`` field.

Every converter takes ``(value, where)``: the raw value (a string from the environment, a
YAML scalar, an argument) and a description of where it came from, used in errors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from omniq.errors import ConfigurationError

from ._component import ComponentConfig, check_type_name, check_url
from ._redact import MASK, redact_text

__all__ = [
    "COMPONENTS",
    "FLAT_CONVERTERS",
    "LOG_LEVELS",
    "Setting",
    "boolean",
    "component",
    "level_map",
    "log_level",
    "normalize_level",
    "number",
    "secret",
    "str_list",
    "text",
]

COMPONENTS = ("task_queue", "result_storage", "event_storage", "schedule_storage")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "DISABLED")
_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "OFF": "DISABLED", "NONE": "DISABLED"}
_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f"})
_NONE_WORDS = frozenset({"", "none", "null"})

Converter = Callable[[Any, str], Any]

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]


@dataclass(frozen=True)
class Setting:
    """The declaration of one setting, attached to its ``OmniQConfig`` field with
    ``Annotated``: how a raw value converts, what it means (the docs' text), and whether
    it is secret (never echoed). Name, type and default are the field's own."""

    convert: Converter
    doc: str
    secret: bool = False


def _bad(where: str, value: Any, expected: str, secret: bool = False) -> ConfigurationError:
    if secret:
        shown: Any = MASK
    elif isinstance(value, str):
        shown = redact_text(value)
    else:
        shown = value
    return ConfigurationError(f"{where}: invalid value {shown!r}; expected {expected}")


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)


def number(tp: Any, expected: str, optional: bool = False) -> Converter:
    if optional:
        expected += " or none"

    def conv(value: Any, where: str) -> Any:
        if optional and _is_none(value):
            return None
        raw = value.strip() if isinstance(value, str) else value
        try:
            out = msgspec.convert(raw, tp, strict=False)
        except msgspec.ValidationError:
            raise _bad(where, value, expected) from None
        if isinstance(out, float) and not math.isfinite(out):
            raise _bad(where, value, expected)
        return out

    return conv


def boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _bad(where, value, "a boolean (1/0, true/false, yes/no, on/off)")


def text(expected: str, optional: bool = False, lower: bool = False) -> Converter:
    def conv(value: Any, where: str) -> Any:
        if optional and value is None:
            return None
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            return text.lower() if lower else text
        raise _bad(where, value, expected)

    return conv


def secret(optional: bool) -> Converter:
    def conv(value: Any, where: str) -> Any:
        if optional and value is None:
            return None
        if isinstance(value, str) and value:
            return value
        raise _bad(where, value, "a non-empty string", secret=True)

    return conv


def normalize_level(value: Any) -> str | None:
    """``"info"`` -> ``"INFO"``, ``"warn"`` -> ``"WARNING"``; None when not a level name."""
    if not isinstance(value, str):
        return None
    name = value.strip().upper()
    name = _LEVEL_ALIASES.get(name, name)
    return name if name in LOG_LEVELS else None


_LEVEL_EXPECTED = "one of " + ", ".join(LOG_LEVELS) + " (case-insensitive)"


def log_level(value: Any, where: str) -> str:
    level = normalize_level(value)
    if level is None:
        raise _bad(where, value, _LEVEL_EXPECTED)
    return level


def str_list(secret: bool) -> Converter:
    expected = "a comma-separated string or a list of strings"

    def conv(value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        try:
            items = msgspec.convert(value, list[str], strict=False)
        except msgspec.ValidationError:
            raise _bad(where, value, expected, secret) from None
        return [item.strip() for item in items if item.strip()]

    return conv


_LEVELS_EXPECTED = (
    'a JSON object mapping component names to log levels, e.g. {"worker": "DEBUG"}, '
    "with levels " + ", ".join(LOG_LEVELS)
)


def level_map(value: Any, where: str) -> dict[str, str]:
    raw = value
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            raw = json.loads(value)
        except ValueError:
            raise _bad(where, value, _LEVELS_EXPECTED) from None
    try:
        mapping = msgspec.convert(raw, dict[str, str], strict=False)
    except msgspec.ValidationError:
        raise _bad(where, value, _LEVELS_EXPECTED) from None
    out: dict[str, str] = {}
    for name, level in mapping.items():
        normal = normalize_level(level)
        if not name.strip() or normal is None:
            raise _bad(where, value, _LEVELS_EXPECTED)
        out[name.strip()] = normal
    return out


def component(value: Any, where: str) -> ComponentConfig | None:
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad(where, value, "a JSON object, a URL or a backend type") from None
    component: ComponentConfig | None = ComponentConfig.parse(value, where=where)
    return component


def options_mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    raw = value
    if isinstance(value, str):
        try:
            raw = json.loads(value)
        except ValueError:
            raise _bad(where, value, "a JSON object of backend options") from None
    if isinstance(raw, Mapping) and all(isinstance(k, str) for k in raw):
        return dict(raw)
    raise _bad(where, value, "a mapping (or JSON object) of backend options")


WORKER_EXPECTED = (
    "a worker type name: async, thread, process, gevent, or one added by a plugin"
)
SECONDS = "(seconds)"

#: Converters of the flat per-component keys (``task_queue_type``, ``_url``, ``_options``).
FLAT_CONVERTERS: dict[str, Converter] = {
    "type": check_type_name,
    "url": check_url,
    "options": options_mapping,
}
