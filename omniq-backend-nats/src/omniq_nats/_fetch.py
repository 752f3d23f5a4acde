"""Pull requests against JetStream consumers, one short-lived inbox per request.

nats.py's ``PullSubscription.fetch`` mixes a no-wait probe with a lingering request and
cannot be cancelled cleanly; here every request has its own inbox subscription, so

* ``fetch(..., wait=0)`` is one ``no_wait`` request: what is available now, at once;
* ``fetch(..., wait=w)`` is a long poll (``expires=w``) that returns on the first message;
* a long poll can be cancelled without losing a message.

Cancelling is the delicate part. JetStream 2.9 has no way to withdraw a pull request:
the server checks the requester's interest only when it pairs a message with a waiting
request, and the message is then on its way. Unsubscribing the inbox at once would lose
a message dispatched just before the server saw the UNSUB (nats-py drops a message for
a subscription it no longer has; the server counts it as delivered, so it comes back
only after ``ack_wait``). So the inbox of a request its caller gave up on *lingers*:
it stays subscribed until the server ends the request (its 408 at expiry, or another
status), and every message that still arrives is NAKed at once, so the next request
gets it. A request known to be over (all messages received, or a status) unsubscribes
at once.

The inbox subscriptions use direct delivery (:func:`omniq_nats._natspy.subscribe_direct`:
no queue and task per subscription).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from omniq.errors import BackendUnavailableError
from omniq_nats._natspy import subscribe_direct

if TYPE_CHECKING:
    from nats.aio.subscription import Subscription

    from omniq_nats._connection import Connection

__all__ = [
    "ConsumerMissingError",
    "Fetcher",
    "ack_info",
    "fetcher",
    "status_of",
    "stream_time",
]

#: Extra seconds a long poll waits past its server-side expiry for the 408 status.
GRACE = 0.5
#: Statuses that are not the end of a request (100: idle heartbeat).
NOT_FINAL = frozenset({"100"})


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


def stream_time(msg: Msg) -> int:
    """When the stream stored a JetStream message (nanoseconds since the epoch), from
    its reply subject."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[7])
    return int(msg.metadata.timestamp.timestamp() * 1e9)  # the longer form


def status_of(msg: Msg) -> str | None:
    """The status code of a JetStream status message (404, 408, 409, 100), else None."""
    if msg.headers and not msg.data:
        status = msg.headers.get("Status")
        return str(status) if status else None
    return None


