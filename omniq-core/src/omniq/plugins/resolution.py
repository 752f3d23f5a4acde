"""Turning ``(component, type or URL, options)`` into a component instance."""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import urlsplit

from omniq.errors import BackendNotFoundError, ConfigurationError
from omniq.plugins.manager import PluginManager, get_plugin_manager
from omniq.plugins.specs import COMPONENTS, BackendSpec

#: The embedded default backend, used when it is installed (or when nothing decides).
DEFAULT_BACKEND = "sqlite"
#: Backends that are always there and never chosen by default (in-process only).
BUILTIN_BACKENDS = frozenset({"memory"})

#: Distributions of first-party backends, named in "install ..." hints (only these:
#: a hint never names a package that does not exist).
KNOWN_PACKAGES = {
    "sqlite": "omniq-backend-sqlite",
    "file": "omniq-backend-file",
    "postgres": "omniq-backend-postgres",
    "redis": "omniq-backend-redis",
    "nats": "omniq-backend-nats",
}
#: Schemes of first-party backends, for hints when the plugin is missing.
KNOWN_SCHEMES = {
    "sqlite": "sqlite",
    "postgres": "postgres",
    "postgresql": "postgres",
    "redis": "redis",
    "rediss": "redis",
    "nats": "nats",
    "tls": "nats",
    "file": "file",
    "s3": "file",
    "gs": "file",
    "gcs": "file",
    "az": "file",
    "abfs": "file",
}

_KIND_LABEL = {
    "task_queue": "a task queue",
    "result_storage": "result storage",
    "event_storage": "event storage",
    "schedule_storage": "schedule storage",
}


def scheme_of(url: str) -> str:
    """The URL's scheme; ConfigurationError for something that is not a URL."""
    if "://" not in url:
        raise ConfigurationError(
            f"malformed backend URL {_safe(url)!r}: expected SCHEME://..., "
            "e.g. sqlite:///tasks.db, nats://127.0.0.1:4222 or memory://"
        )
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConfigurationError(
            f"malformed backend URL {_safe(url)!r}: it has no valid scheme before '://', "
            "e.g. sqlite:///tasks.db, nats://127.0.0.1:4222 or memory://"
        )
    return scheme


def _safe(url: str) -> str:
    from omniq.config import redact_url

    if "://" not in url and "@" in url:
        # no scheme, so redact_url cannot parse it: hide a "user:password@" part by hand
        userinfo, _, host = url.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        return f"{user}:***@{host}" if colon else url
    safe: str = redact_url(url)
    return safe


def default_backend_type(pm: PluginManager | None = None) -> str:
    """The backend used when no setting names one: SQLite when it is installed, else the
    only backend installed besides memory. With none or several of those it is SQLite
    still, and building it fails with one message listing what is installed and the
    setting that chooses (see :func:`find_backend`)."""
    from omniq.plugins import manager

    if pm is None and manager._lock.locked():
        return DEFAULT_BACKEND  # settings read while plugins load: do not wait for them
    candidates = installed_storage_backends(pm)
    if DEFAULT_BACKEND in candidates or len(candidates) != 1:
        return DEFAULT_BACKEND
    return candidates[0]


def installed_storage_backends(pm: PluginManager | None = None) -> list[str]:
    """Names of installed backends that can hold a task queue, besides memory."""
    pm = pm or get_plugin_manager()
    return sorted(
        name
        for name, (spec, _) in pm.backends().items()
        if name not in BUILTIN_BACKENDS and spec.offers("task_queue")
    )


def _no_default(pm: PluginManager) -> BackendNotFoundError:
    """The default backend (SQLite) is not installed and nothing else decides."""
    others = installed_storage_backends(pm)
    if others:
        listed = ", ".join(others)
        return BackendNotFoundError(
            f"no backend is configured and several are installed ({listed}): choose one "
            "with OMNIQ_TASK_QUEUE_TYPE=NAME (or OMNIQ_TASK_QUEUE_URL=SCHEME://...), or "
            f"install {KNOWN_PACKAGES[DEFAULT_BACKEND]} for the embedded default. "
            "OMNIQ_TASK_QUEUE_TYPE=memory needs no extra package."
        )
    return BackendNotFoundError(
        "no storage backend is installed besides memory (in-process only): install one, "
        f"e.g. pip install {KNOWN_PACKAGES[DEFAULT_BACKEND]} (the embedded default), or "
        "set OMNIQ_TASK_QUEUE_TYPE=memory."
    )


