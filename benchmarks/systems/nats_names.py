"""NATS names for one system: OmniQ's per-run name prefix options, and cleanup."""

from __future__ import annotations

import re
from typing import Any

from benchmarks.systems.base import NATS_URL


def safe(prefix: str) -> str:
    return re.sub("[^A-Za-z0-9_]", "_", prefix)


def omniq_options(prefix: str) -> dict[str, Any]:
    """Options giving OmniQ's NATS backend its own stream, subject and bucket names."""
    return {"name_prefix": safe(prefix)}


async def delete_prefixed(prefix: str) -> None:
    """Delete every stream and KV/object bucket whose name starts with ``prefix``."""
    import nats

    p = safe(prefix)
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            bare = name.removeprefix("KV_").removeprefix("OBJ_")
            if bare.startswith(p):
                await js.delete_stream(name)
    finally:
        await nc.close()
