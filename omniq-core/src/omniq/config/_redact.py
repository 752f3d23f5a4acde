"""Hide credentials in URLs, option mappings and free text before they are shown."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

__all__ = ["MASK", "is_secret_name", "redact_text", "redact_url", "redact_value"]

MASK = "***"

_SECRET_NAMES = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "token",
        "secret",
        "key",
        "sig",
        "signature",
        "auth",
        "credential",
        "credentials",
        "nkey",
        "nkeys_seed",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "_key", "-key", "_keys", "_seed")

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def is_secret_name(name: str) -> bool:
    """Whether an option or query parameter called ``name`` holds a secret."""
    lowered = name.strip().lower()
    return lowered in _SECRET_NAMES or lowered.endswith(_SECRET_SUFFIXES)


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, sep, _value = item.partition("=")
        if sep and is_secret_name(unquote(name)):
            parts.append(f"{name}={MASK}")
        else:
            parts.append(item)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """Return ``url`` with its password, bare token and secret query parameters as ``***``.

    ``redis://user:pw@host/0`` -> ``redis://user:***@host/0``; ``nats://tok@host`` ->
    ``nats://***@host``; ``s3://b?access_key=x`` -> ``s3://b?access_key=***``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for marker in "/?#":
        pos = rest.find(marker)
        if pos != -1:
            end = min(end, pos)
    netloc, tail = rest[:end], rest[end:]
    at = netloc.rfind("@")
    if at != -1:
        userinfo, hosts = netloc[:at], netloc[at + 1 :]
        user, colon, _password = userinfo.partition(":")
        if colon and user and "@" not in user and "," not in user:
            netloc = f"{user}:{MASK}@{hosts}"
        else:
            netloc = f"{MASK}@{hosts}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        tail = f"{path}?{_redact_query(query)}{hash_}{fragment}"
    return f"{scheme}://{netloc}{tail}"


_BARE_CREDENTIALS = re.compile(r"(?<![/\w.:-])([\w.%+-]+):([^\s@/:'\"]+)@")


def redact_text(text: str) -> str:
    """Redact every URL found in free text (a log message, an error)."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    # credentials typed without a scheme: user:password@host
    return _BARE_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def redact_value(name: str, value: Any) -> Any:
    """Redact an option value: secrets by name, URLs anywhere (recursing into containers)."""
    if value is None:
        return None
    if is_secret_name(name):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(name, v) for v in value)
    return value
