"""Plain module-level functions for the engine-correctness tests. A test registers them
on its own app (under custom names too); process-executor children import them from
here by their own module and name."""

from __future__ import annotations

import time
from pathlib import Path


def add(x: int, y: int) -> int:
    return x + y


def sleep_then_mark(seconds: float, marker: str) -> str:
    time.sleep(seconds)
    Path(marker).write_text("ran to the end")
    return "done"


def quick(x: int) -> int:
    return x


def pid_then_sleep(pid_file: str, seconds: float, marker: str) -> str:
    import os

    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    Path(marker).write_text("ran to the end")
    return "done"
