"""Auto-resolve when the alarm clears, through the real alarm lifecycle: readings → RuleEvaluator
opens and clears the alarm → the ticketing service resolves (or annotates) the ticket."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from rules import RuleEvaluator, create_rule
from tests.support.points import Point
from tests.support.waits import wait_until
from ticketing import TicketingService, create_technician, ensure_skill
from ticketing.controls import transition

T0 = 1_700_000_000_000


@dataclass
class Plant:
    url: str
    rule: int
    pump: int
    tech: int


def _plant(url: str, *, segment_setting: bool = False) -> Plant:
    """A gold client's pump with a hot-bearing rule (no duration) and one pump technician."""
    with psycopg.connect(url) as conn:
        ensure_skill(conn, "pump")
        updated = conn.execute(
            "UPDATE sla_segments SET auto_resolve_on_clear = %s WHERE name = 'gold'", (segment_setting,)
        )
        assert updated.rowcount == 1  # the migrations seed the segments
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude)"
            " VALUES (%s, 'plant', 'Plant', 48.14, 11.58) RETURNING id",
            (client,),
        ).fetchone()[0]
        pump = conn.execute(
            "INSERT INTO devices (site_id, key, name, equipment_model)"
            " VALUES (%s, 'pump-1', 'pump-1', 'P100') RETURNING id",
            (site,),
        ).fetchone()[0]
        rule = create_rule(
            conn,
            name="hot bearing",
            tag="bearing_temp",
            operator=">",
            threshold=80,
            duration_s=0,
            severity="major",
            problem_code="BEARING_OVERHEAT",
            required_skill="pump",
        ).id
        tech = create_technician(conn, name="Ana", email="ana@x", home_lat=48.15, home_lon=11.58, skills={"pump": 3}).id
    return Plant(url, rule, pump, tech)


def _reading(plant: Plant, second: int, value: float) -> list[Point]:
    return [Point(plant.pump, "bearing_temp", T0 + second * 1000, value)]


def _ticket(url: str) -> tuple[int | None, str | None, list[str], bool]:
    """(id, status, notes, has an active assignment) of the only ticket (Nones before there is one)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id, status FROM tickets").fetchone()
        if row is None:
            return None, None, [], False
        tid, status = row
        notes = [
            r[0]
            for r in conn.execute("SELECT body FROM ticket_notes WHERE ticket_id = %s ORDER BY id", (tid,)).fetchall()
        ]
        active = conn.execute("SELECT count(*) FROM assignments WHERE ticket_id = %s AND active", (tid,)).fetchone()[0]
    return tid, status, notes, bool(active)


def test_cleared_alarm_resolves_an_assigned_ticket_live(db_url: str) -> None:
    """With the segment setting on, the alarm_cleared event resolves the assigned ticket with a note
    and ends the technician's assignment; the service reacts to the NOTIFY, no sweep needed."""
    plant = _plant(db_url, segment_setting=True)
    svc = TicketingService(db_url, sweep_interval_s=3600)
    with RuleEvaluator(db_url) as ev, svc:
        svc.start()
        ev.process(_reading(plant, 0, 90))  # opens the alarm → ticket → Ana
        wait_until(lambda: _ticket(db_url), done=lambda t: t[1] == "assigned", what="the ticket to be assigned")
        ev.process(_reading(plant, 10, 60))  # the alarm clears
        wait_until(lambda: _ticket(db_url), done=lambda t: t[1] == "resolved", what="the ticket to be resolved")
    _tid, status, notes, active = _ticket(db_url)
    assert (status, notes, active) == ("resolved", ["alarm cleared"], False)
    with psycopg.connect(db_url) as conn:
        actor = conn.execute("SELECT actor FROM ticket_status_history WHERE status = 'resolved'").fetchone()[0]
    assert actor == "ticketing"


