"""The dispatch problem as plain data. Pure: no database, no solver.

Times are minutes from the start of the planning day (``0`` = midnight of the day being
planned, so a 08:00 shift starts at ``480``). Every solver, the greedy baseline, the
incremental insertion and the explanations read these types and write a :class:`Plan`;
:mod:`ticketing.optimizer.routes` is the one judge of whether a plan is feasible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from ticketing.geo import LatLon

#: A day long enough to hold every window.
HORIZON_MIN = 2 * 24 * 60.0


@dataclass(frozen=True, slots=True)
class Weights:
    """How the objective trades one thing against another (cost units per minute)."""

    travel: float = 1.0  # per minute driven
    lateness: float = 2.0  # per minute past the SLA target, times the segment weight
    overtime: float = 1.5  # per minute past the shift end
    balance: float = 0.05  # per minute of the longest working day (spread the load)
    unassigned: float = 10_000.0  # per unassigned job, times the segment weight and urgency


@dataclass(frozen=True, slots=True)
class Job:
    """One ticket to be placed.

    ``window`` is hard (the site is open / the customer agreed); ``sla_due`` is soft (lateness is
    paid for, times ``weight``, the client segment's weight). ``pinned_to`` restricts the job to one
    technician; ``locked`` additionally keeps it where it is in the current plan.
    """

    id: int
    location: LatLon
    service_min: float = 60.0
    skill: str | None = None
    level: int = 1
    parts: Mapping[str, int] = field(default_factory=dict)
    tools: frozenset[str] = frozenset()
    window: tuple[float, float] = (0.0, HORIZON_MIN)
    sla_due: float = HORIZON_MIN
    weight: float = 1.0
    priority: int = 3  # 1 most urgent .. 5
    pinned_to: int | None = None
    model: str | None = None  # equipment model (skills may be model-specific: "pump@P-200")


@dataclass(frozen=True, slots=True)
class Tech:
    """One technician for the day: where they start and end, their shift and what they carry."""

    id: int
    name: str
    start: LatLon
    end: LatLon | None = None  # None: back to start
    shift: tuple[float, float] = (480.0, 1020.0)
    max_overtime_min: float = 60.0
    skills: Mapping[str, int] = field(default_factory=dict)
    tools: frozenset[str] = frozenset()
    van: Mapping[str, int] = field(default_factory=dict)
    available: bool = True
    unavailable_reason: str = ""  # shown in explanations, e.g. "off duty", "outside every shift"

    @property
    def home(self) -> LatLon:
        return self.end if self.end is not None else self.start


@dataclass(frozen=True, slots=True)
class Warehouse:
    """A stocking point a technician can drive to before a job that needs parts."""

    id: int
    name: str
    location: LatLon
    stock: Mapping[str, int] = field(default_factory=dict)
    pickup_min: float = 10.0


@dataclass(frozen=True, slots=True)
class Stop:
    """A visit on a route: a job, or a pickup at a warehouse of the parts for ``job_id``."""

    kind: Literal["job", "pickup"]
    job_id: int
    warehouse_id: int | None = None


@dataclass(frozen=True)
class Problem:
    """Everything a solver needs for one day."""

    jobs: tuple[Job, ...]
    techs: tuple[Tech, ...]
    warehouses: tuple[Warehouse, ...] = ()
    weights: Weights = Weights()
    now: float = 0.0  # minutes; nothing may start before it

    def job(self, job_id: int) -> Job:
        return self._jobs[job_id]

    def tech(self, tech_id: int) -> Tech:
        return self._techs[tech_id]

    def warehouse(self, wh_id: int) -> Warehouse:
        return self._warehouses[wh_id]

    @cached_property
    def _jobs(self) -> dict[int, Job]:
        return {j.id: j for j in self.jobs}

    @cached_property
    def _techs(self) -> dict[int, Tech]:
        return {t.id: t for t in self.techs}

    @cached_property
    def _warehouses(self) -> dict[int, Warehouse]:
        return {w.id: w for w in self.warehouses}


@dataclass(frozen=True, slots=True)
class Plan:
    """Routes per technician id (in visiting order) and the jobs nobody takes."""

    routes: Mapping[int, tuple[Stop, ...]]
    unassigned: tuple[int, ...] = ()

    def tech_of(self, job_id: int) -> int | None:
        for tech_id, stops in self.routes.items():
            if any(s.kind == "job" and s.job_id == job_id for s in stops):
                return tech_id
        return None

    def assigned(self) -> dict[int, int]:
        """job id → technician id."""
        return {s.job_id: t for t, stops in self.routes.items() for s in stops if s.kind == "job"}

    def without(self, job_id: int) -> Plan:
        """This plan with ``job_id`` (and its pickup) taken out of its route."""
        routes = {t: tuple(s for s in stops if s.job_id != job_id) for t, stops in self.routes.items()}
        return Plan(routes, tuple(u for u in self.unassigned if u != job_id))

    def with_route(self, tech_id: int, stops: tuple[Stop, ...]) -> Plan:
        routes = dict(self.routes)
        routes[tech_id] = stops
        return Plan(routes, self.unassigned)
