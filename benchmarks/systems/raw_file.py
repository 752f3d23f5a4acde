"""The raw ceiling on a local directory: one file per task, claims by ``os.rename``.

Same durability as OmniQ's file backend by default (``sync=false``): no fsync, so a
write survives a crash of the process, not of the machine; every file is published
atomically (written under ``tmp/``, then renamed into place). Layout::

    ready/<ns>-<pid>-<seq>     a queued task (JSON payload); names sort in claim order
    claimed/<name>             claimed by one worker (``os.rename`` out of ready/)
    results/<name>             the task's result (written to tmp/, then renamed)

Bulk enqueue writes N files. A worker lists ``ready/`` once, claims each name in order
with one rename (a lost race is skipped), reads the payload, runs the no-op, writes the
result and removes the claimed file; when ``ready/`` is empty it polls with backoff from
1 ms to 50 ms (OmniQ's file backend: 2 ms to 50 ms). There are no leases: a task claimed
by a worker that dies stays in ``claimed/``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from benchmarks.systems.base import SCRATCH, System, discard_dir
from benchmarks.systems.common import timed_loop

#: Durability of the file rows (OmniQ's file backend by default, huey's FileHuey, this loop).
NOFSYNC = (
    "no fsync (files published by rename): survives a crash of the process, not of the machine"
)


def root(prefix: str) -> Path:
    return SCRATCH / f"{prefix}-raw"


def noop() -> None:
    return None


class _Dirs:
    """The four directories of one raw file queue, as plain strings."""

    def __init__(self, prefix: str) -> None:
        base = root(prefix)
        self.tmp, self.ready, self.claimed, self.results = (
            str(base / d) for d in ("tmp", "ready", "claimed", "results")
        )

    def make(self) -> None:
        for d in (self.tmp, self.ready, self.claimed, self.results):
            os.makedirs(d, exist_ok=True)

    def publish(self, directory: str, name: str, data: bytes) -> None:
        """Write ``data`` to ``directory/name`` atomically (tmp file, then rename)."""
        tmp = os.path.join(self.tmp, f"{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(directory, name))


class RawFile(System):
    name = "raw rename loop"
    server = "file"
    kind = "raw"
    durability = f"{NOFSYNC} (as OmniQ's default); no leases"
    bulk = True
    bulk_note = "N files (each written under `tmp/`, renamed into `ready/`)"
    worker_note = (
        "`python -m benchmarks.systems.raw_file`: list `ready/` once, claim by `os.rename` "
        "into `claimed/`, write the result file, remove the claimed file; no fsync (as "
        "OmniQ's default): a write survives a crash of the process, not of the machine; "
        "no leases"
    )
    progress_note = "names in `ready/` + `claimed/`"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.dirs = _Dirs(prefix)
        self._seq = 0

    def setup(self) -> None:
        discard_dir(root(self.prefix))
        self.dirs.make()

    def teardown(self) -> None:
        discard_dir(root(self.prefix))

    def _name(self) -> str:
        self._seq += 1
        return f"{time.time_ns():020d}-{os.getpid()}-{self._seq:010d}"

    def enqueue_bulk(self, n: int) -> None:
        d = self.dirs
        for _ in range(n):
            name = self._name()
            d.publish(d.ready, name, json.dumps({"id": name, "fn": "noop"}).encode())

    def remaining(self) -> int:
        return len(os.listdir(self.dirs.ready)) + len(os.listdir(self.dirs.claimed))

    def worker_cmd(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.systems.raw_file"]

    def latency(self, n: int, warmup: int) -> list[float]:
        d = self.dirs

        def one() -> None:
            name = self._name()
            d.publish(d.ready, name, json.dumps({"id": name, "fn": "noop"}).encode())
            path = os.path.join(d.results, name)
            delay = 0.001
            while True:
                try:
                    with open(path, "rb") as f:
                        json.loads(f.read())
                    return
                except FileNotFoundError:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)

        return timed_loop(one, n, warmup)


def worker(prefix: str) -> None:
    d = _Dirs(prefix)
    d.make()
    delay = 0.001
    while True:
        names = sorted(os.listdir(d.ready))
        if not names:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        delay = 0.001
        for name in names:
            claimed = os.path.join(d.claimed, name)
            try:
                os.rename(os.path.join(d.ready, name), claimed)
            except FileNotFoundError:
                continue  # another worker won it
            with open(claimed, "rb") as f:
                json.loads(f.read())
            d.publish(d.results, name, json.dumps(noop()).encode())
            os.unlink(claimed)


if __name__ == "__main__":
    worker(os.environ["BENCH_PREFIX"])
