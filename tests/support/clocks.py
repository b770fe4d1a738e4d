"""One hand-driven clock for code that takes its clock as a parameter.

The buffer, the forwarder, the simulators and the registry cache accept a ``clock``
callable; handing them this one lets a test decide time instead of waiting for it::

    clock = FakeClock()
    fw = Forwarder(buf, send, config, clock=clock)   # the clock itself: monotonic seconds
    clock.advance(1.5)

``t`` is the monotonic reading in seconds (assign it to jump); :meth:`time` is wall time,
``epoch`` seconds after 1970 plus ``t``, for code that wants ``time.time``.
"""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds ``t`` (the call value) and wall time ``epoch + t``; moves only when told to."""

    def __init__(self, t: float = 0.0, *, epoch: float = 1_700_000_000.0) -> None:
        self.t = t
        self.epoch = epoch

    def __call__(self) -> float:
        return self.t

    def monotonic(self) -> float:
        """Seconds since an arbitrary start, as ``time.monotonic``."""
        return self.t

    def time(self) -> float:
        """Wall time in epoch seconds, as ``time.time``."""
        return self.epoch + self.t

    def time_ms(self) -> int:
        """Wall time in epoch milliseconds, as the wire contract stamps points."""
        return int(self.time() * 1000)

    def advance(self, seconds: float) -> float:
        """Move both readings forward by ``seconds``; returns the new ``t``."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self.t += seconds
        return self.t

    def __repr__(self) -> str:
        return f"FakeClock(t={self.t!r})"