class _Request:
    """The inbox of one pull request: messages for the caller while it waits; once the
    caller is gone and the request may still be alive on the server (it *lingers*),
    every message that arrives is handed back at once."""

    __slots__ = ("fetcher", "got", "left", "lingering", "sub", "timer", "waiter")

    def __init__(self, fetcher: Fetcher, batch: int) -> None:
        self.fetcher = fetcher
        self.left = batch  # messages the server may still send: it ends the request at 0
        self.got: deque[Msg] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.sub: Subscription | None = None
        self.lingering = False
        self.timer: asyncio.TimerHandle | None = None

    def on_msg(self, msg: Msg) -> None:
        if status_of(msg) is None:
            self.left -= 1
        if self.lingering:
            self.fetcher._late(self, msg)
            return
        self.got.append(msg)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Fetcher:
    """Issues pull requests for one connection; see the module docs."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lingering: set[_Request] = set()
        self._chores: set[asyncio.Future[None]] = set()

    @property
    def lingering(self) -> int:
        """Inboxes of abandoned requests still subscribed (for tests and diagnostics)."""
        return len(self._lingering)

    async def stop(self) -> None:
        """End every lingering request (the connection is closing) and let the NAKs of
        messages handed back go out first."""
        for req in list(self._lingering):
            self._end(req)
        while self._chores:
            await asyncio.gather(*list(self._chores), return_exceptions=True)

    def _chore(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background (from a callback), keeping a reference."""
        task = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _nak(self, msg: Msg) -> None:
        try:
            await self._conn.nc.publish(msg.reply, b"-NAK")
        except Exception:  # pragma: no cover - disconnected: redelivered after ack_wait
            pass

    async def _unsubscribe(self, sub: Subscription) -> None:
        try:
            await sub.unsubscribe()
        except Exception:  # pragma: no cover - connection closed
            pass

    def _late(self, req: _Request, msg: Msg) -> None:
        """A message for a lingering request: NAK a task message, end on a status."""
        status = status_of(msg)
        if status is None:
            if msg.reply and msg.reply.startswith("$JS.ACK."):
                self._chore(self._nak(msg))
            if req.left <= 0:
                self._end(req)  # the whole batch came: the server dropped the request
        elif status not in NOT_FINAL:
            self._end(req)  # the server is done with the request: nothing more comes

    def _linger(self, req: _Request, seconds: float) -> None:
        """Keep the abandoned request's inbox subscribed until the server ends the
        request, at most ``seconds`` (past its expiry: a 408 that never came)."""
        req.lingering = True
        self._lingering.add(req)
        req.timer = self._conn.loop.call_later(max(seconds, 0.0), self._end, req)
        while req.got:  # already here but not taken: hand back (or end)
            self._late(req, req.got.popleft())
        if req.left <= 0:
            self._end(req)

    def _end(self, req: _Request) -> None:
        if req not in self._lingering:
            return
        self._lingering.discard(req)
        if req.timer is not None:
            req.timer.cancel()
        if req.sub is not None:
            self._chore(self._unsubscribe(req.sub))

    async def fetch(self, stream: str, consumer: str, batch: int, wait: float = 0.0) -> list[Msg]:
        """Up to ``batch`` messages of ``consumer``; waits up to ``wait`` for the first.

        Each request gets its own inbox subscription (JetStream delivers data messages
        under their original subject, so only the subscription tells requests apart).
        If the caller goes (cancelled, or gave up waiting) before the server ended the
        request, the inbox lingers and hands back what still comes (see the module docs).
        """
        nc = self._conn.nc
        inbox = nc.new_inbox()
        req = _Request(self, batch)
        sub = req.sub = await subscribe_direct(nc, inbox, req.on_msg)
        request: dict[str, object] = {"batch": batch}
        if wait > 0:
            request["expires"] = max(int(wait * 1e9), 1_000_000)
        else:
            request["no_wait"] = True
        out: list[Msg] = []
        answered = False
        over = False  # the server has ended the request: nothing more will come
        extra = GRACE if wait > 0 else GRACE + self._conn.settings.request_timeout
        deadline = time.monotonic() + wait + extra
        try:
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            while len(out) < batch:
                if not req.got:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    req.waiter = asyncio.get_running_loop().create_future()
                    try:
                        await asyncio.wait_for(req.waiter, remaining)
                    except TimeoutError:
                        break
                    continue
                msg = req.got.popleft()
                answered = True
                status = status_of(msg)
                if status is None:
                    out.append(msg)
                    continue
                if status in NOT_FINAL:
                    continue
                over = True
                description = str((msg.headers or {}).get("Description", "")).lower()
                if status == "503" or (status == "409" and "deleted" in description):
                    raise ConsumerMissingError(f"JetStream consumer {consumer} of {stream} is gone")
                break  # 404 no messages, 408 request expired/finished, other 409s
            else:
                over = True  # the whole batch came: the server dropped the request
            if not answered:
                raise ConsumerMissingError(f"no answer from consumer {consumer} of {stream}")
        except BaseException:
            for msg in out:  # taken from the inbox but never given to the caller
                self._chore(self._nak(msg))
            raise
        finally:
            if over:
                await self._unsubscribe(sub)
                while req.got:  # a message after the end (none expected): hand it back
                    msg = req.got.popleft()
                    if status_of(msg) is None and msg.reply:
                        await self._nak(msg)
            else:
                # the caller is gone but the request may be alive: keep the inbox until
                # the server ends it (a message dispatched meanwhile is handed back)
                self._linger(req, deadline - time.monotonic() + self._conn.settings.request_timeout)
        return out


def fetcher(conn: Connection) -> Fetcher:
    """The connection's shared :class:`Fetcher`."""
    f = conn.state.get("fetcher")
    if f is None:
        f = conn.state["fetcher"] = Fetcher(conn)
    assert isinstance(f, Fetcher)
    return f
