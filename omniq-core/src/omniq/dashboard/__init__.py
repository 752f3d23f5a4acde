"""The OmniQ web dashboard (extra ``omniq-core[dashboard]``).

``create_app(oq, token=...)`` returns a Starlette ASGI app: serve it with
``omniq dashboard -A myapp:oq`` or mount it in your own ASGI app
(``app.mount("/omniq", create_app(oq, token=...))``). It reads and acts only through
OmniQ's public API, so it works on every backend.

Importing this package needs nothing beyond omniq-core (``omniq dashboard`` is always
registered); ``create_app`` needs the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniq.dashboard.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from omniq.dashboard.app import create_app

        return create_app
    raise AttributeError(f"module 'omniq.dashboard' has no attribute {name!r}")
