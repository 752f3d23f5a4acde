"""Pipelined JetStream publishes: send many, then wait for all their acks.

nats.py 2.16's ``publish_async`` never resolves the future of a publish the server
rejects (``APIError.from_error`` raises inside its reply callback), so a conflicting
compare-and-set write would hang until a timeout. This does the same job correctly:
one wildcard inbox per connection, one reply token per message, errors delivered as
exception objects.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
import nats.js.errors

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from omniq_nats._connection import Connection

__all__ = ["Publisher", "api_error", "publisher"]

_json = msgspec.json.Decoder(dict[str, Any])


def api_error(err: dict[str, Any]) -> nats.js.errors.APIError:
    """The APIError for a JetStream error response (without raising it)."""
    try:
        nats.js.errors.APIError.from_error(err)
    except nats.js.errors.APIError as e:
        return e
    return nats.js.errors.APIError(**err)  # pragma: no cover - from_error always raises


class Publisher:
    """Pipelined publishes with per-message acks for one connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._prefix = ""
        self._sub: Subscription | None = None
        self._futures: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if self._sub is None:
                self._prefix = self._conn.nc.new_inbox()
                self._sub = await self._conn.nc.subscribe(
                    self._prefix + ".*", cb=self._on_reply, pending_msgs_limit=1_000_000
                )

    async def stop(self) -> None:
        """Unsubscribe; pending publishes fail with a timeout."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # pragma: no cover - connection already closed
                pass

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._futures.pop(msg.subject[len(self._prefix) + 1 :], None)
        if fut is None or fut.done():
            return
        if not msg.data:
            status = (msg.headers or {}).get("Status")
            if status == "503":
                fut.set_exception(nats.errors.NoRespondersError())
            else:
                fut.set_exception(nats.js.errors.APIError(code=int(status or 0)))
            return
        try:
            resp = _json.decode(msg.data)
        except msgspec.DecodeError as e:
            fut.set_exception(e)
            return
        if "error" in resp:
            fut.set_exception(api_error(resp["error"]))
        else:
            fut.set_result(resp)

    async def publish_many(
        self, items: Sequence[tuple[str, bytes, dict[str, str] | None]]
    ) -> list[Any]:
        """Publish every item, wait for the acks; per item the ack dict (with ``seq``) or
        the exception (APIError, NoRespondersError, TimeoutError)."""
        if self._sub is None:
            await self._start()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        tokens: list[str] = []
        nc = self._conn.nc
        try:
            for subject, payload, headers in items:
                token = str(next(self._ids))
                fut: asyncio.Future[Any] = loop.create_future()
                self._futures[token] = fut
                futures.append(fut)
                tokens.append(token)
                await nc.publish(
                    subject, payload, reply=f"{self._prefix}.{token}", headers=headers or None
                )
            if futures:
                await asyncio.wait(futures, timeout=self._conn.settings.request_timeout)
        except BaseException:
            for token in tokens:
                self._futures.pop(token, None)
            raise
        out: list[Any] = []
        for token, fut in zip(tokens, futures, strict=True):
            if not fut.done():
                self._futures.pop(token, None)
                fut.cancel()
                out.append(nats.errors.TimeoutError())
            else:
                out.append(fut.exception() or fut.result())
        return out


def publisher(conn: Connection) -> Publisher:
    """The connection's shared :class:`Publisher`."""
    p = conn.state.get("publisher")
    if p is None:
        p = conn.state["publisher"] = Publisher(conn)
    assert isinstance(p, Publisher)
    return p
