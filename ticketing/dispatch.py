"""What a dispatch decision is (:class:`Decision`, :class:`TechnicianView`), and the simplest rule.

Live dispatch places tickets with the optimizer (:mod:`ticketing.planning`,
:mod:`ticketing.optimizer`: time windows, skills and levels, tools and parts, SLA weights), and the
service reports its choice as a :class:`Decision`. :func:`choose_technician` is the rule the
optimizer grew out of — the nearest (by travel time) available technician with the required skill
— kept pure and small as a reference for what a decision must contain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ticketing.geo import LatLon, TravelModel


@dataclass(frozen=True, slots=True)
class TechnicianView:
    """What dispatch needs to know about one technician."""

    id: int
    name: str
    home: LatLon
    current: LatLon | None = None  # last known position; None: at home
    available: bool = True  # technicians.available (on shift, not on leave)
    busy: bool = False  # has an active assignment
    skills: Mapping[str, int] = field(default_factory=dict)  # skill code → level 1..5

    @property
    def position(self) -> LatLon:
        return self.current if self.current is not None else self.home

    def qualified(self, skill: str | None) -> bool:
        return skill is None or self.skills.get(skill, 0) >= 1


@dataclass(frozen=True, slots=True)
class Option:
    """One technician with their travel to the site."""

    technician: TechnicianView
    km: float
    eta_minutes: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The choice and why; ``technician`` is None when nobody can go (``reason`` says why)."""

    technician: TechnicianView | None
    km: float | None
    eta_minutes: float | None
    reason: str
    runner_up: Option | None = None


def choose_technician(
    site: LatLon, required_skill: str | None, candidates: Sequence[TechnicianView], travel: TravelModel
) -> Decision:
    """The nearest (by travel time) available technician qualified for ``required_skill``."""
    qualified = [t for t in candidates if t.qualified(required_skill)]
    free = [t for t in qualified if t.available and not t.busy]
    if not free:
        return Decision(None, None, None, _why_nobody(required_skill, candidates, qualified))
    options = sorted(
        (Option(t, *travel.travel(t.position, site)) for t in free),
        key=lambda o: (o.eta_minutes, o.km, o.technician.id),
    )
    best = options[0]
    runner = options[1] if len(options) > 1 else None
    label = "nearest qualified" if required_skill else "nearest available"
    reason = f"{label}: {best.km:.1f} km, ETA {best.eta_minutes:.0f} min"
    if runner is not None:
        reason += (
            f"; runner-up {runner.technician.name} at {runner.km:.1f} km "
            f"(+{runner.eta_minutes - best.eta_minutes:.0f} min)"
        )
    else:
        reason += "; no other qualified technician free"
    return Decision(best.technician, best.km, best.eta_minutes, reason, runner)


def _why_nobody(skill: str | None, candidates: Sequence[TechnicianView], qualified: Sequence[TechnicianView]) -> str:
    if not candidates:
        return "no technicians on record"
    if not qualified:
        return f"no technician has skill {skill}"
    who = "qualified technicians" if skill else "technicians"
    details = ", ".join(f"{t.name}: {'busy' if t.busy else 'unavailable'}" for t in qualified)
    return f"all {len(qualified)} {who} are busy or unavailable ({details})"
