"""Entry point of the NATS backend: registers it with OmniQ (imports no driver)."""

from __future__ import annotations

from omniq.plugins import BackendSpec, hookimpl


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """The ``nats`` backend (``nats://`` and ``tls://`` URLs)."""
    return [
        BackendSpec.conventional(
            "nats",
            "omniq_nats",
            "NATS",
            schemes=("nats", "tls"),
            default_url="nats://127.0.0.1:4222",
            package="omniq-backend-nats",
            description="NATS JetStream (server 2.9+): work-queue stream, KV state/results",
        )
    ]
