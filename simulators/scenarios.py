"""Labelled runs for judging anomaly detection: equipment physics under normal operating changes, with sensor
faults injected at known times and every reading labelled. Pure and seeded: no I/O, no clocks, no numpy.

Normal operation is not flat, and a detector must not alarm on it (:class:`Operation`):

* **day and night** — the pump's ambient temperature, the chiller's condenser water and building load, the
  compressor's air demand follow a 24 h cycle;
* **load changes** — every 6-18 h (seeded) the operating point moves to another level: pump demand 75 / 90 /
  100 % of nominal flow, chiller mean load 55 / 70 / 80 %, compressor air demand 45 / 60 / 70 %;
* **set-point changes** — the chiller's chilled-water set point moves between 6.5, 7 and 8 °C every 1-3 days.

Faults (:class:`FaultPlan`) are :mod:`simulators.faults` sensor faults on one tag for a window. A row is
labelled with the fault's kind when the fault changed that row's reading (a spike fault labels only its
spikes; a drift's first reading, still on the true value, stays unlabelled); ``faults`` keeps the windows.

    run = labelled_run("pump", seed=3, seconds=7 * 86400, step_s=60,
                       faults=[FaultPlan("step", "flow", start_s=2 * 86400, duration_s=6 * 3600, magnitude=-8)])
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from simulators.chiller import ChillerModel
from simulators.compressor import CompressorModel
from simulators.faults import SENSOR_FAULTS, FaultSet
from simulators.pump import PumpModel

#: The sensor faults a labelled run can carry (every generic sensor fault).
FAULT_KINDS = SENSOR_FAULTS
#: Equipment and the tags a detector watches (the compressor's binary ``loaded`` flag is left out).
EQUIPMENT: dict[str, tuple[Callable[[int], Any], tuple[str, ...]]] = {
    "pump": (PumpModel, PumpModel.measurements),
    "chiller": (ChillerModel, ChillerModel.measurements),
    "compressor": (CompressorModel, tuple(m for m in CompressorModel.measurements if m != "loaded")),
}
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """One sensor fault on ``tag`` from ``start_s`` for ``duration_s`` (model seconds); parameters as in
    :class:`simulators.faults.FaultSet`."""

    kind: str
    tag: str
    start_s: float
    duration_s: float
    magnitude: float = 0.0  # step: the offset; spike: the size
    rate: float = 0.0  # drift: units per second
    probability: float = 0.0  # spike: chance per reading
    sigma: float = 0.0  # variance: noise standard deviation

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.duration_s <= 0:
            raise ValueError(f"{self.kind} fault on {self.tag}: duration_s must be > 0")

    def inject(self, faults: FaultSet) -> None:
        if self.kind == "drift":
            faults.drift(self.tag, self.rate)
        elif self.kind == "spike":
            faults.spike(self.tag, self.probability, self.magnitude)
        elif self.kind == "stuck":
            faults.stuck(self.tag)
        elif self.kind == "step":
            faults.step(self.tag, self.magnitude)
        elif self.kind == "variance":
            faults.variance(self.tag, self.sigma)
        else:
            faults.decouple(self.tag)


@dataclass(frozen=True, slots=True)
class Operation:
    """Normal operating changes, seeded: the day/night cycle and load and set-point steps (module docstring)."""

    seed: int = 0
    day_night: bool = True
    load_changes: bool = True
    setpoint_changes: bool = True

    def _steps(
        self, salt: int, levels: Sequence[float], lo_h: float, hi_h: float, seconds: float
    ) -> list[tuple[float, float]]:
        """[(from_s, level)] changing every lo_h-hi_h hours to another level, starting at the middle one."""
        rng = random.Random(self.seed * 7919 + salt)
        out: list[tuple[float, float]] = [(0.0, levels[len(levels) // 2])]
        t = rng.uniform(lo_h, hi_h) * 3600
        while t < seconds:
            out.append((t, rng.choice([x for x in levels if x != out[-1][1]])))
            t += rng.uniform(lo_h, hi_h) * 3600
        return out

    def schedule(self, equipment: str, seconds: float) -> _Schedule:
        rng = random.Random(self.seed * 104_729 + 17)
        phase = rng.uniform(0, 2 * math.pi)
        loads = {"pump": (0.75, 0.9, 1.0), "chiller": (0.55, 0.7, 0.8), "compressor": (0.45, 0.6, 0.7)}[equipment]
        return _Schedule(
            equipment,
            phase,
            self.day_night,
            self._steps(1, loads, 6, 18, seconds) if self.load_changes else [(0.0, loads[1])],
            self._steps(2, (6.5, 7.0, 8.0), 24, 72, seconds)
            if self.setpoint_changes and equipment == "chiller"
            else [(0.0, 7.0)],
        )


@dataclass(frozen=True)
class _Schedule:
    equipment: str
    phase: float
    day_night: bool
    loads: list[tuple[float, float]]  # [(from_s, level)]
    setpoints: list[tuple[float, float]]

    @staticmethod
    def _at(steps: list[tuple[float, float]], t: float) -> float:
        return steps[bisect.bisect_right(steps, (t, math.inf)) - 1][1]

    def spec(self, base: Any, t: float) -> Any:
        """``base`` (the model's nameplate spec) with the operating conditions at model time ``t``."""
        day = math.sin(2 * math.pi * t / DAY_S + self.phase) if self.day_night else 0.0
        load = self._at(self.loads, t)
        if self.equipment == "pump":
            return replace(base, ambient=25.0 + 6.0 * day, demand=load)
        if self.equipment == "chiller":
            return replace(
                base,
                condenser_water=30.0 + 3.0 * day,
                load_mean=load + 0.08 * day,
                setpoint=self._at(self.setpoints, t),
            )
        return replace(base, demand=load + 0.05 * day)


@dataclass
class LabelledRun:
    """Readings every ``step_s`` of one device: ``rows[i]`` has a value per tag at ``ts_ms[i]``; ``labels[i]`` is
    the kind of fault that changed that row (None: the sensors read true)."""

    equipment: str
    tags: tuple[str, ...]
    ts_ms: list[int] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    faults: list[tuple[str, str, int, int]] = field(default_factory=list)  # (kind, tag, start_ms, end_ms)


def labelled_run(
    equipment: str,
    seed: int,
    *,
    seconds: float,
    step_s: float = 60.0,
    start_ms: int = 1_700_000_000_000,
    faults: Sequence[FaultPlan] = (),
    operation: Operation | None = None,
) -> LabelledRun:
    """Simulate ``equipment`` for ``seconds`` under ``operation`` (default: every normal change, seeded like the
    run) with ``faults``; every reading labelled (module docstring)."""
    if equipment not in EQUIPMENT:
        raise ValueError(f"unknown equipment {equipment!r}; known: {', '.join(EQUIPMENT)}")
    cls, tags = EQUIPMENT[equipment]
    for f in faults:
        if f.tag not in tags:
            raise ValueError(f"{f.kind} fault: {equipment} has no tag {f.tag!r}; it has {', '.join(tags)}")
    model: Any = cls(seed)
    base = model.spec
    sched = (operation or Operation(seed)).schedule(equipment, seconds)
    out = LabelledRun(equipment, tags)
    active: dict[int, FaultSet] = {}
    steps = int(seconds // step_s)
    for k in range(steps + 1):
        t = k * step_s
        model.spec = sched.spec(base, t)
        true = model.step(t)
        read = dict(true)
        label = None
        for n, f in enumerate(faults):
            if f.start_s <= t < f.start_s + f.duration_s:
                if n not in active:
                    active[n] = FaultSet(seed * 1000 + n)
                    f.inject(active[n])
                read = active[n].apply(t, read)
                if read[f.tag] != true[f.tag]:
                    label = f.kind
            else:
                active.pop(n, None)
        if k == 0:
            continue  # the first step only sets the models' time origin
        out.ts_ms.append(start_ms + round(t * 1000))
        out.rows.append([read[tag] for tag in tags])
        out.labels.append(label)
    out.faults = [
        (f.kind, f.tag, start_ms + round(f.start_s * 1000), start_ms + round((f.start_s + f.duration_s) * 1000))
        for f in faults
    ]
    return out