@pytest.mark.parametrize("status", ["en_route", "on_site"])
def test_a_technician_under_way_keeps_the_ticket_and_gets_a_note(db_url: str, status: str) -> None:
    """En route or on site, the ticket stays as it is; a note says the alarm cleared, once."""
    plant = _plant(db_url, segment_setting=True)
    with RuleEvaluator(db_url) as ev, TicketingService(db_url) as svc:
        (opened,) = ev.process(_reading(plant, 0, 90))
        svc.handle_alarm(opened.alarm_id)
        tid = _ticket(db_url)[0]
        with psycopg.connect(db_url) as conn:
            transition(conn, tid, "en_route", actor="ana")
            if status == "on_site":
                transition(conn, tid, "on_site", actor="ana")
        (cleared,) = ev.process(_reading(plant, 10, 60))
        outcome = svc.handle_alarm_cleared(cleared.alarm_id)
        assert outcome is not None and outcome.action == "noted"
        assert svc.handle_alarm_cleared(cleared.alarm_id) is None  # a replayed event does nothing
        assert svc.sweep() == 0
    _tid, now_status, notes, active = _ticket(db_url)
    where = status.replace("_", " ")
    assert (now_status, active) == (status, True)
    assert notes == [f"alarm cleared while the technician was {where}; the ticket stays open"]


def test_off_by_default_and_the_rule_setting_wins_over_the_segment(db_url: str) -> None:
    """Segment off: a cleared alarm leaves the ticket assigned. A rule setting of true then resolves it
    on the next sweep; a rule setting of false would keep it even with the segment on."""
    plant = _plant(db_url, segment_setting=False)
    with RuleEvaluator(db_url) as ev, TicketingService(db_url) as svc:
        (opened,) = ev.process(_reading(plant, 0, 90))
        svc.handle_alarm(opened.alarm_id)
        (cleared,) = ev.process(_reading(plant, 10, 60))
        assert svc.handle_alarm_cleared(cleared.alarm_id) is None
        assert _ticket(db_url)[1] == "assigned"
        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE sla_segments SET auto_resolve_on_clear = true WHERE name = 'gold'")
            conn.execute("INSERT INTO rule_ticket_settings VALUES (%s, false)", (plant.rule,))
        assert svc.sweep() == 0 and _ticket(db_url)[1] == "assigned"
        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE rule_ticket_settings SET auto_resolve_on_clear = true")
        assert svc.sweep() == 1
    assert _ticket(db_url)[1:] == ("resolved", ["alarm cleared"], False)


def test_one_alarm_still_active_keeps_the_ticket_open(db_url: str) -> None:
    """Two alarms on the ticket (the second from another rule, same problem): the ticket is resolved only
    when both have cleared."""
    plant = _plant(db_url, segment_setting=True)
    with psycopg.connect(db_url) as conn:
        create_rule(
            conn,
            name="hot casing",
            tag="casing_temp",
            operator=">",
            threshold=70,
            duration_s=0,
            severity="minor",
            problem_code="BEARING_OVERHEAT",
            required_skill="pump",
        )
    with RuleEvaluator(db_url) as ev, TicketingService(db_url) as svc:
        (a1,) = ev.process(_reading(plant, 0, 90))
        (a2,) = ev.process([Point(plant.pump, "casing_temp", T0, 75)])
        assert svc.handle_alarm(a1.alarm_id).action == "created"
        assert svc.handle_alarm(a2.alarm_id).action == "attached"
        (c1,) = ev.process(_reading(plant, 10, 60))
        assert svc.handle_alarm_cleared(c1.alarm_id) is None and _ticket(db_url)[1] == "assigned"
        (c2,) = ev.process([Point(plant.pump, "casing_temp", T0 + 10_000, 50)])
        outcome = svc.handle_alarm_cleared(c2.alarm_id)
    assert outcome is not None and (outcome.action, outcome.technician_id) == ("resolved", plant.tech)
    assert _ticket(db_url)[1] == "resolved"
