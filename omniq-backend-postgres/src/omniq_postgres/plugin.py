"""Entry point of the postgres backend (``omniq.plugins``: ``postgres = "omniq_postgres.plugin"``).

Components are named as ``"module:Class"`` strings, so loading this module imports
neither asyncpg nor the components.
"""

from __future__ import annotations

from omniq.plugins import BackendSpec, hookimpl

#: The local server's ``postgres`` database (tables in schema ``omniq``).
DEFAULT_URL = "postgresql://127.0.0.1:5432/postgres"


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """The ``postgres`` backend (all four components, plus the shared-pool bundle)."""
    return [
        BackendSpec.conventional(
            "postgres",
            "omniq_postgres",
            "Postgres",
            schemes=("postgresql", "postgres"),
            default_url=DEFAULT_URL,
            package="omniq-backend-postgres",
            description="PostgreSQL: SKIP LOCKED claims, LISTEN/NOTIFY, a schema per app",
        )
    ]
