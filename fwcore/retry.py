"""Backoff delays for retries: one pure formula, as a function of the attempt and as a generator.

Every retry loop in fieldwatch (a gateway reconnecting to a device, ingest retrying a database
write, a webhook delivery rescheduled in the database) waits ``min(cap, base·factor^(n-1))``
scaled by a random factor drawn from ``spread``. The loop that sleeps stays with its caller (its
clock, its stop event); only the arithmetic lives here, so it is tested once, with an injected
random source.

Jitter keeps many gateways (or many devices of one gateway, or many ingest workers) from retrying
in lock-step after a shared outage. ``spread`` is the band the nominal delay is scaled into:
``(0.8, 1.2)`` is ±20 % around it; ``(0.5, 1.0)`` never waits longer than nominal (the ingest
worker's choice: a database write retried sooner is cheap, later costs latency).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from itertools import count
from typing import Required, TypedDict

#: ±20 % around the nominal delay.
PLUS_MINUS_20 = (0.8, 1.2)


class Backoff(TypedDict, total=False):
    """The keyword arguments of :func:`backoff_delays`: a caller's retry policy kept as one constant."""

    base: Required[float]
    cap: Required[float]
    factor: float
    spread: tuple[float, float]


def _check(base: float, cap: float, factor: float, spread: tuple[float, float]) -> None:
    lo, hi = spread
    if base <= 0 or cap < base or factor < 1 or not 0 <= lo <= hi:
        raise ValueError("need 0 < base <= cap, factor >= 1 and 0 <= spread low <= spread high")


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    factor: float = 2.0,
    spread: tuple[float, float] = PLUS_MINUS_20,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed ``attempt`` (1-based).

    That is ``min(cap, base·factor^(attempt-1))`` times a random factor in ``spread``.
    """
    _check(base, cap, factor, spread)
    if attempt < 1:
        raise ValueError(f"attempts count from 1, got {attempt}")
    nominal = min(cap, base * factor ** min(attempt - 1, 64))  # the exponent bound: no overflow for huge attempts
    lo, hi = spread
    return nominal * (lo + (hi - lo) * rand())


def backoff_delays(
    *,
    base: float,
    cap: float,
    factor: float = 2.0,
    spread: tuple[float, float] = PLUS_MINUS_20,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """:func:`backoff_delay` for attempts 1, 2, 3, …, forever (the caller's loop decides when to stop).

    Parameters are checked when the generator is created, not at the first ``next``: a cap below
    the base is a programming error and is reported where it was written.
    """
    _check(base, cap, factor, spread)
    return (backoff_delay(n, base=base, cap=cap, factor=factor, spread=spread, rand=rand) for n in count(1))
