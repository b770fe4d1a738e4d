"""Alarms → tickets → technicians against the real database, including concurrency and the LISTEN loop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg
import pytest

from fwcore.events import Event, EventListener, TicketCreatedEvent
from rules import RuleEvaluator, create_rule
from tests.support.points import Point
from ticketing import (
    DuplicateTechnician,
    TicketingService,
    UnknownSkill,
    create_technician,
    ensure_skill,
    get_ticket,
    list_technicians,
    list_tickets,
    set_technician_available,
    set_technician_location,
)

MUNICH = (48.1374, 11.5755)  # the site
AUGSBURG = (48.3705, 10.8978)  # ~56 km
FREISING = (48.4029, 11.7488)  # ~32 km
DACHAU = (48.2600, 11.4342)  # ~17 km
T0 = 1_700_000_000_000


@dataclass
class World:
    url: str
    pump: int
    other_pump: int
    techs: dict[str, int]


@pytest.fixture
def world(db_url: str) -> World:
    """A gold client's site in Munich with two pumps, pump rules, and four technicians around it:
    Alice (pump, Augsburg, free), Eve (electrical only, Dachau), Bob (pump, Freising, on site on an
    eight-hour job that would make this client's SLA late) and Carl (hydraulics, Munich, off duty)."""
    with psycopg.connect(db_url) as conn:
        for code in ("pump", "electrical", "hydraulics"):
            ensure_skill(conn, code)
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('Acme', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 'muc', 'Munich', %s, %s)"
            " RETURNING id",
            (client, *MUNICH),
        ).fetchone()[0]
        pump, other = (
            conn.execute(
                "INSERT INTO devices (site_id, key, name, equipment_model) VALUES (%s, %s, %s, 'P100') RETURNING id",
                (site, key, name),
            ).fetchone()[0]
            for key, name in (("pump-1", "Pump 1"), ("pump-2", "Pump 2"))
        )
        common = {"operator": ">", "duration_s": 0, "equipment_model": "P100"}
        create_rule(
            conn,
            name="hot bearing",
            tag="bearing_temp",
            threshold=80,
            severity="major",
            problem_code="BEARING",
            required_skill="pump",
            **common,
        )
        create_rule(
            conn,
            name="vibration",
            tag="vibration",
            threshold=7,
            severity="critical",
            problem_code="BEARING",
            required_skill="pump",
            **common,
        )
        create_rule(
            conn,
            name="low pressure",
            tag="pressure",
            threshold=-1,
            severity="minor",
            problem_code="HYDRAULIC",
            required_skill="hydraulics",
            **{**common, "operator": "<"},
        )
        techs = {
            "Alice": create_technician(
                conn, name="Alice", email="a@x", home_lat=AUGSBURG[0], home_lon=AUGSBURG[1], skills={"pump": 2}
            ).id,
            "Eve": create_technician(
                conn, name="Eve", email="e@x", home_lat=DACHAU[0], home_lon=DACHAU[1], skills={"electrical": 3}
            ).id,
            "Bob": create_technician(
                conn, name="Bob", email="b@x", home_lat=FREISING[0], home_lon=FREISING[1], skills={"pump": 4}
            ).id,
            "Carl": create_technician(
                conn,
                name="Carl",
                email="c@x",
                home_lat=MUNICH[0],
                home_lon=MUNICH[1],
                skills={"hydraulics": 1, "pump": 1},
                available=False,
            ).id,
        }
        busy_ticket = conn.execute(
            "INSERT INTO tickets (device_id, problem_code, title, status, source, service_minutes) "
            "VALUES (%s, 'OTHER', 'elsewhere', 'on_site', 'api', 480) RETURNING id",
            (other,),
        ).fetchone()[0]
        conn.execute("INSERT INTO assignments (ticket_id, technician_id) VALUES (%s, %s)", (busy_ticket, techs["Bob"]))
    return World(db_url, pump, other, techs)


def open_alarm(url: str, device: int, tag: str, value: float, at_s: int = 0) -> int:
    """Open an alarm the real way, through the rule evaluator; returns its id."""
    with RuleEvaluator(url) as ev:
        (event,) = ev.process([Point(device, tag, T0 + at_s * 1000, value)])
    assert event.type == "alarm_opened"
    return event.alarm_id


