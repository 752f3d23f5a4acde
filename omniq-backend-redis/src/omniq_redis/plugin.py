"""Entry point of the redis backend: registers it with OmniQ (imports no driver)."""

from __future__ import annotations

from omniq.plugins import BackendSpec, hookimpl


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """Nothing yet: the backend registers itself once its components exist."""
    return []
