"""``ComponentConfig``: which backend one component (queue, results, events, schedules) uses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, overload

import msgspec

from omniq.errors import ConfigurationError

from ._redact import redact_text, redact_url, redact_value

__all__ = ["ComponentConfig", "check_type_name", "check_url"]

_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
TYPE_EXPECTED = "a backend type name such as sqlite, memory, file, postgres, redis or nats"
URL_EXPECTED = "a URL such as nats://127.0.0.1:4222, redis://host:6379/0 or sqlite:///path.db"
COMPONENT_EXPECTED = (
    "a URL (e.g. nats://127.0.0.1:4222), a backend type (e.g. memory) "
    'or a mapping {"type": ..., "url": ..., **options}'
)


def _bad(where: str, value: Any, expected: str) -> ConfigurationError:
    shown = redact_text(value) if isinstance(value, str) else value
    return ConfigurationError(f"{where}: invalid value {shown!r}; expected {expected}")


def check_type_name(value: Any, where: str) -> str | None:
    """Validate a backend type name (``None`` allowed); returns it lower-cased."""
    if value is None:
        return None
    if isinstance(value, str) and _TYPE_NAME.match(value.strip()):
        return value.strip().lower()
    raise _bad(where, value, TYPE_EXPECTED)


def check_url(value: Any, where: str) -> str | None:
    """Validate a connection URL (``None`` allowed): a string with a ``scheme://``."""
    if value is None:
        return None
    if isinstance(value, str):
        url = value.strip()
        scheme, sep, _ = url.partition("://")
        if sep and _SCHEME.match(scheme):
            return url
    raise _bad(where, value, URL_EXPECTED)


class ComponentConfig(msgspec.Struct, kw_only=True):
    """Backend selection for one component: a type, a URL, or both, plus backend options.

    A missing ``type`` is inferred later from the URL scheme by the plugin layer; a missing
    ``url`` means the backend's default location.
    """

    type: str | None = None
    url: str | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    @overload
    @classmethod
    def parse(cls, value: None, *, where: str = ...) -> None: ...

    @overload
    @classmethod
    def parse(
        cls, value: str | Mapping[str, Any] | ComponentConfig, *, where: str = ...
    ) -> ComponentConfig: ...

    @classmethod
    def parse(cls, value: Any, *, where: str = "component") -> ComponentConfig | None:
        """Build from None, a URL (``"nats://h:4222"``), a type word (``"memory"``),
        a mapping ``{"type": ..., "url": ..., **options}`` or a ComponentConfig.

        ``where`` names the setting in error messages.
        """
        if value is None:
            return None
        if isinstance(value, ComponentConfig):
            return cls(type=value.type, url=value.url, options=dict(value.options))
        if isinstance(value, str):
            text = value.strip()
            if "://" in text:
                return cls(url=check_url(text, where))
            if text and _TYPE_NAME.match(text):
                return cls(type=text.lower())
            raise _bad(where, value, COMPONENT_EXPECTED)
        if isinstance(value, Mapping):
            return cls._from_mapping(value, where)
        raise _bad(where, value, COMPONENT_EXPECTED)

    @classmethod
    def _from_mapping(cls, value: Mapping[Any, Any], where: str) -> ComponentConfig:
        options: dict[str, Any] = {}
        for key in value:
            if not isinstance(key, str):
                raise _bad(f"{where}, key {key!r}", key, "option names that are strings")
        extra = value.get("options")
        if extra is not None:
            if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
                raise _bad(f"{where}, key 'options'", extra, "a mapping of option names")
            options.update(extra)
        options.update({k: v for k, v in value.items() if k not in ("type", "url", "options")})
        return cls(
            type=check_type_name(value.get("type"), f"{where}, key 'type'"),
            url=check_url(value.get("url"), f"{where}, key 'url'"),
            options=options,
        )

    def redacted(self) -> dict[str, Any]:
        """A plain dict for display, with credentials in the URL and options hidden."""
        return {
            "type": self.type,
            "url": None if self.url is None else redact_url(self.url),
            "options": {k: redact_value(k, v) for k, v in self.options.items()},
        }

    def __repr__(self) -> str:
        shown = self.redacted()
        return (
            f"ComponentConfig(type={shown['type']!r}, url={shown['url']!r}, "
            f"options={shown['options']!r})"
        )

    __str__ = __repr__