def test_alarm_becomes_a_ticket_for_the_nearest_free_qualified_technician(world: World) -> None:
    """Alice is chosen: Eve is nearer but unqualified, Bob nearer but busy, Carl nearest but off duty."""
    alarm = open_alarm(world.url, world.pump, "bearing_temp", 91)
    with TicketingService(world.url) as svc:
        out = svc.handle_alarm(alarm)
    assert out.action == "created" and out.technician_id == world.techs["Alice"]
    with psycopg.connect(world.url) as conn:
        t = get_ticket(conn, out.ticket_id)
        assert t is not None
        assert (t.status, t.priority, t.required_skill, t.title) == ("assigned", 2, "pump", "hot bearing on Pump 1")
        assert t.alarm_ids == [alarm] and t.alarm_id == alarm
        assert t.assignment is not None and t.assignment.technician_name == "Alice"
        assert t.assignment.distance_km == pytest.approx(56 * 1.3, rel=0.05)
        assert t.assignment.reason.startswith("cheapest insertion: ") and "runner-up Bob" in t.assignment.reason
        assert t.due_at is not None  # gold: 240 min response target
        assert {x.name: x.busy for x in list_technicians(conn)} == {
            "Alice": True,
            "Eve": False,
            "Bob": True,
            "Carl": False,
        }


def test_second_alarm_on_same_device_and_problem_attaches_to_the_open_ticket(world: World) -> None:
    """Another rule with the same problem code on the same device adds to the ticket and raises its priority."""
    first = open_alarm(world.url, world.pump, "bearing_temp", 91)
    second = open_alarm(world.url, world.pump, "vibration", 9)
    with TicketingService(world.url) as svc:
        a = svc.handle_alarm(first)
        b = svc.handle_alarm(second)
        again = svc.handle_alarm(second)
    assert (a.action, b.action, again.action) == ("created", "attached", "already_ticketed")
    assert a.ticket_id == b.ticket_id == again.ticket_id
    assert b.decision is None  # already assigned: no second dispatch
    with psycopg.connect(world.url) as conn:
        t = get_ticket(conn, a.ticket_id)
        assert t is not None and t.alarm_ids == [first, second] and t.priority == 1  # critical vibration
        assert conn.execute("SELECT count(*) FROM assignments WHERE ticket_id = %s", (a.ticket_id,)).fetchone()[0] == 1


def test_one_fault_tripping_two_rules_opens_one_ticket_per_skill_needed(world: World) -> None:
    """A second alarm of another problem on a device with an open ticket needing the same skill attaches
    to it (one fault, one visit); an alarm needing another skill opens its own ticket."""
    with psycopg.connect(world.url) as conn:
        create_rule(
            conn,
            name="hot casing",
            tag="casing_temp",
            operator=">",
            threshold=70,
            duration_s=0,
            severity="minor",
            problem_code="CASING",
            required_skill="pump",
            equipment_model="P100",
        )
    bearing = open_alarm(world.url, world.pump, "bearing_temp", 91)
    casing = open_alarm(world.url, world.pump, "casing_temp", 75)
    pressure = open_alarm(world.url, world.pump, "pressure", -2)
    with TicketingService(world.url) as svc:
        a, b, c = (svc.handle_alarm(x) for x in (bearing, casing, pressure))
    assert (a.action, b.action, c.action) == ("created", "attached", "created")
    assert a.ticket_id == b.ticket_id != c.ticket_id
    with psycopg.connect(world.url) as conn:
        t = get_ticket(conn, a.ticket_id)
        assert t is not None and t.alarm_ids == [bearing, casing] and t.problem_code == "BEARING"


def test_unassigned_with_reason_until_a_qualified_technician_is_available(world: World) -> None:
    """Nobody free has hydraulics → the ticket stays 'new' with a reason; once Carl is on duty, sweep assigns him."""
    alarm = open_alarm(world.url, world.pump, "pressure", -5)
    with TicketingService(world.url) as svc:
        out = svc.handle_alarm(alarm)
        assert out.action == "created" and out.technician_id is None
        with psycopg.connect(world.url) as conn:
            t = get_ticket(conn, out.ticket_id)
            assert t is not None and t.status == "new" and t.assignment is None
            assert t.unassigned_reason is not None
            assert "lacks skill hydraulics level 1 (3 technicians)" in t.unassigned_reason
            assert "is not available (off duty) (1 technician)" in t.unassigned_reason
        assert svc.sweep() == 0  # still nobody
        with psycopg.connect(world.url) as conn:
            set_technician_available(conn, world.techs["Carl"], True)
        assert svc.sweep() == 1
    with psycopg.connect(world.url) as conn:
        t = get_ticket(conn, out.ticket_id)
        assert t is not None and t.status == "assigned" and t.unassigned_reason is None
        assert t.assignment is not None and t.assignment.technician_name == "Carl"


def test_sweep_tickets_alarms_whose_notification_was_missed(world: World) -> None:
    """An alarm opened while no service listened is ticketed and assigned by the next sweep; a cleared one is not."""
    missed = open_alarm(world.url, world.pump, "bearing_temp", 91)
    with RuleEvaluator(world.url) as ev:
        ev.process([Point(world.other_pump, "pressure", T0, -3), Point(world.other_pump, "pressure", T0 + 1000, 5)])
    with TicketingService(world.url) as svc:
        assert svc.sweep() == 2  # the alarm ticketed + its ticket assigned
        assert svc.sweep() == 0
    with psycopg.connect(world.url) as conn:
        tickets = list_tickets(conn, status="assigned")
        assert [(t.alarm_id, t.problem_code) for t in tickets if t.source == "alarm"] == [(missed, "BEARING")]


