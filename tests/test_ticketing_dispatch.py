"""Dispatch and geometry: pure, table-driven."""

from __future__ import annotations

import pytest

from ticketing import GreatCircleTravel, TechnicianView, choose_technician, haversine_km, ticket_priority

MUNICH = (48.1374, 11.5755)
AUGSBURG = (48.3705, 10.8978)  # ~ 56 km great-circle from Munich
FREISING = (48.4029, 11.7488)  # ~ 32 km
DACHAU = (48.2600, 11.4342)  # ~ 17 km
TRAVEL = GreatCircleTravel(speed_kmh=60, detour_factor=1.0)


def tech(id: int, name: str, at, *, skills=None, available=True, busy=False, current=None) -> TechnicianView:
    return TechnicianView(id, name, at, current, available, busy, skills if skills is not None else {"pump": 2})


def test_haversine_matches_known_distances() -> None:
    """Munich–Augsburg is about 56 km and a point is 0 km from itself."""
    assert haversine_km(MUNICH, AUGSBURG) == pytest.approx(56.0, abs=1.5)
    assert haversine_km(MUNICH, MUNICH) == 0.0


def test_great_circle_travel_applies_detour_and_speed() -> None:
    """Road km = straight km × detour factor, minutes = km / speed."""
    km, minutes = GreatCircleTravel(speed_kmh=50, detour_factor=1.3).travel(MUNICH, AUGSBURG)
    assert km == pytest.approx(haversine_km(MUNICH, AUGSBURG) * 1.3)
    assert minutes == pytest.approx(km / 50 * 60)
    with pytest.raises(ValueError):
        GreatCircleTravel(speed_kmh=0)


@pytest.mark.parametrize(
    ("name", "skill", "techs", "want_id", "reason_has"),
    [
        (
            "nearest qualified wins",
            "pump",
            [tech(1, "Far", AUGSBURG), tech(2, "Near", DACHAU), tech(3, "Mid", FREISING)],
            2,
            ["nearest qualified", "runner-up Mid"],
        ),
        (
            "a nearer unqualified technician is passed over",
            "pump",
            [tech(1, "Far", AUGSBURG), tech(2, "Elec", DACHAU, skills={"electrical": 3})],
            1,
            ["no other"],
        ),
        (
            "a nearer busy technician is passed over",
            "pump",
            [tech(1, "Far", AUGSBURG), tech(2, "Busy", DACHAU, busy=True)],
            1,
            [],
        ),
        (
            "a nearer unavailable technician is passed over",
            "pump",
            [tech(1, "Far", AUGSBURG), tech(2, "Off", DACHAU, available=False)],
            1,
            [],
        ),
        (
            "current position beats home",
            "pump",
            [tech(1, "HomeNear", DACHAU), tech(2, "NowHere", AUGSBURG, current=MUNICH)],
            2,
            ["runner-up HomeNear"],
        ),
        (
            "no required skill: any available technician",
            None,
            [tech(1, "Far", AUGSBURG, skills={}), tech(2, "Near", FREISING, skills={})],
            2,
            ["nearest available"],
        ),
        ("nobody has the skill", "hydraulics", [tech(1, "A", DACHAU)], None, ["no technician has skill hydraulics"]),
        (
            "all qualified are busy or off",
            "pump",
            [tech(1, "A", DACHAU, busy=True), tech(2, "B", FREISING, available=False), tech(3, "C", MUNICH, skills={})],
            None,
            ["all 2 qualified technicians are busy or unavailable", "A: busy", "B: unavailable"],
        ),
        ("no technicians at all", "pump", [], None, ["no technicians on record"]),
    ],
)
def test_choose_technician(name, skill, techs, want_id, reason_has) -> None:
    """The nearest available qualified technician is chosen, and the reason explains the choice or its absence."""
    d = choose_technician(MUNICH, skill, techs, TRAVEL)
    assert (d.technician.id if d.technician else None) == want_id, name
    for fragment in reason_has:
        assert fragment in d.reason, (name, d.reason)
    if want_id is None:
        assert d.km is None and d.eta_minutes is None and d.runner_up is None


def test_decision_carries_distance_eta_and_runner_up() -> None:
    """The decision reports km and ETA of the chosen technician and names the runner-up with its distance."""
    d = choose_technician(MUNICH, "pump", [tech(1, "Alice", DACHAU), tech(2, "Bob", FREISING)], TRAVEL)
    km = haversine_km(DACHAU, MUNICH)
    assert d.km == pytest.approx(km) and d.eta_minutes == pytest.approx(km)  # 60 km/h: minutes == km
    assert d.runner_up is not None and d.runner_up.technician.name == "Bob"
    assert d.reason.startswith(f"nearest qualified: {km:.1f} km, ETA {km:.0f} min; runner-up Bob at ")


@pytest.mark.parametrize(
    ("severity", "segment", "want"),
    [
        ("critical", "gold", 1),
        ("major", "standard", 2),
        ("minor", "gold", 3),
        ("warning", "standard", 4),
        ("major", "platinum", 1),
        ("critical", "platinum", 1),
        ("warning", "platinum", 3),
    ],
)
def test_ticket_priority(severity: str, segment: str, want: int) -> None:
    """Priority follows severity, one step more urgent for platinum clients, never below 1."""
    assert ticket_priority(severity, segment) == want
