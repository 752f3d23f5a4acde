"""Which ``OMNIQ_*`` environment variables OmniQ reads, and a warning for the others.

An unknown name is ignored by the settings, so a typo (``OMNIQ_MAX_WORKER``) or a name
from the original design documents (``OMNIQ_BACKEND``, ``NATS_SERVERS``) would silently
leave the default in place (SQLite). :func:`warn_unknown_env` logs one warning per such
name and process on the ``omniq.config`` logger, with the closest known name or what to
set instead.
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
from collections.abc import Iterable, Mapping

from ._component import ComponentConfig
from .model import FIELDS, FLAT_KEYS

__all__ = ["known_env_names", "register_env_names", "unknown_env_messages", "warn_unknown_env"]

log = logging.getLogger("omniq.config")

ENV_PREFIX = "OMNIQ_"

#: ``OMNIQ_*`` names read outside the settings model.
_OTHER_NAMES = {
    "OMNIQ_CONFIG",  # the YAML settings file (omniq.config.loader)
    "OMNIQ_PLUGINS",  # plugin modules to load (omniq.plugins.manager)
    "OMNIQ_SQLITE_NO_INOTIFY",  # SQLite backend: poll for new tasks instead of inotify
    "OMNIQ_NATS_SERVER_BIN",  # the test suite: which nats-server binary to start
    "OMNIQ_NATS_CLUSTER_FULL",  # the test suite: whole conformance suite on the cluster
    "OMNIQ_NATS_CLUSTER_TASKS",  # the test suite: tasks of the cluster fault run
    "OMNIQ_CHROMIUM",  # the test suite: the browser the dashboard tests drive
    "OMNIQ_DASHBOARD_TOKEN",  # omniq dashboard: the access token (never logged)
    "OMNIQ_METRICS_PORT",  # omniq worker: serve Prometheus metrics on this port
    "OMNIQ_METRICS_HOST",  # omniq worker: the interface of the metrics server
}
_registered: set[str] = set()

_NATS_URL_EXAMPLE = "OMNIQ_TASK_QUEUE_URL=nats://host:4222,host2:4222"
_TYPE_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")

_reported: set[str] = set()
_lock = threading.Lock()


def register_env_names(*names: str) -> None:
    """Declare more ``OMNIQ_*`` names as known (a plugin that reads its own variables),
    so that they are not reported as unknown."""
    with _lock:
        _registered.update(names)


def known_env_names() -> frozenset[str]:
    """Every ``OMNIQ_*`` name OmniQ reads: the settings, a few others, registered ones."""
    settings = {ENV_PREFIX + key.upper() for key in (*FIELDS, *FLAT_KEYS)}
    return frozenset(settings | _OTHER_NAMES | _registered)


def _queue_kind(task_queue: ComponentConfig | None) -> str | None:
    """The task queue's backend type, or its URL scheme (never the URL: credentials)."""
    if task_queue is None:
        return None
    if task_queue.type:
        return task_queue.type
    if task_queue.url and "://" in task_queue.url:
        return task_queue.url.split("://", 1)[0].lower()
    return None


def _is_nats(task_queue: ComponentConfig | None) -> bool:
    return _queue_kind(task_queue) in ("nats", "tls")


def unknown_env_messages(
    environ: Mapping[str, str], task_queue: ComponentConfig | None = None
) -> list[tuple[str, str]]:
    """``(name, message)`` for each variable in ``environ`` that OmniQ would ignore but
    that looks meant for it; ``task_queue`` is the queue the settings chose."""
    known = known_env_names()
    kind = _queue_kind(task_queue)
    now = f" (the task queue is {kind})" if kind else ""
    out: list[tuple[str, str]] = []
    for name in sorted(environ):
        if name == "NATS_SERVERS":
            if not _is_nats(task_queue):
                out.append(
                    (
                        name,
                        f"environment variable NATS_SERVERS is not read by OmniQ{now}; to use "
                        f"NATS, name the servers in the task queue URL: {_NATS_URL_EXAMPLE} "
                        "(the nats:// scheme picks the backend)",
                    )
                )
            continue
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name == "OMNIQ_BACKEND":
            value = environ[name].strip()
            backend = value.lower() if _TYPE_WORD.match(value) else "<type>"
            out.append(
                (
                    name,
                    f"environment variable OMNIQ_BACKEND is not an OmniQ setting and is "
                    f"ignored{now}; choose the backend with OMNIQ_TASK_QUEUE_TYPE={backend}, "
                    f"or by the scheme of the task queue URL, e.g. {_NATS_URL_EXAMPLE}",
                )
            )
            continue
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "no OmniQ setting has that name (see docs/configuration.md, or run "
            "`omniq config show`)"
        )
        out.append((name, f"unknown environment variable {name} is ignored; {hint}"))
    return out


def warn_unknown_env(environ: Mapping[str, str], task_queue: ComponentConfig | None = None) -> None:
    """Log each message of :func:`unknown_env_messages` once per name and process."""
    for name, message in unknown_env_messages(environ, task_queue):
        with _lock:
            if name in _reported:
                continue
            _reported.add(name)
        log.warning("%s", message)


def _forget_reported(names: Iterable[str] | None = None) -> None:
    """Report these names (default: all) again; for tests."""
    with _lock:
        if names is None:
            _reported.clear()
        else:
            _reported.difference_update(names)
