"""Physics of a simulated oil-injected screw air compressor (model A300). Pure: no I/O, no clocks.

Like :mod:`simulators.pump`, the caller drives time with ``step(t)``, so a seed
and a sequence of times always give the same readings.

Load/unload control, as on most fixed-speed screw compressors: the machine is
*loaded* (delivering air) until the receiver reaches the unload pressure
(7.5 bar g), then *unloaded* (running, inlet closed) until it falls to the load
pressure (6.5 bar g). With air demand ``d`` (fraction of free air delivery) the
receiver pressure rises at ``k (1 - d)`` bar/s loaded and falls at ``k d``
unloaded. Switching instants are solved exactly inside a step, so the cycle
does not depend on how often the model is stepped.

Oil temperature is a first-order lag (tau 300 s) towards 82 °C loaded / 68 °C
unloaded; motor current is 95 A loaded, 38 A unloaded; vibration 1.8 / 1.2 mm/s.
The refrigerated dryer holds a pressure dew point near 3 °C.

Model fault ``oil_degradation``: aged oil lubricates and cools worse — a heat
source of ``rate`` K/s on the oil (default 0.5) and slowly rising vibration and
current. The oil crosses the 100 °C alarm within a minute or so at the default rate.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulators.equipment import Equipment

#: Names of the measurements :meth:`CompressorModel.step` returns.
MEASUREMENTS = ("discharge_pressure", "oil_temp", "motor_current", "vibration", "dew_point", "loaded")
#: Faults :meth:`CompressorModel.inject_fault` knows.
FAULTS = ("oil_degradation",)

STATUS_RUNNING = 0x0001
STATUS_FAULT_ACTIVE = 0x0002
STATUS_OIL_HOT = 0x0004  # oil above OIL_ALARM_C
STATUS_LOADED = 0x0008
OIL_ALARM_C = 100.0


@dataclass(frozen=True, slots=True)
class CompressorSpec:
    """Nameplate numbers of one compressor model; defaults are the A300."""

    load_pressure: float = 6.5  # bar g: load below
    unload_pressure: float = 7.5  # bar g: unload above
    pressure_rate: float = 0.2  # k, bar/s at zero demand when loaded
    demand: float = 0.6  # mean air demand, fraction of delivery
    demand_swing: float = 0.1
    demand_period: float = 600.0  # s
    oil_loaded: float = 82.0  # degC equilibrium
    oil_unloaded: float = 68.0
    oil_tau: float = 300.0  # s
    current_loaded: float = 95.0  # A
    current_unloaded: float = 38.0
    vibration_loaded: float = 1.8  # mm/s RMS
    vibration_unloaded: float = 1.2
    dew_point: float = 3.0  # degC pressure dew point


class CompressorModel(Equipment):
    """One compressor's state. Call :meth:`step` with increasing times in seconds.

    Fault ``oil_degradation``: its rate is the extra oil heating in K/s (clearing it = an oil change).
    """

    measurements = MEASUREMENTS
    faults = FAULTS
    default_fault_rate = 0.5
    kind = "compressor"

    def __init__(
        self,
        seed: int = 0,
        *,
        spec: CompressorSpec | None = None,
        run_hours: float | None = None,
        starts: int | None = None,
    ) -> None:
        self.spec = spec or CompressorSpec()
        self._rng = random.Random(seed)
        self._t: float | None = None
        self._init_equipment(starts if starts is not None else self._rng.randint(200, 20_000))
        # Start somewhere in the cycle, seeded, so a fleet does not switch in lockstep.
        self.pressure = self._rng.uniform(self.spec.load_pressure, self.spec.unload_pressure)
        self.is_loaded = self._rng.random() < 0.5
        self.oil_temp = self.spec.oil_loaded - 5.0
        self.run_hours = run_hours if run_hours is not None else round(self._rng.uniform(1_000, 50_000), 2)
        self.last: dict[str, float] = {}

    def _advance_pressure(self, t0: float, dt: float) -> float:
        """Integrate the load/unload cycle over ``dt``; returns the fraction of it spent loaded."""
        s = self.spec
        loaded_time = 0.0
        left = dt
        t = t0
        while left > 1e-12:
            # Demand is piecewise constant on whole seconds of model time, so any step size sees the same.
            second = math.floor(t + 1e-9)
            d = s.demand + s.demand_swing * math.sin(2 * math.pi * second / s.demand_period)
            if not self._running:
                self.pressure = max(0.0, self.pressure - s.pressure_rate * d * left)
                return 0.0
            if self.is_loaded:
                rate = s.pressure_rate * (1.0 - d)
                to_switch = (s.unload_pressure - self.pressure) / rate if rate > 0 else math.inf
            else:
                rate = -s.pressure_rate * d
                to_switch = (self.pressure - s.load_pressure) / -rate if rate < 0 else math.inf
            span = min(left, max(0.0, to_switch), second + 1 - t)
            self.pressure += rate * span
            if self.is_loaded:
                loaded_time += span
            if span >= to_switch:
                self.is_loaded = not self.is_loaded
            left -= span
            t += span
        return loaded_time / dt if dt > 0 else (1.0 if self.is_loaded else 0.0)

    def step(self, t_seconds: float) -> dict[str, float]:
        """Advance to ``t_seconds`` and return the measurements (first call only sets the origin)."""
        s = self.spec
        dt = 0.0 if self._t is None else max(0.0, t_seconds - self._t)
        t0 = t_seconds if self._t is None else self._t
        self._t = t_seconds
        duty = self._advance_pressure(t0, dt)
        heat = 0.0
        extra_vibration = extra_current = 0.0
        if self.fault == "oil_degradation":
            self.fault_seconds += dt
            heat = self.fault_rate
            extra_vibration = min(4.0, 0.01 * self.fault_rate * self.fault_seconds)
            extra_current = min(8.0, 0.02 * self.fault_rate * self.fault_seconds)
        if self._running:
            self.run_hours += dt / 3600.0
            target = s.oil_unloaded + (s.oil_loaded - s.oil_unloaded) * duty + heat * s.oil_tau
        else:
            target = 25.0
        self.oil_temp = target + (self.oil_temp - target) * math.exp(-dt / s.oil_tau)
        g = self._rng.gauss
        loaded = self.is_loaded and self._running
        if self._running:
            current = (s.current_loaded if loaded else s.current_unloaded) + extra_current
            vibration = (s.vibration_loaded if loaded else s.vibration_unloaded) + extra_vibration
        else:
            current, vibration = 0.0, 0.02
        self.last = {
            "discharge_pressure": max(0.0, self.pressure + g(0.0, 0.01)),
            "oil_temp": self.oil_temp + g(0.0, 0.1),
            "motor_current": max(0.0, current + g(0.0, 0.5)),
            "vibration": max(0.0, vibration + g(0.0, 0.05)),
            "dew_point": s.dew_point + g(0.0, 0.1),
            "loaded": 1.0 if loaded else 0.0,
        }
        return dict(self.last)

    def status_word(self, reading: dict[str, float] | None = None) -> int:
        """The uint16 status word for a reading (default: the last one)."""
        r = self.last if reading is None else reading
        word = STATUS_RUNNING if self._running else 0
        if self.fault:
            word |= STATUS_FAULT_ACTIVE
        if r.get("oil_temp", 0.0) > OIL_ALARM_C:
            word |= STATUS_OIL_HOT
        if r.get("loaded", 0.0):
            word |= STATUS_LOADED
        return word
