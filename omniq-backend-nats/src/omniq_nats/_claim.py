"""Claiming: per-(queue, priority) durable pull consumers, fetched high to low.

Each queue/priority pair has its own subject ``{tasks}.{queue}.p{priority}`` and durable
pull consumer ``{queue_group}_{queue}_p{priority}`` on the WorkQueue stream (2.9 allows
several consumers only with non-overlapping filters, and has no ``filter_subjects``).
A dequeue first sends one ``no_wait`` pull per pair, queues in the order given and
priorities high to low, until it has ``limit`` tasks; only when nothing is ready does it
long-poll every pair at once. A fetched message is only a ticket: the KV record decides
(:func:`omniq_nats._records.decide`) and a revision-checked write makes the claim, so two
workers can never both win. The message stays unacknowledged while the task runs, its
redelivery timer being the lease: ``in_progress()`` renews it when the lease equals the
consumer's ``ack_wait``, ``NAK`` with a delay sets it to any other lease.

A caller back soon after its previous claim (a worker draining a backlog) gets the next
batch of tickets of the level that filled its claim fetched in the background, so its
next claim costs only the round trip of the revision-checked writes. Tickets fetched
ahead and not claimed within ``AHEAD_MAX_AGE`` (or when the component closes) are NAKed
back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nats.js.errors
from nats.js import api

from omniq.errors import OmniQError, SerializationError
from omniq.models import Task, TaskStatus
from omniq_nats._config import decode_token, encode_token
from omniq_nats._connection import log
from omniq_nats._fetch import ConsumerMissingError, ack_info, fetcher
from omniq_nats._kv import Bucket, publish_many
from omniq_nats._natspy import api_error
from omniq_nats._records import (
    Action,
    Decision,
    Record,
    decide,
    decode_record,
    decode_ticket,
    encode_record,
    encode_ticket,
    level_of,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from omniq.serialization import SerializationManager
    from omniq_nats._config import NATSSettings
    from omniq_nats._connection import Connection

__all__ = ["Claims", "Held", "QueueState", "task_key", "ttl_key"]


@dataclass
class Held:
    """A claim made through this connection: its message (the lease timer) and the
    record as written, so complete/heartbeat can skip a read."""

    reply: str
    attempt: int
    revision: int
    record: Record
    lease: float


#: How many finished tasks' "has dependents" flags are remembered for the release step.
FINISHED_MEMORY = 4096
#: Tickets fetched ahead are handed back (NAKed) if not claimed within this many seconds.
AHEAD_MAX_AGE = 1.0
#: On a replicated tasks stream a dequeue waits at least this long (a long poll, which
#: returns on the first message): a consumer whose leader is not the stream's leader
#: learns of a message a moment after its publish was acknowledged, so a ``no_wait``
#: pull right after an enqueue could come back empty.
REPLICA_LAG = 0.1


@dataclass
class Ahead:
    """Tickets of one consumer fetched ahead of the next claim (see ``_claim_pass``)."""

    since: float  # monotonic time the fetch was sent (their ack timers started later)
    fetch: asyncio.Future[list[Msg]] | None = None
    msgs: list[Msg] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


@dataclass
class QueueState:
    """Per-connection state of one queue component."""

    conn: Connection
    bucket: Bucket
    #: the small index bucket: ``d.{dependency}.{task}`` and ``x.{task}`` (TTL) keys
    index: Bucket
    #: the tasks stream's replica count, which its consumers get
    replicas: int = 1
    levels: dict[str, set[int]] = field(default_factory=dict)
    ensured: set[tuple[str, int]] = field(default_factory=set)
    #: names of the consumers in ``levels`` (and of those being created here): their
    #: creation advisories are no news (see ``_start_advisories``)
    consumers: set[str] = field(default_factory=set)
    levels_checked: float = 0.0
    levels_event: asyncio.Event = field(default_factory=asyncio.Event)
    held: dict[str, Held] = field(default_factory=dict)
    advisory: Subscription | None = None
    #: task id -> its final record's ``dependents`` flag, for tasks finished here
    finished: dict[str, bool] = field(default_factory=dict)
    #: (queue, level) -> tickets fetched ahead; when the previous claim returned
    ahead: dict[tuple[str, int], Ahead] = field(default_factory=dict)
    claimed_at: float = 0.0
    background: set[asyncio.Future[None]] = field(default_factory=set)
    #: ``prune_finished``: the last sequence of the tasks bucket it examined, and the
    #: creation time of the stream that cursor is for
    prune_cursor: int = 0
    prune_stream: str = ""

    def note_finished(self, task_id: str, rec: Record) -> None:
        """Remember whether a task finished here has dependents to release (bounded)."""
        self.finished[task_id] = rec.dependents
        if len(self.finished) > FINISHED_MEMORY:
            del self.finished[next(iter(self.finished))]


def task_key(task_id: str) -> str:
    """KV key of a task record."""
    return f"t.{encode_token(task_id)}"


def ttl_key(task_id: str) -> str:
    """KV key marking a task with a TTL (the index ``cleanup_expired`` reads)."""
    return f"x.{encode_token(task_id)}"


class Claims:
    """Dequeue machinery of :class:`~omniq_nats.AsyncNATSQueue`, which owns one: the
    (queue, priority) consumers, work-queue messages (tickets) out and in, claim passes,
    tickets fetched ahead, lease timers. Works on the per-connection
    :class:`QueueState` it is given; ``serializer`` returns the queue's current one."""

    def __init__(
        self, settings: NATSSettings, serializer: Callable[[], SerializationManager]
    ) -> None:
        self.settings = settings
        self._serializer = serializer

    # --- names ---------------------------------------------------------------------

    def subject(self, queue: str, priority: int) -> str:
        return f"{self.settings.tasks_subject_prefix}.{encode_token(queue)}.{level_of(priority)}"

    def consumer(self, queue: str, priority: int) -> str:
        return f"{self.settings.consumer_prefix}_{encode_token(queue)}_{level_of(priority)}"

    # --- tickets out ----------------------------------------------------------------

    async def publish(
        self,
        st: QueueState,
        tickets: Sequence[tuple[str, int, str, int, bytes]],
        msg_id: str = "{id}:{rev}",
        sent: Callable[[], None] | None = None,
    ) -> None:
        """Publish work-queue messages ``(queue, priority, task id, revision, record)``.

        ``Nats-Msg-Id`` is the task id and the revision of the record the message stands
        for: a re-send of the same message (a producer retrying after a crash) is dropped
        by the stream within its duplicate window, while a message for a new record of
        the same id (re-enqueued after a purge) is never mistaken for a duplicate.
        """
        await publish_many(
            st.conn,
            [
                (
                    self.subject(queue, priority),
                    encode_ticket(task_id, rev, record),
                    {"Nats-Msg-Id": msg_id.format(id=task_id, rev=rev)},
                )
                for queue, priority, task_id, rev, record in tickets
            ],
            "enqueueing tasks",
            sent,
        )

    # --- consumers and levels ------------------------------------------------------

    async def ensure_consumer(self, st: QueueState, queue: str, priority: int) -> None:
        if (queue, priority) in st.ensured:
            return
        s = self.settings
        name = self.consumer(queue, priority)
        config = api.ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=self.subject(queue, priority),
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_deliver=-1,  # NAKs (delays, lease checks) would count; we count attempts
            max_ack_pending=-1,  # delayed tasks wait NAKed, i.e. pending
            replay_policy=api.ReplayPolicy.INSTANT,
            max_waiting=4096,
            num_replicas=st.replicas,
        )
        # known before the request: the server sends its creation advisory first
        st.consumers.add(name)
        try:
            await st.conn.call(
                f"creating consumer {name}",
                lambda: st.conn.js.add_consumer(s.tasks_stream_name, config),
            )
        except BaseException:
            if (queue, priority) not in st.ensured:
                st.consumers.discard(name)
            raise
        st.ensured.add((queue, priority))
        st.levels.setdefault(queue, set()).add(priority)

    async def _refresh_levels(self, st: QueueState) -> None:
        """Learn every (queue, priority) consumer of the stream."""
        s = self.settings
        st.levels_event.clear()
        st.levels_checked = time.monotonic()
        prefix = s.tasks_subject_prefix + "."
        offset = 0
        fix: list[tuple[str, int]] = []
        while True:
            infos = await st.conn.call(
                "listing consumers",
                functools.partial(
                    st.conn.js.consumers_info, s.tasks_stream_name, offset=offset or None
                ),
            )
            for info in infos:
                subject = info.config.filter_subject or ""
                if not subject.startswith(prefix) or not info.config.durable_name:
                    continue
                parts = subject[len(prefix) :].split(".")
                if len(parts) != 2 or parts[1][:1] not in ("p", "m"):
                    continue
                try:
                    level = int(parts[1][1:]) * (1 if parts[1][0] == "p" else -1)
                    queue = decode_token(parts[0])
                except ValueError:
                    continue
                st.levels.setdefault(queue, set()).add(level)
                st.consumers.add(info.config.durable_name)
                if (info.config.num_replicas or st.replicas) != st.replicas:
                    fix.append((queue, level))  # made by an older OmniQ: scaled below
                else:
                    st.ensured.add((queue, level))
            if len(infos) < 256:
                break
            offset += len(infos)
        for queue, level in fix:
            if (queue, level) not in st.ensured:
                log.warning(
                    "NATS consumer %s of %s had another replica count than its stream; "
                    "scaling it to %d replicas",
                    self.consumer(queue, level),
                    s.tasks_stream_name,
                    st.replicas,
                )
                try:
                    await self.ensure_consumer(st, queue, level)
                except OmniQError as e:  # it still works as it is: claims go on
                    log.warning("scaling consumer %s failed: %s", self.consumer(queue, level), e)
                    st.ensured.add((queue, level))

    async def outstanding(self, st: QueueState) -> dict[str, int]:
        """Per queue: messages its consumers have not had acknowledged yet
        (``num_pending + num_ack_pending``: waiting, delayed, held by a claim), from one
        consumer listing -- never from the stream's message count, which a replica that
        was down while messages were acknowledged still includes."""
        prefix = self.settings.tasks_subject_prefix + "."
        out: dict[str, int] = {}
        offset = 0
        while True:
            infos = await st.conn.call(
                "listing consumers",
                functools.partial(
                    st.conn.js.consumers_info,
                    self.settings.tasks_stream_name,
                    offset=offset or None,
                ),
            )
            for info in infos:
                subject = info.config.filter_subject or ""
                parts = subject[len(prefix) :].split(".")
                if not subject.startswith(prefix) or len(parts) != 2:
                    continue
                queue = decode_token(parts[0])
                waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
                out[queue] = out.get(queue, 0) + waiting
            if len(infos) < 256:
                return out
            offset += len(infos)

    async def stream_holds(self, st: QueueState, queue: str | None) -> int:
        """Messages the tasks stream's leader holds for a queue (or all queues): on a
        work queue, those not acknowledged yet. Only a cross-check of
        :meth:`outstanding` (a consumer's counts lag a moment behind a publish); never a
        queue depth, since a replica that was down while messages were acknowledged
        still counts them once it leads."""
        s = self.settings
        pattern = f"{encode_token(queue)}.>" if queue is not None else ">"
        body = json.dumps({"subjects_filter": f"{s.tasks_subject_prefix}.{pattern}"}).encode()

        async def run() -> int:
            msg = await st.conn.nc.request(
                f"$JS.API.STREAM.INFO.{s.tasks_stream_name}", body, timeout=s.request_timeout
            )
            resp = json.loads(msg.data)
            if "error" in resp:
                raise api_error(resp["error"])
            subjects = (resp.get("state") or {}).get("subjects") or {}
            return sum(int(n) for n in subjects.values())

        return await st.conn.call("reading the tasks stream's state", run)

    async def _prepare_levels(self, st: QueueState, queues: Sequence[str]) -> None:
        stale = time.monotonic() - st.levels_checked > self.settings.level_refresh
        if stale or st.levels_event.is_set():
            await self._refresh_levels(st)
        for q in queues:
            if not st.levels.get(q):
                await self.ensure_consumer(st, q, 0)

    async def _recreate_if_missing(self, st: QueueState, queue: str, priority: int) -> bool:
        """After a pull request went unanswered: re-create the consumer if it was deleted
        behind our back (its messages wait in the stream). True if it was re-created."""
        if not st.conn.nc.is_connected:
            return False  # the server is away, not the consumer
        name = self.consumer(queue, priority)
        stream = self.settings.tasks_stream_name

        async def exists() -> bool:
            try:
                await st.conn.js.consumer_info(stream, name)
                return True
            except nats.js.errors.NotFoundError:
                return False

        if await st.conn.call(f"checking consumer {name}", exists):
            return False
        st.ensured.discard((queue, priority))
        await self.ensure_consumer(st, queue, priority)
        return True

    async def start_advisories(self, st: QueueState) -> None:
        # A new consumer may be a new (queue, priority) level: wake the long polls so
        # that the next claim pass lists the levels again. Not for consumers known here
        # (created by this process, or listed): waking a long poll for nothing abandons
        # its pull request, which then has to hand back what the server sends it.
        async def cb(msg: Msg) -> None:
            if msg.subject.rsplit(".", 1)[-1] not in st.consumers:
                st.levels_event.set()

        st.advisory = await st.conn.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{self.settings.tasks_stream_name}.*", cb=cb
        )

    # --- claiming ------------------------------------------------------------------

    async def dequeue(
        self,
        st: QueueState,
        queues: Sequence[str],
        limit: int,
        worker_id: str,
        lease: float,
        wait: float,
    ) -> list[Task]:
        # a caller back soon after its previous claim is draining a backlog: worth
        # fetching its next batch while it runs this one
        busy = time.monotonic() - st.claimed_at < AHEAD_MAX_AGE / 2
        try:
            return await self._dequeue_now(st, queues, limit, worker_id, lease, wait, busy)
        finally:
            st.claimed_at = time.monotonic()

    async def _dequeue_now(
        self,
        st: QueueState,
        queues: Sequence[str],
        limit: int,
        worker_id: str,
        lease: float,
        wait: float,
        busy: bool,
    ) -> list[Task]:
        if st.replicas > 1:
            wait = max(wait, REPLICA_LAG)
        deadline = time.monotonic() + wait
        while True:
            await self._prepare_levels(st, queues)
            out = await self._claim_pass(st, queues, limit, worker_id, lease, busy)
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            out = await self._long_poll(st, queues, limit, worker_id, lease, remaining)
            if out:
                if len(out) < limit:
                    more = await self._claim_pass(st, queues, limit - len(out), worker_id, lease)
                    out += more
                return out

    async def _claim_pass(
        self,
        st: QueueState,
        queues: Sequence[str],
        limit: int,
        worker_id: str,
        lease: float,
        busy: bool = False,
    ) -> list[Task]:
        """Claim up to ``limit`` tasks: tickets fetched ahead first, then ``no_wait``
        pulls, queue by queue and level by level. With ``busy``, the level that fills
        the batch gets its next batch fetched in the background: the caller's next
        claim then costs one round trip (the claim's write) instead of two."""
        out: list[Task] = []
        f = fetcher(st.conn)
        stream = self.settings.tasks_stream_name
        for q in queues:
            for level in sorted(st.levels.get(q, ()), reverse=True):
                consumer = self.consumer(q, level)
                since, ahead = await self._take_ahead(st, (q, level))
                if ahead:
                    need = limit - len(out)
                    if len(ahead) > need:
                        self._keep_ahead(st, (q, level), ahead[need:], since)
                    out += await self._process(st, ahead[:need], worker_id, lease)
                for _ in range(50):  # bounded: non-claimable messages are NAKed away
                    need = limit - len(out)
                    if need <= 0:
                        if busy:
                            self._fetch_ahead(st, (q, level), consumer, limit)
                        return out
                    try:
                        msgs = await st.conn.call(
                            "fetching tasks",
                            functools.partial(f.fetch, stream, consumer, need, 0.0),
                        )
                    except ConsumerMissingError:
                        if await self._recreate_if_missing(st, q, level):
                            continue
                        break
                    if not msgs:
                        break
                    out += await self._process(st, msgs, worker_id, lease)
                    if len(msgs) < need:
                        break
        return out

    # --- tickets fetched ahead -----------------------------------------------------
    #
    # Only tickets are fetched ahead, never claims: the records stay PENDING, so a
    # crashed worker delays them by ack_wait at most, and the claim decides as always.

    def _fetch_ahead(self, st: QueueState, key: tuple[str, int], consumer: str, n: int) -> None:
        if key in st.ahead:
            return
        fetch = fetcher(st.conn).fetch(self.settings.tasks_stream_name, consumer, n, 0.0)
        ahead = Ahead(time.monotonic(), asyncio.ensure_future(fetch))
        ahead.timer = st.conn.loop.call_later(AHEAD_MAX_AGE, self._expire_ahead, st, key, ahead)
        st.ahead[key] = ahead

    def _keep_ahead(
        self, st: QueueState, key: tuple[str, int], msgs: list[Msg], since: float
    ) -> None:
        """Keep tickets fetched ahead (at ``since``) but not needed now for the next claim."""
        ahead = Ahead(since, msgs=msgs)
        if key in st.ahead:  # pragma: no cover - a concurrent claim fetched ahead meanwhile
            self._release_ahead(st, ahead)
            return
        ahead.timer = st.conn.loop.call_later(AHEAD_MAX_AGE, self._expire_ahead, st, key, ahead)
        st.ahead[key] = ahead

    async def _take_ahead(self, st: QueueState, key: tuple[str, int]) -> tuple[float, list[Msg]]:
        """The fresh tickets fetched ahead for ``key`` (waiting for the fetch if needed),
        with the time they were fetched."""
        ahead = st.ahead.pop(key, None)
        if ahead is None:
            return 0.0, []
        if ahead.timer is not None:
            ahead.timer.cancel()
        msgs = ahead.msgs
        if ahead.fetch is not None:
            fetch = ahead.fetch
            try:
                msgs = await asyncio.shield(fetch)
            except asyncio.CancelledError:
                if fetch.cancelled():
                    return 0.0, []
                # we were cancelled, not the fetch: hand its tickets back when they come
                fetch.add_done_callback(lambda _: self._release_ahead(st, ahead))
                raise
            except Exception:
                return 0.0, []  # the pull that follows reports what is wrong
        if time.monotonic() - ahead.since > AHEAD_MAX_AGE:
            self._release_ahead(st, Ahead(ahead.since, msgs=msgs))
            return 0.0, []
        return ahead.since, msgs

    def _expire_ahead(self, st: QueueState, key: tuple[str, int], ahead: Ahead) -> None:
        if st.ahead.get(key) is ahead:
            del st.ahead[key]
        if ahead.timer is not None:
            ahead.timer.cancel()
        if ahead.fetch is not None and not ahead.fetch.done():
            ahead.fetch.add_done_callback(lambda _: self._release_ahead(st, ahead))
        else:
            self._release_ahead(st, ahead)

    def _release_ahead(self, st: QueueState, ahead: Ahead) -> None:
        """NAK unclaimed tickets so that any worker gets them at once."""
        msgs = list(ahead.msgs)
        fetch = ahead.fetch
        if fetch is not None and fetch.done() and not fetch.cancelled() and not fetch.exception():
            msgs += fetch.result()
        ahead.msgs, ahead.fetch = [], None
        if not msgs or st.conn.nc.is_closed:
            return

        async def nak() -> None:
            for m in msgs:
                with contextlib.suppress(Exception):
                    await st.conn.nc.publish(m.reply, b"-NAK")

        task = asyncio.ensure_future(nak())
        st.background.add(task)
        task.add_done_callback(st.background.discard)

    async def drop_ahead(self, st: QueueState) -> None:
        """Hand back every ticket fetched ahead (the component is closing)."""
        for key, ahead in list(st.ahead.items()):
            if ahead.fetch is not None and not ahead.fetch.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(ahead.fetch), 1.0)
            self._expire_ahead(st, key, ahead)
        if st.background:
            await asyncio.gather(*st.background, return_exceptions=True)

    async def _long_poll(
        self,
        st: QueueState,
        queues: Sequence[str],
        limit: int,
        worker_id: str,
        lease: float,
        remaining: float,
    ) -> list[Task]:
        pairs = [(q, lvl) for q in queues for lvl in sorted(st.levels.get(q, ()), reverse=True)]
        window = remaining if len(pairs) == 1 else min(remaining, 1.0)
        window = min(window, max(self.settings.level_refresh, 0.05))
        f = fetcher(st.conn)
        stream = self.settings.tasks_stream_name
        polls = [
            asyncio.ensure_future(f.fetch(stream, self.consumer(q, lvl), 1, window))
            for q, lvl in pairs
        ]
        changed = asyncio.ensure_future(st.levels_event.wait())
        try:
            await asyncio.wait([*polls, changed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in [*polls, changed]:
                if not p.done():
                    p.cancel()
            await asyncio.gather(*polls, changed, return_exceptions=True)
        msgs: list[Msg] = []
        for (q, lvl), p in zip(pairs, polls, strict=True):
            if p.cancelled():
                continue
            if isinstance(p.exception(), ConsumerMissingError):
                await self._recreate_if_missing(st, q, lvl)
            elif p.exception() is None:
                msgs.extend(p.result())
        out: list[Task] = []
        for i, msg in enumerate(msgs):
            if len(out) >= limit:
                for extra in msgs[i:]:
                    await st.conn.nc.publish(extra.reply, b"-NAK")
                break
            out += await self._process(st, [msg], worker_id, lease)
        return out

    async def _process(
        self, st: QueueState, msgs: list[Msg], worker_id: str, lease: float
    ) -> list[Task]:
        """Turn fetched tickets into claims (in message order).

        A ticket published with its record's revision and bytes is tried first as it is
        (a compare-and-set against that revision, no read); a stale one (redelivery, the
        task changed since) and a bare ticket are decided on the record read from KV.
        """
        ids: dict[int, str] = {}
        known: dict[int, tuple[int, bytes]] = {}
        for i, m in enumerate(msgs):
            try:
                tid, rev, data = decode_ticket(m.data)
            except SerializationError as e:
                log.error("NATS queue: dropped a message on %s that is no task: %s", m.subject, e)
                await self._settle(st, m, Decision(Action.DROP))
                continue
            ids[i] = tid
            if rev and data:
                known[i] = (rev, data)
        todo = sorted(ids)
        claimed: dict[int, Task] = {}
        ser = self._serializer()
        for _ in range(6):  # re-decide after CAS conflicts
            if not todo:
                break
            current: dict[int, tuple[int, bytes | None]] = {}
            unknown = [i for i in todo if i not in known]
            if unknown:
                entries = await st.bucket.get_many([task_key(ids[i]) for i in unknown])
                for i, entry in zip(unknown, entries, strict=True):
                    current[i] = (entry.revision, entry.value) if entry is not None else (0, None)
            for i in todo:
                if i in known:
                    current[i] = known.pop(i)
            now = time.time()
            writes: list[tuple[int, Decision, bytes, int, Task | None]] = []
            for i in todo:
                last, stored = current[i]
                d, task = self._decide_one(stored, msgs[i], now, worker_id, lease, ser)
                if d.record is None:
                    await self._settle(st, msgs[i], d)
                    continue
                writes.append((i, d, encode_record(d.record), last, task))
            revs = await st.bucket.cas_many(
                [(task_key(ids[i]), new, last) for i, _, new, last, _ in writes]
            )
            todo = []
            for (i, d, _new, _last, task), new_rev in zip(writes, revs, strict=True):
                if new_rev is None:
                    todo.append(i)  # stale ticket or lost a race: read and look again
                    continue
                assert d.record is not None
                if d.action is Action.CLAIM and task is not None:
                    held = Held(msgs[i].reply, d.record.attempt, new_rev, d.record, lease)
                    st.held[task.id] = held
                    if abs(lease - self.settings.ack_wait) > 1e-3:
                        await self.reset_timer(st, held.reply, lease)
                    claimed[i] = task
                else:
                    if d.record.status is TaskStatus.FAILED:
                        log.error("NATS queue: task %s marked FAILED at claim: %s",
                                  ids[i], d.record.error)  # fmt: skip
                    if d.dead_letter:
                        await self._dead_letter(st, ids[i], d.record)
                    await self._settle(st, msgs[i], Decision(Action.DROP))
        for i in todo:  # still conflicting after retries: let another worker have it
            await st.conn.nc.publish(msgs[i].reply, b"-NAK")
        return [claimed[i] for i in sorted(claimed)]

    def _decide_one(
        self,
        data: bytes | None,
        msg: Msg,
        now: float,
        worker_id: str,
        lease: float,
        ser: SerializationManager,
    ) -> tuple[Decision, Task | None]:
        if data is None:
            return Decision(Action.DROP), None
        try:
            rec = decode_record(data)
        except SerializationError as e:
            queue = msg.subject[len(self.settings.tasks_subject_prefix) + 1 :].split(".")[0]
            failed = Record(
                status=TaskStatus.FAILED,
                queue=decode_token(queue),
                priority=0,
                created_at=now,
                body=b"",
                error=str(e),
            )
            return Decision(Action.WRITE_DROP, failed), None
        delivered = 1
        if rec.status is TaskStatus.WAITING:  # the only case decide() looks at it
            with contextlib.suppress(Exception):
                delivered = ack_info(msg)[1]
        d = decide(
            rec,
            now,
            worker_id=worker_id,
            lease=lease,
            max_deliver=self.settings.max_deliver,
            num_delivered=delivered,
        )
        if d.action is not Action.CLAIM:
            return d, None
        assert d.record is not None
        try:
            body = ser.decode_task(rec.body)
        except SerializationError as e:
            failed = rec.but(status=TaskStatus.FAILED, error=str(e), lease_until=None)
            return Decision(Action.WRITE_DROP, failed), None
        r = d.record
        task = body.copy(
            status=TaskStatus.RUNNING,
            attempt=r.attempt,
            worker_id=r.worker_id,
            lease_until=r.lease_until,
            run_at=r.run_at,
            error=r.error,
        )
        return d, task

    async def _settle(self, st: QueueState, msg: Msg, d: Decision) -> None:
        """Ack (drop) or NAK (later) a message that did not become a claim."""
        if d.action is Action.LATER:
            await self.reset_timer(st, msg.reply, max(d.delay, 0.001))
        else:
            await st.conn.nc.publish(msg.reply, b"+ACK")

    async def reset_timer(self, st: QueueState, reply: str, seconds: float) -> None:
        """Make the server redeliver the message ``seconds`` from now (the lease timer)."""
        if abs(seconds - self.settings.ack_wait) <= 1e-3:
            await st.conn.nc.publish(reply, b"+WPI")
        else:
            await st.conn.nc.publish(reply, b'-NAK {"delay": %d}' % int(seconds * 1e9))

    async def _dead_letter(self, st: QueueState, task_id: str, rec: Record) -> None:
        subject = f"{self.settings.dead_letter_prefix}.{encode_token(rec.queue)}"
        headers = {
            "Nats-Msg-Id": f"dead:{task_id}:{rec.attempt}",
            "Omniq-Task-Id": task_id,
            "Omniq-Reason": rec.error or "dead-lettered",
        }
        with contextlib.suppress(OmniQError):
            await st.conn.call(
                "dead-lettering a task",
                lambda: st.conn.js.publish(subject, encode_record(rec), headers=headers),
            )
