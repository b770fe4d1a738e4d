"""Physics of a simulated centrifugal pump (model P100). Pure: no I/O, no clocks.

The model is driven by the caller's times, so the same seed and the same
sequence of ``step(t)`` calls always give the same readings. That makes the
simulator usable in table tests and keeps the Modbus server a thin shell.

Operating point (nominal): flow 120 m³/h, discharge pressure 6 bar, motor
current 42 A, bearing temperature 60 °C (25 °C ambient + 35 K at full load),
vibration 2.5 mm/s RMS.

Bearing temperature is a first-order lag towards ``ambient + rise * load``
integrated exactly (``exp(-dt/tau)``), so the result does not depend on the
step size. A bearing-wear fault adds a constant heat source of ``rate`` K/s:
with the default ``rate=1.0`` the bearing crosses 80 °C about 22 s after the
fault starts and settles far above it, while vibration climbs steadily.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulators.equipment import Equipment

#: Names of the measurements :meth:`PumpModel.step` returns, in register-map order.
MEASUREMENTS = ("flow", "discharge_pressure", "motor_current", "bearing_temp", "vibration")
#: Faults :meth:`PumpModel.inject_fault` knows.
FAULTS = ("bearing_wear",)

#: Status word bits (input register 10 of the P100 map).
STATUS_RUNNING = 0x0001
STATUS_FAULT_ACTIVE = 0x0002
STATUS_BEARING_HOT = 0x0004  # bearing above BEARING_ALARM_C
STATUS_VIBRATION_HIGH = 0x0008  # vibration above VIBRATION_ALARM_MM_S (ISO 10816 zone C)
BEARING_ALARM_C = 80.0
VIBRATION_ALARM_MM_S = 7.1


@dataclass(frozen=True, slots=True)
class PumpSpec:
    """Nameplate numbers of one pump model; defaults are the P100."""

    nominal_flow: float = 120.0  # m3/h
    nominal_pressure: float = 6.0  # bar at nominal flow
    shutoff_pressure: float = 7.5  # bar at zero flow (pump curve H = H0 - k Q^2)
    nominal_current: float = 42.0  # A at nominal flow
    ambient: float = 25.0  # degC
    bearing_rise: float = 35.0  # K above ambient at full load
    bearing_tau: float = 120.0  # s, thermal time constant of the bearing housing
    vibration: float = 2.5  # mm/s RMS, healthy
    demand_period: float = 600.0  # s, slow swing of process demand
    demand_swing: float = 0.03  # +-3 % of nominal flow
    demand: float = 1.0  # the operating point: mean process demand, fraction of nominal flow


class PumpModel(Equipment):
    """One pump's state. Call :meth:`step` with increasing times in seconds.

    Why a class and not a function: bearing temperature, fault progress and run
    hours carry state between steps; the noise stream is owned by the instance's
    seeded RNG so two pumps with different seeds differ and the same seed repeats.
    """

    measurements = MEASUREMENTS
    faults = FAULTS
    default_fault_rate = 1.0
    kind = "pump"

    def __init__(
        self,
        seed: int = 0,
        *,
        spec: PumpSpec | None = None,
        run_hours: float | None = None,
    ) -> None:
        self.spec = spec or PumpSpec()
        self._rng = random.Random(seed)
        self._t: float | None = None
        self.bearing_temp = self.spec.ambient + self.spec.bearing_rise
        self._init_equipment(starts=0)
        #: Operating hours; a seeded, plausible starting value so fleets do not all read 0.
        self.run_hours = run_hours if run_hours is not None else round(self._rng.uniform(1_000, 30_000), 2)
        self.last: dict[str, float] = {}

    def step(self, t_seconds: float) -> dict[str, float]:
        """Advance the model to time ``t_seconds`` and return the measurements at that time.

        The first call only sets the time origin (no thermal change). Times that go
        backwards are treated as no elapsed time rather than undoing physics.
        """
        s = self.spec
        dt = 0.0 if self._t is None else max(0.0, t_seconds - self._t)
        self._t = t_seconds
        if self.running:
            self.run_hours += dt / 3600.0

        demand = s.demand * (1.0 + s.demand_swing * math.sin(2 * math.pi * t_seconds / s.demand_period))
        q = s.nominal_flow * demand if self.running else 0.0
        ratio = q / s.nominal_flow
        drop = s.shutoff_pressure - s.nominal_pressure  # pressure lost at nominal flow
        pressure = s.shutoff_pressure - drop * ratio * ratio if self.running else 0.0
        load = ratio**0.8
        friction = 0.0
        heat = 0.0
        extra_vibration = 0.0
        if self.fault == "bearing_wear":
            self.fault_seconds += dt
            heat = self.fault_rate
            # A worn bearing rattles more the longer it runs; capped at a plausible 25 mm/s.
            extra_vibration = min(22.0, 0.12 * self.fault_rate * self.fault_seconds)
            friction = min(6.0, 0.02 * self.fault_rate * self.fault_seconds)
        current = s.nominal_current * load + friction if self.running else 0.0

        # Exact solution of dT/dt = (T_eq - T)/tau + heat over dt.
        t_eq = s.ambient + s.bearing_rise * load + heat * s.bearing_tau
        self.bearing_temp = t_eq + (self.bearing_temp - t_eq) * math.exp(-dt / s.bearing_tau)

        g = self._rng.gauss
        vibration = (s.vibration * load + extra_vibration) if self.running else 0.05
        self.last = {
            "flow": max(0.0, q + g(0.0, 0.8)),
            "discharge_pressure": max(0.0, pressure + g(0.0, 0.03)),
            "motor_current": max(0.0, current + g(0.0, 0.3)),
            "bearing_temp": self.bearing_temp + g(0.0, 0.1),
            "vibration": max(0.0, vibration + g(0.0, 0.08)),
        }
        return dict(self.last)

    def status_word(self, reading: dict[str, float] | None = None) -> int:
        """The uint16 status word for a reading (default: the last one)."""
        r = self.last if reading is None else reading
        word = STATUS_RUNNING if self.running else 0
        if self.fault:
            word |= STATUS_FAULT_ACTIVE
        if r.get("bearing_temp", 0.0) > BEARING_ALARM_C:
            word |= STATUS_BEARING_HOT
        if r.get("vibration", 0.0) > VIBRATION_ALARM_MM_S:
            word |= STATUS_VIBRATION_HIGH
        return word
