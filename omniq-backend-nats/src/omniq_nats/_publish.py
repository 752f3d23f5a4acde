"""Pipelined JetStream publishes: send many, then wait for all their acks.

nats.py 2.16's ``publish_async`` never resolves the future of a publish the server
rejects (``APIError.from_error`` raises inside its reply callback), so a conflicting
compare-and-set write would hang until a timeout. This does the same job correctly:
one wildcard inbox per connection, one reply subject per message, errors delivered as
exception objects, and one future per batch rather than per message. Replies reach it
through direct delivery (:func:`omniq_nats._natspy.subscribe_direct`), not a
subscription callback.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
import nats.js.errors

from omniq_nats._natspy import api_error, subscribe_direct

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from omniq_nats._connection import Connection

__all__ = ["Publisher", "Turnstile", "publisher"]

_json = msgspec.json.Decoder(dict[str, Any])


class _Batch:
    """Acks awaited by one :meth:`Publisher.publish_many` call."""

    __slots__ = ("done", "left", "results")

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.results: list[Any] = [None] * n
        self.left = n
        self.done = done


class Publisher:
    """Pipelined publishes with per-message acks for one connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._prefix = ""
        self._cut = 0
        self._sub: Subscription | None = None
        self._batches: dict[str, _Batch] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if self._sub is None:
                self._prefix = self._conn.nc.new_inbox()
                self._cut = len(self._prefix) + 1
                self._sub = await subscribe_direct(
                    self._conn.nc, self._prefix + ".*", self._on_reply
                )

    async def stop(self) -> None:
        """Unsubscribe; pending publishes fail with a timeout."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # pragma: no cover - connection already closed
                pass

    def _on_reply(self, msg: Msg) -> None:
        # reply subjects are {prefix}.{batch}-{index}
        name, _, index = msg.subject[self._cut :].partition("-")
        batch = self._batches.get(name)
        if batch is None:
            return
        try:
            i = int(index)
            if batch.results[i] is not None:
                return
            batch.results[i] = _outcome(msg)
        except (ValueError, IndexError):  # pragma: no cover - not a reply of ours
            return
        batch.left -= 1
        if batch.left == 0 and not batch.done.done():
            batch.done.set_result(None)

    async def publish_many(
        self,
        items: Sequence[tuple[str, bytes, dict[str, str] | None]],
        sent: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Publish every item, wait for the acks; per item the ack dict (with ``seq``) or
        the exception (APIError, NoRespondersError, TimeoutError). ``sent`` is called
        once every item is handed to the connection (in order, before any later
        publish), before the acks are awaited."""
        if not items:
            if sent is not None:
                sent()
            return []
        if self._sub is None:
            await self._start()
        name = str(next(self._ids))
        batch = _Batch(len(items), asyncio.get_running_loop().create_future())
        self._batches[name] = batch
        reply = f"{self._prefix}.{name}-"
        publish = self._conn.nc.publish
        try:
            for i, (subject, payload, headers) in enumerate(items):
                await publish(subject, payload, reply=f"{reply}{i}", headers=headers or None)
            if sent is not None:
                sent()
            await asyncio.wait([batch.done], timeout=self._conn.settings.request_timeout)
        finally:
            del self._batches[name]
        return [nats.errors.TimeoutError() if r is None else r for r in batch.results]


def _outcome(msg: Msg) -> Any:
    """The ack dict of a JetStream publish reply, or the exception it stands for."""
    if not msg.data:
        status = (msg.headers or {}).get("Status")
        if status == "503":
            return nats.errors.NoRespondersError()
        return nats.js.errors.APIError(code=int(status or 0))
    try:
        resp = _json.decode(msg.data)
    except msgspec.DecodeError as e:
        return e
    if "error" in resp:
        return api_error(resp["error"])
    return resp


class Turnstile:
    """Lets concurrent callers take one step in the order they arrived.

    A caller takes a :meth:`ticket` on arrival (before its first ``await``), waits for
    its :meth:`turn` before the step and calls :meth:`done` after it -- and in a
    ``finally``, so that a caller that failed or was cancelled never holds up the
    others (``done`` is idempotent)."""

    __slots__ = ("_done", "_issued", "_serving", "_waiters")

    def __init__(self) -> None:
        self._issued = 0
        self._serving = 0  # the lowest ticket not done
        self._done: set[int] = set()  # tickets done ahead of their turn
        self._waiters: dict[int, asyncio.Future[None]] = {}

    def ticket(self) -> int:
        """The next place in line."""
        self._issued += 1
        return self._issued - 1

    async def turn(self, ticket: int) -> None:
        """Return once every earlier ticket is done."""
        if ticket <= self._serving:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = waiter
        try:
            await waiter
        finally:
            del self._waiters[ticket]

    def done(self, ticket: int) -> None:
        """``ticket`` has taken its step (or gives it up)."""
        if ticket < self._serving or ticket in self._done:
            return
        self._done.add(ticket)
        while self._serving in self._done:
            self._done.remove(self._serving)
            self._serving += 1
        waiter = self._waiters.get(self._serving)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def publisher(conn: Connection) -> Publisher:
    """The connection's shared :class:`Publisher`."""
    p = conn.state.get("publisher")
    if p is None:
        p = conn.state["publisher"] = Publisher(conn)
    assert isinstance(p, Publisher)
    return p
