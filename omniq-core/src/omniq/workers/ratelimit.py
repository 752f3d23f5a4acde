"""Per-task rate limits (``rate_limit="100/m"``), enforced per worker process."""

from __future__ import annotations

import re
import time

import anyio

from omniq.errors import ConfigurationError

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([a-z]+)\s*$")


def parse_rate(spec: str) -> float:
    """Runs per second from ``"N/s"``, ``"N/m"``, ``"N/h"``, ``"N/d"`` (or ``"N/10s"``)."""
    m = _PATTERN.match(spec.lower())
    if not m or m.group(3) not in _UNITS or float(m.group(1)) <= 0:
        raise ConfigurationError(
            f"invalid rate_limit {spec!r}: expected COUNT/PERIOD such as '100/m', '5/s', "
            "'1000/h' or '10/30s'"
        )
    period = _UNITS[m.group(3)] * (int(m.group(2)) if m.group(2) else 1)
    return float(m.group(1)) / period


class RateLimiter:
    """Spaces starts evenly: at most ``rate`` per second, bursting up to one period."""

    def __init__(self, spec: str) -> None:
        self.rate = parse_rate(spec)
        self.interval = 1.0 / self.rate
        self._next = time.monotonic()
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        """Wait until the next run may start."""
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(self._next, now) + self.interval
        if wait > 0:
            await anyio.sleep(wait)
