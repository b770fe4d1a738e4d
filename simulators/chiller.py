"""Physics of a simulated water-cooled chiller (model C200, R134a). Pure: no I/O, no clocks.

Like :mod:`simulators.pump`, the caller drives time with ``step(t)``, so a seed
and a sequence of times always give the same readings.

Operating point (nominal, 700 kW): chilled water leaves at 7 °C (setpoint) and
returns 5 K warmer at full load; the evaporator boils 2 K below the leaving
water (≈ 3.5 bar abs for R134a at 5 °C); the condenser condenses 5-8 K above
30 °C condenser water (≈ 9.3 bar abs at 37 °C); the compressor draws 120 A at
full load; suction superheat is held near 5 K by the expansion valve.

Saturation pressure follows ``ln p = A - B / T`` fitted to R134a at 0 °C
(2.93 bar) and 40 °C (10.17 bar), within 2 % over 0-50 °C.

Model fault ``low_refrigerant``: a leak loses ``rate`` % of the charge per
second (default 0.2 %/s, floored at 50 % charge). A starved evaporator shows the
classic signature: superheat climbs (≈ +0.6 K per % lost), evaporator pressure
falls, capacity drops so the chilled-water supply drifts above setpoint and the
current falls a little.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulators.equipment import Equipment

#: Names of the measurements :meth:`ChillerModel.step` returns.
MEASUREMENTS = (
    "chw_supply_temp",
    "chw_return_temp",
    "evap_pressure",
    "cond_pressure",
    "compressor_current",
    "superheat",
)
#: Faults :meth:`ChillerModel.inject_fault` knows.
FAULTS = ("low_refrigerant",)

STATUS_RUNNING = 0x0001
STATUS_FAULT_ACTIVE = 0x0002
STATUS_SUPERHEAT_HIGH = 0x0004  # superheat above SUPERHEAT_ALARM_K
STATUS_COND_PRESSURE_HIGH = 0x0008  # condenser above COND_PRESSURE_ALARM_BAR
SUPERHEAT_ALARM_K = 12.0
COND_PRESSURE_ALARM_BAR = 12.0

_A, _B = 10.806, 2658.0  # R134a ln(p/bar) = A - B/T


def saturation_pressure(temp_c: float) -> float:
    """R134a saturation pressure in bar (absolute) at ``temp_c`` °C."""
    return math.exp(_A - _B / (temp_c + 273.15))


@dataclass(frozen=True, slots=True)
class ChillerSpec:
    """Nameplate numbers of one chiller model; defaults are the C200."""

    setpoint: float = 7.0  # degC chilled water supply
    design_delta_t: float = 5.0  # K return - supply at full load
    evap_approach: float = 2.0  # K leaving water - evaporating temperature
    condenser_water: float = 30.0  # degC
    cond_approach: float = 5.0  # K at no load, + cond_lift at full load
    cond_lift: float = 3.0
    full_load_current: float = 120.0  # A
    superheat: float = 5.0  # K, healthy
    load_period: float = 900.0  # s, swing of the building load
    load_mean: float = 0.7
    load_swing: float = 0.15


class ChillerModel(Equipment):
    """One chiller's state. Call :meth:`step` with increasing times in seconds.

    Fault ``low_refrigerant``: its rate is the charge lost in % per second.
    """

    measurements = MEASUREMENTS
    faults = FAULTS
    default_fault_rate = 0.2
    kind = "chiller"

    def __init__(
        self,
        seed: int = 0,
        *,
        spec: ChillerSpec | None = None,
        run_hours: float | None = None,
        starts: int | None = None,
    ) -> None:
        self.spec = spec or ChillerSpec()
        self._rng = random.Random(seed)
        self._t: float | None = None
        self.charge = 1.0  # fraction of the design refrigerant charge
        self.run_hours = run_hours if run_hours is not None else round(self._rng.uniform(2_000, 40_000), 2)
        self._init_equipment(starts if starts is not None else self._rng.randint(500, 5_000))
        self.last: dict[str, float] = {}

    def clear_fault(self) -> None:
        """Repair the leak and recharge: the refrigerant charge is back to 100 %."""
        super().clear_fault()
        self.charge = 1.0

    def step(self, t_seconds: float) -> dict[str, float]:
        """Advance to ``t_seconds`` and return the measurements (first call only sets the origin)."""
        s = self.spec
        dt = 0.0 if self._t is None else max(0.0, t_seconds - self._t)
        self._t = t_seconds
        if self.fault == "low_refrigerant":
            self.fault_seconds += dt
            self.charge = max(0.5, self.charge - self.fault_rate / 100.0 * dt)
        loss = 1.0 - self.charge  # 0 .. 0.5
        g = self._rng.gauss
        if not self._running:
            # Off: water and refrigerant equalise towards the plant room temperature.
            self.last = {
                "chw_supply_temp": 12.0 + g(0.0, 0.05),
                "chw_return_temp": 12.2 + g(0.0, 0.05),
                "evap_pressure": saturation_pressure(12.0) * self.charge,
                "cond_pressure": saturation_pressure(s.condenser_water) * self.charge,
                "compressor_current": 0.0,
                "superheat": 0.0,
            }
            return dict(self.last)
        self.run_hours += dt / 3600.0
        load = s.load_mean + s.load_swing * math.sin(2 * math.pi * t_seconds / s.load_period)
        capacity = 1.0 - 0.8 * loss  # a starved evaporator cannot hold the setpoint
        supply = s.setpoint + 8.0 * loss
        ret = supply + s.design_delta_t * load
        evap_t = supply - s.evap_approach - 10.0 * loss
        cond_t = s.condenser_water + s.cond_approach + s.cond_lift * load * capacity
        current = s.full_load_current * (0.3 + 0.7 * load * capacity)
        superheat = s.superheat + 60.0 * loss
        self.last = {
            "chw_supply_temp": supply + g(0.0, 0.05),
            "chw_return_temp": ret + g(0.0, 0.05),
            "evap_pressure": saturation_pressure(evap_t) + g(0.0, 0.01),
            "cond_pressure": saturation_pressure(cond_t) + g(0.0, 0.02),
            "compressor_current": max(0.0, current + g(0.0, 0.4)),
            "superheat": max(0.0, superheat + g(0.0, 0.15)),
        }
        return dict(self.last)

    def status_word(self, reading: dict[str, float] | None = None) -> int:
        """The uint16 status word for a reading (default: the last one)."""
        r = self.last if reading is None else reading
        word = STATUS_RUNNING if self._running else 0
        if self.fault:
            word |= STATUS_FAULT_ACTIVE
        if r.get("superheat", 0.0) > SUPERHEAT_ALARM_K:
            word |= STATUS_SUPERHEAT_HIGH
        if r.get("cond_pressure", 0.0) > COND_PRESSURE_ALARM_BAR:
            word |= STATUS_COND_PRESSURE_HIGH
        return word
