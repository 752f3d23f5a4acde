"""Live workers of a file store: one JSON heartbeat file per worker."""

from __future__ import annotations

import time
from urllib.parse import quote

from omniq.models.worker import WorkerInfo, decode_worker, encode_worker
from omniq_file._store import Store


def _path(worker_id: str) -> str:
    return f"workers/{quote(worker_id, safe='')}"


def record(store: Store, info: WorkerInfo) -> None:
    """Store (or replace) a worker's heartbeat."""
    store.write(_path(info.id), encode_worker(info))


def remove(store: Store, worker_id: str) -> None:
    """Forget a worker (unknown ids are ignored)."""
    store.delete(_path(worker_id))


def live(store: Store) -> list[WorkerInfo]:
    """Live workers, oldest first; expired and foreign records are deleted."""
    now = time.time()
    out = []
    for name in store.list("workers"):
        data = store.read(f"workers/{name}")
        info = None if data is None else decode_worker(data)
        if info is None or not info.is_live(now):
            store.delete(f"workers/{name}")
            continue
        out.append(info)
    return sorted(out, key=lambda w: w.started_at)
