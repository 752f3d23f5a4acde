"""Pull requests against JetStream consumers, one short-lived inbox per request.

nats.py's ``PullSubscription.fetch`` mixes a no-wait probe with a lingering request and
cannot be cancelled cleanly; here every request has its own inbox subscription, so

* ``fetch(..., wait=0)`` is one ``no_wait`` request: what is available now, at once;
* ``fetch(..., wait=w)`` is a long poll (``expires=w``) that returns on the first message;
* a cancelled long poll unsubscribes its inbox, and the server (2.9 included) skips pull
  requests without interest; a message that still slips into a dying request is NAKed at
  once, so the next request gets it instead of it waiting out ``ack_wait``.

The inbox subscriptions use :class:`~omniq_nats._publish.Direct` delivery (no queue and
task per subscription).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from omniq.errors import BackendUnavailableError
from omniq_nats._publish import subscribe_direct

if TYPE_CHECKING:
    from nats.aio.subscription import Subscription

    from omniq_nats._connection import Connection

__all__ = ["ConsumerMissingError", "Fetcher", "ack_info", "fetcher", "status_of"]

#: Extra seconds a long poll waits past its server-side expiry for the 408 status.
GRACE = 0.5


class ConsumerMissingError(BackendUnavailableError):
    """The pull request got no answer at all: the consumer may be gone (a request to a
    missing consumer is silently dropped by the server), or the server is unreachable."""


def ack_info(msg: Msg) -> tuple[int, int, int]:
    """(stream sequence, times delivered, messages pending) of a JetStream message, read
    from its reply subject without building nats-py's ``Metadata`` (slow: it converts
    the timestamp)."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[4]), int(tokens[8])
    md = msg.metadata  # the longer form with domain and account
    return md.sequence.stream, md.num_delivered, md.num_pending


def status_of(msg: Msg) -> str | None:
    """The status code of a JetStream status message (404, 408, 409, 100), else None."""
    if msg.headers and not msg.data:
        status = msg.headers.get("Status")
        return str(status) if status else None
    return None


class Fetcher:
    """Issues pull requests for one connection; see the module docs."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def stop(self) -> None:
        """Nothing to release: every request has its own short-lived subscription."""

    async def _orphan(self, msg: Msg) -> None:
        if msg.reply and status_of(msg) is None and msg.reply.startswith("$JS.ACK."):
            try:
                await self._conn.nc.publish(msg.reply, b"-NAK")
            except Exception:  # pragma: no cover - disconnected: redelivered after ack_wait
                pass

    async def fetch(self, stream: str, consumer: str, batch: int, wait: float = 0.0) -> list[Msg]:
        """Up to ``batch`` messages of ``consumer``; waits up to ``wait`` for the first.

        Each request gets its own inbox subscription (JetStream delivers data messages
        under their original subject, so only the subscription tells requests apart);
        the server skips pull requests whose inbox lost interest, so a cancelled long
        poll does not swallow later messages.
        """
        nc = self._conn.nc
        inbox = nc.new_inbox()
        got: deque[Msg] = deque()
        waiter: list[asyncio.Future[None]] = []

        def on_msg(msg: Msg) -> None:
            got.append(msg)
            if waiter and not waiter[0].done():
                waiter[0].set_result(None)

        sub: Subscription = await subscribe_direct(self._conn, inbox, on_msg)
        request: dict[str, object] = {"batch": batch}
        if wait > 0:
            request["expires"] = max(int(wait * 1e9), 1_000_000)
        else:
            request["no_wait"] = True
        out: list[Msg] = []
        answered = False
        try:
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            extra = GRACE if wait > 0 else GRACE + self._conn.settings.request_timeout
            deadline = time.monotonic() + wait + extra
            while len(out) < batch:
                if not got:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    waiter[:] = [asyncio.get_running_loop().create_future()]
                    try:
                        await asyncio.wait_for(waiter[0], remaining)
                    except TimeoutError:
                        break
                    continue
                msg = got.popleft()
                answered = True
                status = status_of(msg)
                if status is None:
                    out.append(msg)
                    continue
                if status == "100":  # idle heartbeat
                    continue
                description = str((msg.headers or {}).get("Description", "")).lower()
                if status == "503" or (status == "409" and "deleted" in description):
                    raise ConsumerMissingError(f"JetStream consumer {consumer} of {stream} is gone")
                break  # 404 no messages, 408 request expired/finished, other 409s
            if not answered:
                raise ConsumerMissingError(f"no answer from consumer {consumer} of {stream}")
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # pragma: no cover - connection closed
                pass
            while got:
                await self._orphan(got.popleft())
        return out


def fetcher(conn: Connection) -> Fetcher:
    """The connection's shared :class:`Fetcher`."""
    f = conn.state.get("fetcher")
    if f is None:
        f = conn.state["fetcher"] = Fetcher(conn)
    assert isinstance(f, Fetcher)
    return f
