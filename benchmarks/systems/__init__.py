"""Every benchmarked system, by the server it runs on (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

#: server -> "module:Class" of each system on it; OmniQ rows first, then raw, then peers.
SYSTEMS: dict[str, list[str]] = {
    "memory": ["omniq:OmniQMemory"],
    "sqlite": [
        "omniq:OmniQSQLite",
        "omniq:OmniQSQLiteNormal",
        "raw_sqlite:RawSQLite",
        "raw_sqlite:RawSQLiteNormal",
        "peer_huey:HueySQLite",
    ],
    "nats": ["omniq:OmniQNATS", "raw_nats:RawNATS", "peer_taskiq:TaskiqNATS"],
    "redis": [
        "omniq:OmniQRedis",
        "raw_redis:RawRedis",
        "peer_taskiq:TaskiqRedis",
        "peer_arq:Arq",
        "peer_rq:RQ",
        "peer_huey:HueyRedis",
        "peer_dramatiq:Dramatiq",
        "peer_saq:Saq",
        "peer_streaq:Streaq",
        "peer_celery:Celery",
    ],
    "file": ["omniq:OmniQFile", "raw_file:RawFile", "peer_huey:HueyFile"],
    "postgres": [
        "omniq:OmniQPostgres",
        "raw_postgres:RawPostgres",
        "peer_procrastinate:Procrastinate",
        "peer_pgqueuer:PgQueuer",
    ],
}

#: OmniQ rows shown in every report (users weigh OmniQ-on-NATS against Celery-on-Redis).
OMNIQ_ROWS = ["omniq:OmniQMemory", "omniq:OmniQSQLite", "omniq:OmniQNATS"]

BACKENDS = ["memory", "sqlite", "nats", "redis", "postgres", "file"]


def systems_for(backend: str) -> list[str]:
    """The systems a ``run --backend`` runs: OmniQ rows, then the server's raw and peers."""
    servers = BACKENDS if backend == "all" else [backend]
    out = list(OMNIQ_ROWS)
    for s in servers:
        out.extend(x for x in SYSTEMS[s] if x not in out)
    return out


def load(ref: str) -> type[Any]:
    module, _, cls = ref.partition(":")
    return getattr(importlib.import_module(f"benchmarks.systems.{module}"), cls)  # type: ignore[no-any-return]
