"""A thin key-value layer over a JetStream stream, written for nats-server 2.9.

nats.py's ``KeyValue`` covers the basics; this adds what the backend needs and keeps to
2.9 features: direct gets, compare-and-set by revision that recognises its own write
after a retried request, pipelined writes (:mod:`omniq_nats._publish`), purges that leave no
tombstone, key listings, and scans (one ephemeral consumer streaming the values).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats.js.errors
from nats.js import api

from omniq.errors import OmniQError, SerializationError
from omniq_nats._base import NATSComponent
from omniq_nats._cluster import check_stream, placement, replicas_for
from omniq_nats._connection import log
from omniq_nats._fetch import ack_info, fetcher
from omniq_nats._natspy import api_error, status_error
from omniq_nats._publish import publisher

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from omniq_nats._config import NATSSettings
    from omniq_nats._connection import Connection

T = TypeVar("T")

__all__ = [
    "Bucket",
    "BucketComponent",
    "Entry",
    "StreamReader",
    "ensure_stream",
    "scan_stream",
    "stream_state",
]

#: Expiry of a scan's pull requests (seconds).
SCAN_WAIT = 0.05
#: Up to this many keys a scan reads by direct gets, beyond it by streaming the bucket.
SCAN_BY_GETS = 256
#: JetStream "wrong last sequence" error codes (CAS conflicts).
WRONG_LAST = (10071, 10164)
KV_OP = "KV-Operation"
#: JetStream "no message found" (a message get of a subject without messages).
NO_MESSAGE = 10037


class Entry(msgspec.Struct):
    """One key: its revision (stream sequence) and value; ``value`` None = deleted marker."""

    key: str
    revision: int
    value: bytes | None


async def ensure_stream(
    conn: Connection, config: api.StreamConfig, settings: NATSSettings | None = None
) -> api.StreamInfo:
    """Create the stream unless it exists. An existing stream is used as it is, after
    :func:`~omniq_nats._cluster.check_stream` compared its retention, replicas and
    storage with ``config`` (warning or failing on a difference)."""
    name = config.name
    assert name is not None
    settings = settings or conn.settings

    async def run() -> tuple[api.StreamInfo, bool]:
        try:
            return await conn.js.stream_info(name), True
        except nats.js.errors.NotFoundError:
            pass
        try:
            return await conn.js.add_stream(config), False
        except nats.js.errors.BadRequestError as e:
            if e.err_code == 10058:  # created concurrently with another configuration
                return await conn.js.stream_info(name), True
            raise

    info, existed = await conn.call(f"creating stream {name}", run)
    if existed:
        check_stream(settings, info.config, config)
    return info


class StreamReader:
    """Reads a stream in order through one ephemeral pull consumer (no acks), from its
    first message or from a given sequence; :meth:`read` returns the next messages,
    ``[]`` once it has read what was there when it was opened. Open it with
    :meth:`open` (an async context manager that deletes the consumer at the end)."""

    def __init__(self, conn: Connection, stream: str, consumer: str, pending: int) -> None:
        self.conn = conn
        self.stream = stream
        self.consumer = consumer
        self.pending = pending

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, conn: Connection, stream: str, *, subject: str | None = None, start_seq: int = 0
    ) -> AsyncIterator[StreamReader]:
        name = "scan" + uuid.uuid4().hex[:16]
        config: dict[str, Any] = {
            "name": name,
            "deliver_policy": "all",
            "ack_policy": "none",
            "inactive_threshold": 60_000_000_000,
            "mem_storage": True,
            "num_replicas": 1,
            "max_ack_pending": -1,
        }
        if subject is not None:
            config["filter_subject"] = subject
        if start_seq > 1:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = start_seq

        async def create() -> dict[str, Any]:
            # 2.9 creates ephemeral consumers on CONSUMER.CREATE.<stream> (no name in subject)
            msg = await conn.nc.request(
                f"$JS.API.CONSUMER.CREATE.{stream}",
                json.dumps({"stream_name": stream, "config": config}).encode(),
                timeout=conn.settings.request_timeout,
            )
            resp: dict[str, Any] = json.loads(msg.data)
            if "error" in resp:
                raise api_error(resp["error"])
            return resp

        info = await conn.call(f"reading {stream}", create)
        reader = cls(conn, stream, str(info["name"]), int(info.get("num_pending", 0)))
        try:
            yield reader
        finally:
            # fire and forget: no reply subject, the server just deletes it
            try:
                await conn.nc.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{reader.consumer}", b"")
            except Exception:  # pragma: no cover - inactive_threshold removes it anyway
                pass

    async def read(self, batch: int = 1000) -> list[Msg]:
        """The next up to ``batch`` messages, in stream order; [] at the end."""
        if self.pending <= 0 or batch <= 0:
            return []
        # a short expiry, not no_wait: a 2.9 consumer whose count of pending messages
        # includes ones deleted meanwhile (a KV key rewritten) leaves a no_wait pull
        # unanswered; a pull for exactly what is pending returns at once otherwise
        got = await self.conn.call(
            f"reading {self.stream}",
            functools.partial(
                fetcher(self.conn).fetch,
                self.stream,
                self.consumer,
                min(self.pending, batch),
                SCAN_WAIT,
            ),
        )
        if not got:
            self.pending = 0
            return []
        self.pending = min(self.pending - len(got), ack_info(got[-1])[2])
        return got


async def scan_stream(
    conn: Connection,
    stream: str,
    subject: str,
    *,
    batch: int = 1000,
) -> list[Msg]:
    """Every message of ``stream`` matching ``subject``, in stream order, through one
    ephemeral pull consumer (``DeliverAll``, no acks); reads what was there when the
    consumer was created (less what is deleted before it gets there)."""
    out: list[Msg] = []
    async with StreamReader.open(conn, stream, subject=subject) as reader:
        while got := await reader.read(batch):
            out.extend(got)
    return out


async def stream_state(conn: Connection, stream: str) -> dict[str, Any]:
    """The stream's info as the server sends it (``created``, ``state`` with
    ``first_seq``, ``last_seq``, ``messages``), without a subject listing."""

    async def run() -> dict[str, Any]:
        msg = await conn.nc.request(
            f"$JS.API.STREAM.INFO.{stream}", b"", timeout=conn.settings.request_timeout
        )
        resp: dict[str, Any] = json.loads(msg.data)
        if "error" in resp:
            raise api_error(resp["error"])
        return resp

    return await conn.call(f"reading the state of {stream}", run)


class Bucket:
    """One KV bucket (stream ``KV_<name>``, subjects ``$KV.<name>.<key>``)."""

    def __init__(self, conn: Connection, name: str, *, replicated: bool = False) -> None:
        self.conn = conn
        self.name = name
        self.stream = f"KV_{name}"
        self.pre = f"$KV.{name}."
        #: the stream has replicas: conditional writes also carry a ``Nats-Msg-Id``
        #: (see :meth:`_conditional`)
        self.replicated = replicated

    def _conditional(self, key: str, last: int) -> dict[str, str]:
        """Headers of a write that must find ``key`` at revision ``last``.

        On a replicated stream, nats-server before 2.9.21 checks
        ``Nats-Expected-Last-Subject-Sequence`` only before proposing the write, so
        concurrent writes expecting the same revision can all succeed (nats-server#4320;
        measured here on 2.9.10 R3: 116 of 300 rounds of 3 writers had 2-3 winners).
        Its duplicate detection is applied to writes in flight, so a message id made of
        the key and the expected revision lets one of them through and answers the
        others as duplicates, which :meth:`cas` counts as conflicts. Not for ``last=0``
        (a key created again after a purge would look like a duplicate)."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last)}
        if self.replicated and last > 0:
            headers["Nats-Msg-Id"] = f"cas:{key}:{last}"
        return headers

    @classmethod
    async def ensure(
        cls,
        conn: Connection,
        name: str,
        *,
        ttl: float | None = None,
        history: int = 1,
        announce: str | None = None,
        settings: NATSSettings | None = None,
        results: bool = False,
    ) -> Bucket:
        """Open the bucket, creating it (with 2.9-compatible settings) when missing.

        ``announce``: a subject prefix every write is republished to, headers only
        (``{announce}.{key}``), so others can subscribe to changes without a consumer.
        ``settings``: the component's (default: the connection's); ``results``: the
        bucket holds results (``results_replicas``).
        """
        s = settings or conn.settings
        info = await ensure_stream(
            conn,
            api.StreamConfig(
                name=f"KV_{name}",
                subjects=[f"$KV.{name}.>"],
                retention=api.RetentionPolicy.LIMITS,
                max_msgs_per_subject=history,
                max_age=ttl or None,
                duplicate_window=min(s.duplicate_window, ttl) if ttl else s.duplicate_window,
                storage=api.StorageType.MEMORY if s.storage == "memory" else api.StorageType.FILE,
                num_replicas=replicas_for(s, conn, results=results),
                placement=placement(s),
                allow_rollup_hdrs=True,
                allow_direct=True,
                deny_delete=True,
                discard=api.DiscardPolicy.NEW,
                max_msg_size=-1,
                republish=(
                    api.RePublish(src=f"$KV.{name}.>", dest=f"{announce}.>", headers_only=True)
                    if announce
                    else None
                ),
            ),
            s,
        )
        return cls(conn, name, replicated=(info.config.num_replicas or 1) > 1)

    # --- reads ---------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The key's latest entry (a deleted key gives an entry with ``value=None``).

        A direct get, except on a replicated stream: there any replica answers direct
        gets, and a follower a moment behind the leader would return an older value, or
        none for a key just created (a worker would then drop the new task's message).
        So replicated buckets read from the stream leader (``STREAM.MSG.GET``)."""
        if self.replicated:
            return await self._leader_get(key)
        subject = self.pre + key

        async def run() -> Entry | None:
            msg = await self.conn.nc.request(
                f"$JS.API.DIRECT.GET.{self.stream}.{subject}",
                b"",
                timeout=self.conn.settings.request_timeout,
            )
            headers = msg.headers or {}
            if not msg.data and headers.get("Status"):
                if headers.get("Status") == "404":
                    return None
                raise status_error(msg)
            revision = int(headers.get("Nats-Sequence", 0))
            deleted = headers.get(KV_OP) in ("DEL", "PURGE")
            return Entry(key, revision, None if deleted else bytes(msg.data))

        return await self.conn.call(f"reading {self.name}/{key}", run)

    async def _leader_get(self, key: str) -> Entry | None:
        """:meth:`get` answered by the stream leader."""
        body = json.dumps({"last_by_subj": self.pre + key}).encode()

        async def run() -> Entry | None:
            msg = await self.conn.nc.request(
                f"$JS.API.STREAM.MSG.GET.{self.stream}",
                body,
                timeout=self.conn.settings.request_timeout,
            )
            resp: dict[str, Any] = json.loads(msg.data)
            if "error" in resp:
                if resp["error"].get("err_code") == NO_MESSAGE:
                    return None
                raise api_error(resp["error"])
            m = resp["message"]
            hdrs = base64.b64decode(m.get("hdrs") or b"")
            deleted = any(
                line.split(b":", 1)[0].strip() == KV_OP.encode()
                and line.split(b":", 1)[1].strip() in (b"DEL", b"PURGE")
                for line in hdrs.split(b"\r\n")
                if b":" in line
            )
            value = None if deleted else base64.b64decode(m.get("data") or b"")
            return Entry(key, int(m["seq"]), value)

        return await self.conn.call(f"reading {self.name}/{key}", run)

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """Several keys, concurrently."""
        return list(await asyncio.gather(*(self.get(k) for k in keys)))

    async def keys(self, pattern: str = ">") -> list[str]:
        """Keys with a message matching ``pattern`` (subject wildcards; deleted keys whose
        marker remains included), from the stream's subject listing."""
        found: list[str] = []
        offset = 0
        subject = f"$JS.API.STREAM.INFO.{self.stream}"
        while True:
            body = json.dumps({"subjects_filter": self.pre + pattern, "offset": offset}).encode()

            async def run(b: bytes = body) -> dict[str, Any]:
                msg = await self.conn.nc.request(
                    subject, b, timeout=self.conn.settings.request_timeout
                )
                resp: dict[str, Any] = json.loads(msg.data)
                if "error" in resp:
                    raise api_error(resp["error"])
                return resp

            resp = await self.conn.call(f"listing keys of {self.name}", run)
            subjects = (resp.get("state") or {}).get("subjects") or {}
            found.extend(s[len(self.pre) :] for s in subjects)
            offset += len(subjects)
            if not subjects or offset >= int(resp.get("total", 0)):
                return found

    async def scan(self, pattern: str = ">") -> list[Entry]:
        """Every live key matching ``pattern`` with its value, oldest write first.

        Lists the keys, then reads them: a few by pipelined direct gets; many through one
        ephemeral consumer streaming the bucket (a key has one message, history 1: far
        cheaper than a request per key), plus direct gets for the listed keys the stream
        missed because they were rewritten before it got to them. So every key listed
        and not deleted meanwhile is returned.
        """
        keys = await self.keys(pattern)
        found: dict[str, Entry] = {}
        if len(keys) > SCAN_BY_GETS:
            latest: dict[str, Msg] = {}
            for m in await scan_stream(self.conn, self.stream, self.pre + pattern):
                latest[m.subject] = m  # stream order: the last one is the key's value
            for subject, m in latest.items():
                key = subject[len(self.pre) :]
                deleted = (m.headers or {}).get(KV_OP) in ("DEL", "PURGE")
                found[key] = Entry(key, ack_info(m)[0], None if deleted else bytes(m.data))
        missed = [k for k in keys if k not in found]
        for i in range(0, len(missed), 1000):
            for e in await self.get_many(missed[i : i + 1000]):
                if e is not None:
                    found[e.key] = e
        out = [e for e in found.values() if e.value is not None]
        out.sort(key=lambda e: e.revision)
        return out

    # --- writes --------------------------------------------------------------------

    async def put(self, key: str, value: bytes) -> int:
        """Write unconditionally; returns the new revision."""
        ack = await self.conn.call(
            f"writing {self.name}/{key}", lambda: self.conn.js.publish(self.pre + key, value)
        )
        return int(ack.seq)

    async def cas(self, key: str, value: bytes, last: int, *, retried: bool = False) -> int | None:
        """Write only if the key's revision is still ``last`` (0: the key must not exist).

        Returns the new revision, or None on a conflict. After a retried request, a
        conflict whose stored value equals ``value`` is our own earlier write: success.
        """
        tries = 1 if retried else 0
        headers = self._conditional(key, last)

        async def run() -> int | None:
            nonlocal tries
            tries += 1
            try:
                ack = await self.conn.js.publish(self.pre + key, value, headers=dict(headers))
                if ack.duplicate:  # a write expecting the same revision came first
                    return None
                return int(ack.seq)
            except nats.js.errors.APIError as e:
                if e.err_code in WRONG_LAST:
                    return None
                raise

        rev = await self.conn.call(f"updating {self.name}/{key}", run)
        if rev is None and tries > 1:
            current = await self.get(key)
            if current is not None and current.value == value:
                return current.revision
        return rev

    async def create(self, key: str, value: bytes) -> int | None:
        """Write only if the key does not exist (or was deleted); None if it exists."""
        rev = await self.cas(key, value, 0)
        if rev is not None:
            return rev
        return await self._recreate(key, value)

    async def _recreate(self, key: str, value: bytes) -> int | None:
        current = await self.get(key)
        if current is not None and current.value is None:  # a delete marker: re-create
            return await self.cas(key, value, current.revision)
        return None

    async def cas_many(self, items: Sequence[tuple[str, bytes, int]]) -> list[int | None]:
        """Pipelined :meth:`cas` of many keys (one round trip for the lot); an item whose
        pipelined write failed otherwise is settled alone, retry-safe."""
        if not items:
            return []
        results = await publisher(self.conn).publish_many(
            [(self.pre + key, value, self._conditional(key, last)) for key, value, last in items]
        )
        out: list[int | None] = []
        for (key, value, last), r in zip(items, results, strict=True):
            if isinstance(r, nats.js.errors.APIError) and r.err_code in WRONG_LAST:
                out.append(None)
            elif isinstance(r, dict) and r.get("duplicate"):
                out.append(None)  # see _conditional
            elif isinstance(r, BaseException):
                out.append(await self.cas(key, value, last, retried=True))
            else:
                out.append(int(r["seq"]))
        return out

    async def create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | None]:
        """Pipelined :meth:`create`."""
        revs = await self.cas_many([(k, v, 0) for k, v in items])
        for i, rev in enumerate(revs):
            if rev is None:
                revs[i] = await self._recreate(*items[i])
        return revs

    async def delete(self, key: str) -> None:
        """Delete a key with a marker (watchers see it)."""
        await self.conn.call(
            f"deleting {self.name}/{key}",
            lambda: self.conn.js.publish(self.pre + key, b"", headers={KV_OP: "DEL"}),
        )

    async def delete_if(self, key: str, last: int) -> bool:
        """Delete a key with a marker only if its revision is still ``last``; False
        when it was written since (then it is left alone)."""
        headers = {KV_OP: "DEL", **self._conditional(key, last)}

        async def run() -> bool:
            try:
                ack = await self.conn.js.publish(self.pre + key, b"", headers=dict(headers))
                return not ack.duplicate
            except nats.js.errors.APIError as e:
                if e.err_code in WRONG_LAST:
                    return False
                raise

        return bool(await self.conn.call(f"deleting {self.name}/{key}", run))

    async def purge_key(self, key: str) -> None:
        """Remove a key and its history without leaving a marker."""
        await self.purge_subjects(self.pre + key)

    async def purge_keys(self, keys: Sequence[str]) -> None:
        """Purge several keys with pipelined requests (no markers left)."""
        if not keys:
            return
        api_subject = f"$JS.API.STREAM.PURGE.{self.stream}"
        results = await publisher(self.conn).publish_many(
            [(api_subject, json.dumps({"filter": self.pre + k}).encode(), None) for k in keys]
        )
        for key, r in zip(keys, results, strict=True):
            if isinstance(r, BaseException):
                await self.purge_key(key)

    async def purge_revisions(self, items: Sequence[tuple[str, int]]) -> list[bool]:
        """Purge each key only if ``revision`` is still its latest (a purge of the key's
        messages up to that sequence): pipelined, no markers left. Per item whether it
        was purged (False: the key was rewritten meanwhile, or was gone already)."""
        if not items:
            return []
        api_subject = f"$JS.API.STREAM.PURGE.{self.stream}"
        requests = [
            (api_subject, json.dumps({"filter": self.pre + k, "seq": rev + 1}).encode(), None)
            for k, rev in items
        ]
        results = await publisher(self.conn).publish_many(requests)
        out: list[bool] = []
        for (key, _), (subject, body, _), r in zip(items, requests, results, strict=True):
            if isinstance(r, BaseException):
                # retried: a purge that went through the first time purges nothing now
                r = await self._request(subject, body, "purging")
                out.append(int(r.get("purged", 0)) > 0 or await self.get(key) is None)
            else:
                out.append(int(r.get("purged", 0)) > 0)
        return out

    async def _request(self, subject: str, body: bytes, what: str) -> dict[str, Any]:
        """One JetStream API request (retried while transient); the decoded response."""

        async def run() -> dict[str, Any]:
            msg = await self.conn.nc.request(
                subject, body, timeout=self.conn.settings.request_timeout
            )
            resp: dict[str, Any] = json.loads(msg.data)
            if "error" in resp:
                raise api_error(resp["error"])
            return resp

        return await self.conn.call(f"{what} {self.name}", run)

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Pipelined unconditional writes."""
        if not items:
            return
        results = await publisher(self.conn).publish_many(
            [(self.pre + k, v, None) for k, v in items]
        )
        for (key, value), r in zip(items, results, strict=True):
            if isinstance(r, BaseException):
                await self.put(key, value)

    async def purge_subjects(self, subject: str) -> None:
        """Remove every message on ``subject`` (wildcards allowed)."""
        await self.conn.call(
            f"purging {self.name}",
            lambda: self.conn.js.purge_stream(self.stream, subject=subject),
        )

    async def purge_all(self) -> None:
        """Empty the bucket."""
        await self.conn.call(f"purging {self.name}", lambda: self.conn.js.purge_stream(self.stream))


async def publish_many(
    conn: Connection,
    items: Sequence[tuple[str, bytes, dict[str, str]]],
    what: str,
    sent: Callable[[], None] | None = None,
) -> None:
    """Publish to JetStream pipelined and wait for every ack; failed items are re-sent
    one by one (safe: callers set ``Nats-Msg-Id`` so the stream drops duplicates).
    ``sent`` as in :meth:`Publisher.publish_many` (re-sent items come later)."""
    results = await publisher(conn).publish_many(items, sent)
    for (subject, payload, headers), r in zip(items, results, strict=True):
        if isinstance(r, BaseException):
            await conn.call(
                what,
                functools.partial(conn.js.publish, subject, payload, headers=dict(headers)),
            )


class BucketComponent(NATSComponent):
    """A component whose data is one KV bucket (results, schedules): the bucket per
    connection, a decoding scan, and ``drop``."""

    #: what one value is, for log messages
    item = "value"

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._buckets: dict[int, Bucket] = {}

    #: the bucket holds results: its replica count is ``results_replicas``
    results: bool = False

    def _bucket_spec(self) -> tuple[str, float | None, str]:
        """The bucket's name, TTL and announce subject prefix."""
        raise NotImplementedError

    async def _setup(self, conn: Connection) -> None:
        name, ttl, announce = self._bucket_spec()
        self._buckets[id(conn.loop)] = await Bucket.ensure(
            conn, name, ttl=ttl, announce=announce, settings=self.settings, results=self.results
        )

    async def _teardown(self, conn: Connection) -> None:
        self._buckets.pop(id(conn.loop), None)

    async def _bucket(self) -> Bucket:
        conn = await self._conn()
        return self._buckets[id(conn.loop)]

    async def _decoded(self, decode: Callable[[bytes], T]) -> list[tuple[Entry, T]]:
        """Every value of the bucket decoded, oldest write first; undecodable ones are
        logged and skipped."""
        bucket = await self._bucket()
        out: list[tuple[Entry, T]] = []
        for e in await bucket.scan(">"):
            if not e.value:
                continue
            try:
                out.append((e, decode(e.value)))
            except SerializationError as err:
                log.warning(
                    "skipping undecodable %s %s in %s: %s", self.item, e.key, bucket.name, err
                )
        return out

    async def drop(self) -> None:
        """Delete the bucket."""
        bucket = await self._bucket()
        with contextlib.suppress(OmniQError):
            await bucket.conn.call(
                f"deleting {bucket.stream}", lambda: bucket.conn.js.delete_stream(bucket.stream)
            )
