"""Entry point of the Redis backend: registers it with OmniQ (imports no driver)."""

from __future__ import annotations

from omniq.plugins import BackendSpec, hookimpl


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """The ``redis`` backend (``redis://``, ``rediss://`` and ``unix://`` URLs)."""
    return [
        BackendSpec.conventional(
            "redis",
            "omniq_redis",
            "Redis",
            schemes=("redis", "rediss", "unix"),
            default_url="redis://127.0.0.1:6379/0",
            package="omniq-backend-redis",
            description="Redis 6.2+: Lua claims, sorted sets, leases, capped event stream",
        )
    ]
