"""Retry policy: exponential backoff with equal jitter (pure maths, no I/O).

Equal jitter: a delay drawn uniformly from ``[d/2, d]`` for the exponential delay ``d``,
so retries of many tasks spread out but never collapse to zero (full jitter would draw
from ``[0, d]``)."""

from __future__ import annotations

import random

#: Upper bound of one backoff delay, in seconds.
MAX_RETRY_DELAY = 3600.0


def should_retry(attempt: int, retries: int) -> bool:
    """True when a failed run number ``attempt`` (1-based) may be retried."""
    return attempt <= retries


def backoff_delay(
    attempt: int,
    base: float,
    *,
    max_delay: float = MAX_RETRY_DELAY,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry after failed run ``attempt`` (1-based).

    ``base * 2**(attempt-1)``, capped at ``max_delay``; with jitter a uniform value in
    ``[delay/2, delay]`` so retries of many tasks spread out without collapsing to zero.
    """
    if base <= 0:
        return 0.0
    delay = float(min(base * 2.0 ** max(attempt - 1, 0), max_delay))
    if not jitter:
        return delay
    return float((rng or random).uniform(delay / 2, delay))