def test_suppressed_alarms_open_no_ticket_until_released(world: World) -> None:
    """A silenced (suppressed) alarm is skipped by handling and by the sweep; once released it is ticketed."""
    alarm = open_alarm(world.url, world.pump, "bearing_temp", 91)
    with psycopg.connect(world.url, autocommit=True) as conn:
        conn.execute("UPDATE alarms SET suppressed_by = 'silence:1' WHERE id = %s", (alarm,))
    with TicketingService(world.url) as svc:
        out = svc.handle_alarm(alarm)
        assert out.action == "skipped" and "suppressed" in (out.reason or "")
        assert svc.sweep() == 0
        with psycopg.connect(world.url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM tickets WHERE source = 'alarm'").fetchone() == (0,)
            conn.execute("UPDATE alarms SET suppressed_by = NULL WHERE id = %s", (alarm,))
        assert svc.sweep() == 2


def test_two_services_handling_the_same_alarms_at_once_make_one_ticket_and_one_assignment(world: World) -> None:
    """Concurrent services racing on the same two alarms of one problem produce one ticket and one assignment."""
    alarms = [open_alarm(world.url, world.pump, "bearing_temp", 91), open_alarm(world.url, world.pump, "vibration", 9)]
    services = [TicketingService(world.url), TicketingService(world.url)]
    barrier = threading.Barrier(2)
    outcomes, errors = [], []

    def work(k: int) -> None:
        try:
            barrier.wait()
            order = alarms if k == 0 else alarms[::-1]
            outcomes.extend(services[k].handle_alarm(a) for a in order)
        except BaseException as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in services:
        s.close()
    assert errors == []
    assert sorted(o.action for o in outcomes).count("created") == 1
    with psycopg.connect(world.url) as conn:
        rows = conn.execute("SELECT id FROM tickets WHERE problem_code = 'BEARING'").fetchall()
        assert len(rows) == 1
        assert conn.execute("SELECT count(*) FROM assignments WHERE ticket_id = %s", rows[0]).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM alarms WHERE ticket_id = %s", rows[0]).fetchone()[0] == 2


def test_listen_loop_assigns_a_ticket_within_seconds_and_stops_promptly(world: World) -> None:
    """With the service started, an alarm from the evaluator is ticketed and assigned within a few seconds."""
    svc = TicketingService(world.url, sweep_interval_s=60)  # a long sweep: only NOTIFY can make this pass
    svc.start()
    try:
        assert svc.listening.is_set()
        seen: list[Event] = []
        events = EventListener()
        events.on_every(seen.append)
        with psycopg.connect(world.url, autocommit=True) as listener:
            events.listen(listener)
            alarm = open_alarm(world.url, world.pump, "bearing_temp", 95)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(e.type == "ticket_assigned" for e in seen):
                events.poll(listener, 0.2)
        assert [e.type for e in seen] == ["alarm_opened", "ticket_created", "ticket_assigned"]
        assert events.bad_payloads == 0 and isinstance(seen[1], TicketCreatedEvent)
        with psycopg.connect(world.url) as conn:
            t = get_ticket(conn, seen[1].ticket_id)
            assert t is not None and t.alarm_ids == [alarm] and t.assignment is not None
            assert t.assignment.technician_id == world.techs["Alice"]
    finally:
        started = time.monotonic()
        svc.close()
        assert time.monotonic() - started < 2
        assert not svc.listening.is_set()


def test_technician_data_functions(world: World) -> None:
    """Unknown skills and duplicate emails are refused with our errors; a new location changes the nearest."""
    with psycopg.connect(world.url) as conn:
        with pytest.raises(UnknownSkill):
            create_technician(conn, name="Z", email="z@x", home_lat=0, home_lon=0, skills={"welding": 1})
        with pytest.raises(DuplicateTechnician):
            create_technician(conn, name="A2", email="a@x", home_lat=0, home_lon=0)
        assert [t.name for t in list_technicians(conn)] == ["Alice", "Eve", "Bob", "Carl"]
        dave = create_technician(conn, name="Dave", email="d@x", home_lat=0, home_lon=0, skills={"pump": 1})
        set_technician_location(conn, dave.id, *DACHAU)  # Dave is now nearer than Alice
        with pytest.raises(ValueError):
            set_technician_location(conn, dave.id, 91, 0)
    alarm = open_alarm(world.url, world.pump, "bearing_temp", 91)
    with TicketingService(world.url) as svc:
        assert svc.handle_alarm(alarm).technician_id == dave.id
