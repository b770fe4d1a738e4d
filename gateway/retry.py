"""Backoff delays as a small pure generator; the loop that sleeps lives with its caller.

Exponential growth with a cap and full-range jitter keeps many gateways (or many
devices of one gateway) from retrying in lock-step after a shared outage.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(
    base: float = 0.5,
    cap: float = 30.0,
    factor: float = 2.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield ``base, base*factor, …`` capped at ``cap``, each scaled by ``1 ± jitter`` at random."""
    if base <= 0 or cap < base or factor < 1 or not 0 <= jitter < 1:
        raise ValueError("need 0 < base <= cap, factor >= 1 and 0 <= jitter < 1")
    rng = rng or random.Random()
    delay = base
    while True:
        yield min(cap, delay) * (1 + rng.uniform(-jitter, jitter))
        delay = min(cap, delay * factor)
