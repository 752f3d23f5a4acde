"""Running on a JetStream cluster: the replica count, and checking existing streams.

* :func:`cluster_size` reads the size of the server's cluster from its INFO (the
  ``cluster`` name and the gossiped ``connect_urls``, which list every server's client
  address, its own included); 0 for a server outside a cluster.
* :func:`choose_replicas`: the ``replicas`` option, or when unset (``auto``) R3 on a
  cluster of three or more servers and R1 elsewhere -- with a warning when the server
  is clustered but fewer than three servers are known (a queue on one node of a
  cluster stalls when that node goes, and nothing fails over).
* :func:`check_stream`: a stream that already exists is used as it is, but its
  retention (must match: a work queue that is not one loses tasks or delivers them
  twice), replica count and storage are compared with what was asked for; a difference
  is a warning naming the stream, the values found and wanted and the fix (an error
  with ``strict_streams``).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from nats.js import api

from omniq.errors import ConfigurationError

if TYPE_CHECKING:
    from omniq_nats._config import NATSSettings
    from omniq_nats._connection import Connection

__all__ = [
    "check_stream",
    "choose_replicas",
    "cluster_size",
    "placement",
    "replicas_for",
    "warn_once",
]

log = logging.getLogger("omniq.backends.nats")

_warned: set[tuple[Any, ...]] = set()
_warned_lock = threading.Lock()


def warn_once(key: tuple[Any, ...], message: str, *args: Any) -> None:
    """Log a warning once per process for ``key`` (many components connect alike)."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


def cluster_size(server_info: dict[str, Any]) -> int:
    """Servers in the connected server's cluster (0: not clustered), from its INFO."""
    if not server_info.get("cluster"):
        return 0
    urls = set(server_info.get("connect_urls") or [])
    return max(len(urls), 1)


def choose_replicas(settings: NATSSettings, wanted: int | None, size: int, what: str) -> int:
    """The replica count for new streams of ``what``: ``wanted`` if set, else R3 on a
    cluster of at least three servers, else R1 (warned about on a smaller cluster)."""
    if wanted is not None:
        if size and wanted > size:
            warn_once(
                ("replicas-over", settings.describe(), wanted, size),
                "NATS option replicas=%d for %s, but the server at %s reports %d server(s) in "
                "its cluster: creating streams needs at least %d running servers",
                wanted,
                what,
                settings.describe(),
                size,
                wanted,
            )
        return wanted
    if size >= 3:
        return 3
    if size:
        warn_once(
            ("replicas-auto", settings.describe(), size),
            "NATS server at %s is in a cluster but reports only %d server(s): OmniQ's "
            "streams get 1 replica, so the queue lives on one server and stops when it "
            "does. Set replicas=3 (with 3 servers running) for a queue that survives the "
            "loss of a server",
            settings.describe(),
            size,
        )
    return 1


def replicas_for(settings: NATSSettings, conn: Connection, *, results: bool = False) -> int:
    """Replicas for a new stream of these settings on ``conn``'s server: the tasks'
    (``replicas``) or, with ``results``, the results bucket's and events stream's
    (``results_replicas``, defaulting to ``replicas``)."""
    wanted = settings.replicas
    what = "tasks and schedules"
    if results and settings.results_replicas is not None:
        wanted, what = settings.results_replicas, "results and events"
    return choose_replicas(settings, wanted, conn.cluster_size, what)


def placement(settings: NATSSettings) -> api.Placement | None:
    """Placement of new streams (``placement_tags``), or None."""
    if not settings.placement_tags:
        return None
    return api.Placement(tags=list(settings.placement_tags))


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def check_stream(settings: NATSSettings, found: api.StreamConfig, wanted: api.StreamConfig) -> None:
    """Compare an existing stream's settings with the ones OmniQ would create it with;
    raise :class:`ConfigurationError` on a retention mismatch, warn (or raise, with
    ``strict_streams``) on a replica or storage mismatch."""
    name = wanted.name
    f_ret, w_ret = _value(found.retention), _value(wanted.retention)
    if w_ret is not None and f_ret != w_ret:
        raise ConfigurationError(
            f"NATS stream {name} exists with retention={f_ret!r}, but OmniQ needs "
            f"retention={w_ret!r}: it was created by something else or another OmniQ "
            f"version. Delete it (nats stream rm {name}) or choose another name_prefix"
        )
    problems: list[str] = []
    fixes: list[str] = []
    f_rep, w_rep = found.num_replicas or 1, wanted.num_replicas or 1
    if f_rep != w_rep:
        problems.append(f"replicas={f_rep} (wanted {w_rep})")
        fixes.append(f"nats stream edit {name} --replicas {w_rep}")
    f_sto, w_sto = _value(found.storage), _value(wanted.storage)
    if w_sto is not None and f_sto != w_sto:
        problems.append(f"storage={f_sto} (wanted {w_sto})")
        fixes.append(f"storage cannot change in place: back up, delete and re-create {name}")
    if not problems:
        return
    message = (
        f"NATS stream {name} exists with {', '.join(problems)}; OmniQ uses it as it is "
        f"(consumers get the stream's replica count). To change it: {'; '.join(fixes)}; "
        "or set the options to match the stream"
    )
    if settings.strict_streams:
        raise ConfigurationError(message + " (strict_streams=true)")
    warn_once(("stream", settings.describe(), name, tuple(problems)), "%s", message)
