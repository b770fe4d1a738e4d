"""What every simulated equipment model shares: a running flag that counts starts, and one injectable
fault with a rate and an age.

The physics differ per model (``pump``, ``chiller``, ``compressor``); this part does not, and the
Modbus/OPC-UA servers and the CLI drive all models through it (``inject_fault``, ``clear_fault``,
``running``, ``starts``).
"""

from __future__ import annotations

import math


class Equipment:
    """Base of the simulated models. Subclasses set :attr:`faults` and :attr:`default_fault_rate`."""

    #: The model-specific faults; the first is the default of :meth:`inject_fault`.
    faults: tuple[str, ...] = ()
    #: Rate used when :meth:`inject_fault` is called without one (its unit is the model's, see its docs).
    default_fault_rate = 1.0
    #: Name used in error messages ("unknown chiller fault …").
    kind = "equipment"

    def _init_equipment(self, starts: int) -> None:
        """Running, with ``starts`` counted so far and no fault."""
        self._running = True
        self.starts = starts
        self.fault: str | None = None
        self.fault_rate = 0.0
        self.fault_seconds = 0.0

    @property
    def running(self) -> bool:
        return self._running

    @running.setter
    def running(self, value: bool) -> None:
        """Starting a stopped machine counts a start (what start-based maintenance plans count)."""
        if value and not self._running:
            self.starts += 1
        self._running = bool(value)

    def inject_fault(self, kind: str | None = None, rate: float | None = None) -> None:
        """Start fault ``kind`` (default: the model's first) progressing at ``rate``; a bad kind or rate is refused."""
        kind = kind or self.faults[0]
        rate = self.default_fault_rate if rate is None else rate
        if kind not in self.faults:
            raise ValueError(f"unknown {self.kind} fault {kind!r}; known faults: {', '.join(self.faults)}")
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"fault rate must be a finite number >= 0, not {rate!r}")
        self.fault, self.fault_rate, self.fault_seconds = kind, rate, 0.0

    def clear_fault(self) -> None:
        """End the fault (the machine is repaired); subclasses also undo its lasting effects."""
        self.fault, self.fault_rate, self.fault_seconds = None, 0.0, 0.0
