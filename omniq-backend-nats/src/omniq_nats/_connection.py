"""The connection pool: one NATS connection per process, event loop and server set.

Components acquire a :class:`Connection` from a module-level registry keyed by
``(servers, credentials digest, TLS, loop)`` and release it when they close; the last
release closes the client. :meth:`Connection.call` runs a JetStream request, retrying
transient failures (timeouts, no responders while a restarted server recovers) within
``retry_window`` and wrapping every driver error in OmniQ's hierarchy, with secrets
scrubbed from the message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from omniq.errors import BackendError, BackendUnavailableError, OmniQError
from omniq_nats._cluster import cluster_size
from omniq_nats._config import NATSSettings
from omniq_nats._natspy import server_info, set_reconnect_policy

__all__ = ["Connection", "acquire", "pool_size", "release"]

log = logging.getLogger("omniq.backends.nats")
T = TypeVar("T")

#: Failures worth retrying: the request may not have reached a (re)starting server.
TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
)


class Connection:
    """A pooled NATS client plus its JetStream context."""

    def __init__(self, settings: NATSSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.nc: Client = Client()
        self.js: JetStreamContext = self.nc.jetstream(timeout=settings.request_timeout)
        self.refs = 0
        self.key: tuple[Any, ...] | None = None
        self.state: dict[str, Any] = {}  # per-connection caches of components (fetcher, ...)
        self._last_error = ""
        self._auth_failed = False
        #: servers in the cluster of the server first connected to (0: not clustered)
        self.cluster_size = 0
        self._disconnected_at: float | None = None

    # --- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect (failing fast at start-up) and check that JetStream is enabled."""
        s = self.settings
        # nats.py can hang closing a socket whose TLS handshake failed: bound the start-up
        budget = len(s.servers) * 2 * (s.connect_timeout + 0.2) + 2.0
        try:
            await asyncio.wait_for(self._connect(), budget)
        except TimeoutError as e:
            await self._abandon()
            self._last_error = self._last_error or f"no connection within {budget:.1f}s"
            raise self._connect_error(e) from None
        except (nats.errors.Error, OSError) as e:
            await self._abandon()
            raise self._connect_error(e) from None
        set_reconnect_policy(
            self.nc, time_wait=s.reconnect_time_wait, max_attempts=s.max_reconnect_attempts
        )
        await self._check_jetstream()
        self.cluster_size = cluster_size(server_info(self.nc))

    async def _connect(self) -> None:
        s = self.settings
        await self.nc.connect(
            servers=list(s.servers),
            name=s.name,
            user=s.user,
            password=s.password,
            token=s.token,
            tls=s.ssl_context(),
            tls_hostname=s.tls_hostname,
            connect_timeout=s.connect_timeout,  # type: ignore[arg-type]
            # start-up: try each server twice, briefly; afterwards the configured policy
            reconnect_time_wait=min(s.reconnect_time_wait, 0.2),  # type: ignore[arg-type]
            max_reconnect_attempts=1,
            allow_reconnect=True,
            verbose=s.verbose,
            pedantic=s.pedantic,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )

    async def _check_jetstream(self) -> None:
        s = self.settings
        try:
            await self.js.account_info()
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError) as e:
            await self._abandon()
            raise BackendError(
                f"JetStream is not enabled on the NATS server at {s.describe()}: start "
                "nats-server with -js (--jetstream), or add a 'jetstream {}' block to its "
                "config file"
            ) from e
        except (TimeoutError, nats.errors.Error) as e:
            await self._abandon()
            raise BackendUnavailableError(
                f"NATS server at {s.describe()} did not answer a JetStream request: "
                f"{self.settings.scrub(type(e).__name__ + ': ' + str(e))}"
            ) from e

    def _connect_error(self, e: BaseException) -> OmniQError:
        s = self.settings
        reason = self._last_error or f"{type(e).__name__}: {e}"
        auth = isinstance(e, nats.errors.AuthorizationError) or "authoriz" in reason.lower()
        if auth or self._auth_failed:
            return BackendError(
                f"the NATS server at {s.describe()} refused the connection: authorization "
                "violation (check user/password or token)"
            )
        return BackendUnavailableError(
            f"cannot connect to NATS at {s.describe()} (connect_timeout={s.connect_timeout}s): "
            f"{s.scrub(reason)}. Is nats-server running with -js on that address?"
        )

    async def _abandon(self) -> None:
        try:
            await self.nc.close()
        except Exception:  # pragma: no cover - closing a half-open client
            pass

    async def close(self) -> None:
        """Close the client (pending acks and publishes are flushed first)."""
        for hook in list(self.state.values()):
            stop = getattr(hook, "stop", None)
            if stop is not None:
                try:
                    await stop()
                except Exception:  # pragma: no cover
                    pass
        self.state.clear()
        if not self.nc.is_closed:
            try:
                await self.nc.flush(timeout=1)
            except Exception:
                pass
            try:
                await asyncio.wait_for(self.nc.close(), 5.0)
            except TimeoutError:  # pragma: no cover - a socket that will not close
                log.warning("closing the NATS connection to %s timed out", self.settings.describe())

    # --- callbacks (never log secrets: nats.py#1006) -------------------------------

    async def _on_error(self, e: Exception) -> None:
        text = self.settings.scrub(f"{type(e).__name__}: {e}")
        if isinstance(e, nats.errors.AuthorizationError) or "authorization" in text.lower():
            self._auth_failed = True
        if text != self._last_error:
            log.warning("NATS connection to %s: %s", self.settings.describe(), text)
        self._last_error = text

    async def _on_disconnected(self) -> None:
        if not self.nc.is_closed:
            self._disconnected_at = time.monotonic()
            log.warning("NATS disconnected from %s; reconnecting", self.settings.describe())

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        since, self._disconnected_at = self._disconnected_at, None
        away = f" after {time.monotonic() - since:.1f}s" if since is not None else ""
        # WARNING like the disconnect, so a worker's log shows both ends of an outage
        log.warning("NATS reconnected to %s%s", self._server_address(), away)

    def _server_address(self) -> str:
        """host:port of the server connected to (never credentials)."""
        url = self.nc.connected_url
        if url is None or not url.hostname:
            return self.settings.describe()
        return f"{url.scheme}://{url.hostname}:{url.port}"

    async def _on_closed(self) -> None:
        log.debug("NATS connection to %s closed", self.settings.describe())

    # --- requests ------------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The server's max_payload (bytes)."""
        return int(self.nc.max_payload or 1024 * 1024)

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` retrying transient failures; wrap driver errors."""
        deadline = time.monotonic() + self.settings.retry_window
        delay = 0.05
        while True:
            try:
                return await fn()
            except TRANSIENT as e:
                if self.nc.is_closed or time.monotonic() + delay > deadline:
                    raise BackendUnavailableError(
                        f"NATS at {self.settings.describe()} did not complete {what} within "
                        f"{self.settings.retry_window}s ({type(e).__name__}); is the server "
                        "down or restarting?"
                    ) from e
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except OmniQError:
                raise
            except nats.js.errors.APIError as e:
                raise BackendError(
                    f"NATS JetStream refused {what}: {self.settings.scrub(str(e.description))} "
                    f"(code {e.err_code})"
                ) from e
            except nats.errors.ConnectionClosedError as e:
                raise BackendUnavailableError(
                    f"the NATS connection to {self.settings.describe()} is closed ({what}); "
                    "reconnect attempts were exhausted or the component was closed"
                ) from e
            except nats.errors.MaxPayloadError as e:
                from omniq.errors import PayloadTooLargeError

                raise PayloadTooLargeError(
                    f"{what}: message exceeds the NATS server's max_payload of "
                    f"{self.max_payload} bytes"
                ) from e
            except nats.errors.Error as e:
                detail = self.settings.scrub(f"{type(e).__name__}: {e}")
                raise BackendError(f"NATS error during {what}: {detail}") from e


# --- the registry ------------------------------------------------------------------

_lock = threading.Lock()
_pool: dict[tuple[Any, ...], Connection] = {}
_opening: dict[tuple[Any, ...], asyncio.Future[Connection]] = {}


async def acquire(settings: NATSSettings) -> Connection:
    """A connected :class:`Connection` for ``settings`` on the running loop (shared
    unless ``settings.shared`` is False); pair every call with :func:`release`."""
    loop = asyncio.get_running_loop()
    if not settings.shared:
        conn = Connection(settings, loop)
        await conn.open()
        conn.refs = 1
        return conn
    key = (*settings.pool_key(), id(loop))
    while True:
        with _lock:
            found = _pool.get(key)
            if found is not None and found.loop is loop and not found.nc.is_closed:
                found.refs += 1
                return found
            pending = _opening.get(key)
            if pending is None:
                pending = loop.create_future()
                _opening[key] = pending
                opener = True
            else:
                opener = False
        if not opener:
            try:
                await asyncio.shield(pending)
            except OmniQError:
                raise
            continue
        conn = Connection(settings, loop)
        try:
            await conn.open()
        except BaseException as e:
            with _lock:
                _opening.pop(key, None)
            if not pending.done():
                pending.set_exception(e)
                pending.exception()  # mark retrieved
            raise
        with _lock:
            conn.key = key
            conn.refs = 1
            _pool[key] = conn
            _opening.pop(key, None)
        if not pending.done():
            pending.set_result(conn)
        return conn


async def release(conn: Connection) -> None:
    """Drop one reference; the last one closes the client."""
    with _lock:
        conn.refs -= 1
        last = conn.refs <= 0
        if last and conn.key is not None and _pool.get(conn.key) is conn:
            del _pool[conn.key]
    if last:
        await conn.close()


def _forget_after_fork() -> None:
    # the child must not use (or close) the parent's sockets; it connects anew
    global _lock
    _lock = threading.Lock()
    _pool.clear()
    _opening.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def pool_size() -> int:
    """Number of pooled connections (for tests and diagnostics)."""
    with _lock:
        return len(_pool)