def _not_found(what: str, name: str, pm: PluginManager) -> BackendNotFoundError:
    installed = sorted(pm.backends())
    if what == "type" and name == DEFAULT_BACKEND and len(installed_storage_backends(pm)) != 1:
        return _no_default(pm)
    # never suggest back the very name typed (it is known, just not installed)
    candidates = [n for n in dict.fromkeys([*installed, *KNOWN_PACKAGES]) if n != name]
    close = difflib.get_close_matches(name, candidates, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    known = KNOWN_PACKAGES.get(name) or KNOWN_PACKAGES.get(KNOWN_SCHEMES.get(name, ""), "")
    if known and known == _installed_package(name, pm):
        known = ""  # installed already (a broken plugin): installing it again does not help
    if not known and close and close[0] not in installed:
        # a misspelt first-party name ("sqlit"): name the package of the closest match
        known = KNOWN_PACKAGES.get(close[0], "")
    install = (
        f" Install it with: pip install {known}."
        if known
        else " If a third-party package provides it, install that package "
        "(it registers through the 'omniq.plugins' entry point)."
    )
    failed = [e for e in pm.load_errors]
    broken = (
        " Plugins that failed to load: " + "; ".join(f"{e.name}: {e.error}" for e in failed) + "."
        if failed
        else ""
    )
    return BackendNotFoundError(
        f"unknown backend {what} {name!r}. Installed backends: {', '.join(installed) or 'none'}."
        f"{hint}{install}{broken} OMNIQ_TASK_QUEUE_TYPE=memory needs no extra package."
    )


def _installed_package(name: str, pm: PluginManager) -> str | None:
    entry = pm.backends().get(name)
    return entry[0].package if entry is not None else None


def find_backend(
    type: str | None = None, url: str | None = None, *, pm: PluginManager | None = None
) -> BackendSpec:
    """The backend named ``type``, or else the one declaring ``url``'s scheme."""
    pm = pm or get_plugin_manager()
    backends = pm.backends()
    if type:
        entry = backends.get(type.lower())
        if entry is None:
            raise _not_found("type", type, pm)
        return entry[0]
    if not url:
        raise ConfigurationError("a backend needs a type or a URL; neither was given")
    scheme = scheme_of(url)
    matches = [spec for spec, _ in backends.values() if scheme in spec.schemes]
    if not matches:
        raise _not_found("URL scheme", scheme, pm)
    # A scheme shared by several backends (memory:// for memory and file) goes to the
    # backend of that name; a type picks the other explicitly.
    for spec in matches:
        if spec.name == scheme:
            return spec
    return matches[0]


def create_component(
    kind: str,
    type: str | None = None,
    url: str | None = None,
    options: dict[str, Any] | None = None,
    *,
    pm: PluginManager | None = None,
) -> Any:
    """Build the async component ``kind`` (task_queue, result_storage, ...) of a backend."""
    if kind not in COMPONENTS:
        raise ConfigurationError(f"unknown component kind {kind!r}; expected one of {COMPONENTS}")
    spec = find_backend(type, url, pm=pm)
    if not spec.offers(kind):
        offering = sorted(
            s.name for s, _ in (pm or get_plugin_manager()).backends().values() if s.offers(kind)
        )
        raise ConfigurationError(
            f"backend {spec.name!r} does not provide {_KIND_LABEL[kind]}; "
            f"choose one of: {', '.join(offering)}"
        )
    url = url or spec.default_url
    if url is None:
        raise ConfigurationError(
            f"backend {spec.name!r} needs a URL for {_KIND_LABEL[kind]} and declares no default"
        )
    scheme_of(url)
    cls = spec.component(kind)
    assert cls is not None
    return cls.from_url(url, **(options or {}))
