"""What every Redis component shares: URL and options, the client (pool), key names.

Every key of one app starts with the hash tag ``{prefix}:``, so all keys of an app live
in one Redis Cluster slot and each Lua script touches one slot.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from omniq.errors import ConfigurationError
from omniq.serialization.manager import SerializationManager, default_manager

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "omniq"
#: Items handled per round trip by sweeps (cleanup, purge, listing): never one long call.
BATCH = 500


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


#: URL query options read by OmniQ (the others go to redis-py): ``?prefix=app``.
OMNIQ_QUERY = ("prefix", "default_lease", "events_maxlen")


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without OmniQ's query options, and those options."""
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k in OMNIQ_QUERY:
            ours[k] = v
        else:
            rest.append((k, v))
    base = url.split("?", 1)[0]  # as given: urlunsplit would turn unix:/// into unix:/
    return (f"{base}?{urlencode(rest, quote_via=quote)}" if rest else base), ours


def client_options(options: dict[str, Any]) -> dict[str, Any]:
    """redis-py options with OmniQ's defaults: reconnect with backoff for about 30 s
    (a server restart), unless ``retry`` is given."""
    out = dict(options)
    if "retry" not in out:
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        out["retry"] = Retry(ExponentialBackoff(cap=1.0, base=0.05), 40)
    return out


def key_prefix(prefix: str) -> str:
    """The hash-tagged prefix of every key of ``prefix``: ``{prefix}:``."""
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigurationError(f"redis prefix must be non-empty without braces, got {prefix!r}")
    return f"{{{prefix}}}:"


class RedisComponent:
    """Mixin for the four components (put it before the storage ABC in the bases).

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (default
    ``redis://127.0.0.1:6379/0``). ``prefix`` names the app's keys (default ``omniq``).
    ``client=`` shares an existing ``redis.asyncio.Redis`` (what :class:`RedisBackend`
    does); other keyword options (``password``, ``username``, ``ssl_ca_certs``,
    ``socket_timeout``, ...) go to ``redis.asyncio.Redis.from_url``.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix")

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str | None = None,
        client: aioredis.Redis | None = None,
        serializer: SerializationManager | None = None,
        **options: Any,
    ) -> None:
        self._url, self.url_options = split_url(url or DEFAULT_URL)
        scheme = urlsplit(self._url).scheme
        if scheme not in self.schemes:
            raise ConfigurationError(
                f"redis backend URL must start with redis://, rediss:// or unix://, "
                f"got {redact(self._url)!r}"
            )
        self.prefix = prefix or self.url_options.get("prefix") or DEFAULT_PREFIX
        self.p = key_prefix(self.prefix)
        self._serializer = serializer
        self._options = options
        self._client: aioredis.Redis | None = client
        self._owns_client = client is None
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def url(self) -> str:
        """The URL, password redacted."""
        return redact(self._url)

    @property
    def serializer(self) -> SerializationManager:
        """The serialization manager (the process default unless one was given)."""
        return self._serializer or default_manager()

    @property
    def store_key(self) -> Hashable:
        """The server (its URL) and the key prefix."""
        return ("redis", self._url, self.p)

    async def connect(self) -> None:
        """Create the client (a connection pool; connections open on first use)."""
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self._url, **client_options(self._options))
            self._owns_client = True

    async def close(self) -> None:
        """Close the pool if this component made it."""
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None and self._owns_client:
            await client.aclose()
        elif client is not None:
            self._client = client  # shared: keep it for the bundle

    async def redis(self) -> aioredis.Redis:
        """The client, created on first use."""
        if self._client is None:
            await self.connect()
        assert self._client is not None
        return self._client

    def block_limit(self) -> float:
        """The longest blocking call this client may make: under its socket timeout
        (redis-py 8 defaults to 5 s; a longer block would raise TimeoutError)."""
        timeout = None
        if self._client is not None:
            timeout = self._client.connection_pool.connection_kwargs.get("socket_timeout", 5.0)
        return 2.0 if timeout is None else max(min(2.0, float(timeout) / 2), 0.05)

    async def script(self, name: str, source: str) -> AsyncScript:
        """A registered Lua script (EVALSHA, reloaded on NOSCRIPT)."""
        s = self._scripts.get(name)
        if s is None:
            s = (await self.redis()).register_script(source)
            self._scripts[name] = s
        return s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, prefix={self.prefix!r})"
