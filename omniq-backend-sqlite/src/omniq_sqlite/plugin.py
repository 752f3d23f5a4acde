"""Entry point of the SQLite backend (``omniq.plugins``: ``sqlite = "omniq_sqlite.plugin"``).

Components are named as ``"module:Class"`` strings, so loading this module imports
neither aiosqlite nor the components.
"""

from __future__ import annotations

from omniq.plugins import BackendSpec, hookimpl

#: The embedded default: ``omniq.db`` in OmniQ's data directory, ``BASE_DIR`` (``.omniq``
#: unless ``OMNIQ_BASE_DIR`` says otherwise), i.e. ``.omniq/omniq.db``.
DEFAULT_URL = "sqlite:///omniq.db"


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """The ``sqlite`` backend (all four components, plus the shared-connection bundle)."""
    return [
        BackendSpec.conventional(
            "sqlite",
            "omniq_sqlite",
            "SQLite",
            schemes=("sqlite",),
            default_url=DEFAULT_URL,
            package="omniq-backend-sqlite",
            description="embedded default: one SQLite file (WAL), safe across worker processes",
        )
    ]
