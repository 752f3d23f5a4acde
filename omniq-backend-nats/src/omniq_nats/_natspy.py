"""The one place that relies on nats-py beyond its documented API (pinned:
``nats-py>=2.16,<2.17``; tested with 2.16.0, the newest release when this was written).

The backend needs a few things nats-py does not publish, each kept here with what it
relies on:

* **Direct delivery** (:func:`subscribe_direct`): ``Client.subscribe(future=...)`` with a
  stand-in future. nats-py's reader hands every message of a subscription that has a
  ``future`` straight to ``future.set_result`` (the path of its old-style requests),
  skipping the queue and task per subscription that a callback costs -- most of the
  client's time per JetStream reply. Relies on ``Subscription._future`` being checked
  with ``bool()``, ``cancelled()`` and then ``set_result(msg)`` for each message, and on
  no message task being started for it.
* **The reconnect policy after the first connect** (:func:`set_reconnect_policy`): the
  start-up tries each server briefly, then the configured policy applies; nats-py reads
  ``Client.options["reconnect_time_wait"]`` and ``["max_reconnect_attempts"]`` on each
  reconnect, and has no setter.
* **A KV handle without a request** (:func:`key_value`): ``KeyValue(name, stream, pre,
  js, direct)`` built for a bucket whose settings we know, instead of
  ``js.key_value()``, which costs a stream info request per call (``wait`` opens one
  per call).
* **JetStream errors as values** (:func:`api_error`, :func:`status_error`):
  ``APIError.from_error`` and ``from_msg`` raise instead of returning the error.
* **The server's INFO** (:func:`server_info`): ``Client._server_info``, the INFO the
  connected server sent (its ``cluster`` name and ``connect_urls``).
* For tests only: :func:`reader_transport` (pause the client's reads) and
  :func:`delivers_directly` (is a subscription on direct delivery).

A new nats-py release is tested here first: run the NATS tests with it (``tests/backends
-k nats``, ``tests/faults -k nats``) and widen the pin in ``pyproject.toml`` only after
they pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nats.js.errors
from nats.js.kv import KeyValue

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext

__all__ = [
    "TESTED_RANGE",
    "Direct",
    "api_error",
    "delivers_directly",
    "key_value",
    "reader_transport",
    "server_info",
    "set_reconnect_policy",
    "status_error",
    "subscribe_direct",
]

#: The nats-py versions this module was tested with (the pin in ``pyproject.toml``).
TESTED_RANGE = ">=2.16,<2.17"


class Direct:
    """Stands in for a subscription's ``future``: nats-py then hands each message of the
    subscription straight to :meth:`set_result` from its reader. ``handler`` must not
    raise (it runs inside the client's reader)."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[Msg], None]) -> None:
        self._handler = handler

    def __bool__(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        self._handler(msg)


async def subscribe_direct(
    nc: Client, subject: str, handler: Callable[[Msg], None]
) -> Subscription:
    """Subscribe with :class:`Direct` delivery: ``handler(msg)`` runs in the reader."""
    direct: Any = Direct(handler)
    return await nc.subscribe(subject, future=direct)


def delivers_directly(sub: Subscription) -> bool:
    """True for a subscription on :class:`Direct` delivery (no message task)."""
    return isinstance(sub._future, Direct) and sub._wait_for_msgs_task is None


def set_reconnect_policy(nc: Client, *, time_wait: float, max_attempts: int) -> None:
    """Change how a connected client reconnects (read on each reconnect)."""
    nc.options["reconnect_time_wait"] = time_wait
    nc.options["max_reconnect_attempts"] = max_attempts


def key_value(js: JetStreamContext, name: str, stream: str, pre: str) -> KeyValue:
    """nats-py's KV handle of a bucket we know (direct gets enabled), without the
    stream info request of ``js.key_value()``."""
    return KeyValue(name=name, stream=stream, pre=pre, js=js, direct=True)


def api_error(err: dict[str, Any]) -> nats.js.errors.APIError:
    """The APIError (or subclass) for a JetStream error response, without raising it."""
    try:
        nats.js.errors.APIError.from_error(err)
    except nats.js.errors.APIError as e:
        return e
    return nats.js.errors.APIError(**err)  # pragma: no cover - from_error always raises


def status_error(msg: Msg) -> nats.js.errors.APIError:
    """The APIError for a status message (a direct get's 408, 503, ...), not raised."""
    try:
        nats.js.errors.APIError.from_msg(msg)
    except nats.js.errors.APIError as e:
        return e
    return nats.js.errors.APIError()  # pragma: no cover - from_msg always raises


def reader_transport(nc: Client) -> asyncio.Transport:
    """The transport the client reads from (tests pause it to hold messages back)."""
    transport: asyncio.Transport = nc._transport._io_writer.transport  # type: ignore[union-attr]
    return transport


def server_info(nc: Client) -> dict[str, Any]:
    """The INFO the connected server sent (a copy; empty when not connected)."""
    info = getattr(nc, "_server_info", None)
    return dict(info) if isinstance(info, dict) else {}
