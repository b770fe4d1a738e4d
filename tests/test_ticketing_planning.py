"""The live plan against the real database: shifts, time off, parts, pins, stored explanations and
re-optimisation with locks — all with a fixed clock."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from tests.support import dispatch
from tests.support.dispatch import (
    NOW,
    WAREHOUSE,
    World,
    assignment,
    new_ticket,
    service,
)
from ticketing.reoptimize import reoptimize_day

world = dispatch.world  # the fixture, shared with test_ticketing_skills and test_ticketing_controls


def test_nearest_technician_gets_it_and_the_plan_and_explanation_are_stored(world: World) -> None:
    """Ana takes the Munich job; the assignment stores sequence, planned times and a runner-up explanation."""
    t = new_ticket(world.url, world.devices["a"], "P1")
    with service(world) as svc:
        d = svc.dispatch_ticket(t)
    assert d is not None and d.technician is not None and d.technician.name == "Ana"
    a = assignment(world.url, t)
    assert a is not None and a["sequence"] == 0 and a["origin"] == "auto"
    assert NOW < a["eta_at"] <= a["planned_start"] < a["planned_end"]
    assert a["planned_end"] - a["planned_start"] == timedelta(minutes=60)
    exp = a["explanation"]
    assert exp["runner_up_name"] == "Bo" and exp["cost_difference"] > 0
    assert "runner-up Bo" in a["reason"]


def test_second_job_nearby_is_sequenced_after_the_first(world: World) -> None:
    """Two Munich jobs both go to Ana, one after the other, in stored route order."""
    t1 = new_ticket(world.url, world.devices["a"], "P1")
    t2 = new_ticket(world.url, world.devices["a"], "P2")
    with service(world) as svc:
        svc.dispatch_ticket(t1)
        svc.dispatch_ticket(t2)
    a1, a2 = assignment(world.url, t1), assignment(world.url, t2)
    assert a1 is not None and a2 is not None and a1["name"] == a2["name"] == "Ana"
    assert {a1["sequence"], a2["sequence"]} == {0, 1}
    first, second = sorted((a1, a2), key=lambda a: a["sequence"])
    assert second["planned_start"] >= first["planned_end"]


def test_shifts_and_time_off_decide_availability(world: World) -> None:
    """Ana's shift ended and Bo is on leave: the ticket stays new with both reasons listed."""
    with psycopg.connect(world.url) as conn:
        conn.execute(
            "INSERT INTO technician_shifts (technician_id, starts_at, ends_at) VALUES (%s, %s, %s)",
            (world.techs["Ana"], NOW - timedelta(hours=9), NOW - timedelta(hours=1)),
        )
        conn.execute(
            "INSERT INTO technician_time_off (technician_id, starts_at, ends_at, reason) "
            "VALUES (%s, %s, %s, 'vacation')",
            (world.techs["Bo"], NOW - timedelta(days=1), NOW + timedelta(days=3)),
        )
    t = new_ticket(world.url, world.devices["a"], "P1")
    with service(world) as svc:
        d = svc.dispatch_ticket(t)
    assert d is not None and d.technician is None
    assert "outside every shift" in d.reason and "time off (vacation)" in d.reason
    with psycopg.connect(world.url) as conn:
        blockers = conn.execute("SELECT unassigned_blockers FROM tickets WHERE id = %s", (t,)).fetchone()[0]
    assert len(blockers) == 2


def test_a_shift_that_starts_later_today_plans_the_job_then(world: World) -> None:
    """With only Ana, on a shift from 13:00, the job is planned to start at or after 13:00."""
    with psycopg.connect(world.url) as conn:
        conn.execute("DELETE FROM technicians WHERE id = %s", (world.techs["Bo"],))
        conn.execute(
            "INSERT INTO technician_shifts (technician_id, starts_at, ends_at) VALUES (%s, %s, %s)",
            (world.techs["Ana"], NOW + timedelta(hours=4), NOW + timedelta(hours=12)),
        )
    t = new_ticket(world.url, world.devices["a"], "P1")
    with service(world) as svc:
        svc.dispatch_ticket(t)
    a = assignment(world.url, t)
    assert a is not None and a["planned_start"] >= NOW + timedelta(hours=4)


def test_parts_come_from_the_van_or_a_warehouse_pickup_or_block(world: World) -> None:
    """A part nobody carries is picked up at the warehouse on the way; a part nowhere in stock blocks."""
    with psycopg.connect(world.url) as conn:
        conn.execute("INSERT INTO parts (code) VALUES ('seal'), ('rotor')")
        wh = conn.execute(
            "INSERT INTO warehouses (name, latitude, longitude) VALUES ('Depot', %s, %s) RETURNING id", WAREHOUSE
        ).fetchone()[0]
        conn.execute("INSERT INTO warehouse_stock VALUES (%s, 'seal', 5)", (wh,))
    t1 = new_ticket(world.url, world.devices["a"], "P1")
    t2 = new_ticket(world.url, world.devices["a"], "P2")
    with psycopg.connect(world.url) as conn:
        conn.execute("INSERT INTO ticket_parts VALUES (%s, 'seal', 1), (%s, 'rotor', 1)", (t1, t2))
    with service(world) as svc:
        assert svc.dispatch_ticket(t1).technician is not None
        d2 = svc.dispatch_ticket(t2)
    a1 = assignment(world.url, t1)
    assert a1 is not None and a1["pickup_warehouse_id"] == wh
    assert d2 is not None and d2.technician is None and "rotor×1 neither in" in d2.reason


def test_a_pinned_ticket_goes_to_its_technician(world: World) -> None:
    """Pinned to Bo, the Munich job goes to Bo although Ana is nearer."""
    t = new_ticket(world.url, world.devices["a"], "P1", pinned_technician_id=world.techs["Bo"])
    with service(world) as svc:
        d = svc.dispatch_ticket(t)
    assert d is not None and d.technician is not None and d.technician.name == "Bo"


def _swap_to_bad_plan(world: World, t_a: int, t_b: int) -> None:
    """Give Ana the Augsburg job and Bo the Munich job (each drives past the other)."""
    with psycopg.connect(world.url) as conn:
        conn.execute(
            "UPDATE assignments SET technician_id = %s WHERE ticket_id = %s AND active", (world.techs["Bo"], t_a)
        )
        conn.execute(
            "UPDATE assignments SET technician_id = %s WHERE ticket_id = %s AND active", (world.techs["Ana"], t_b)
        )


def test_reoptimisation_untangles_a_bad_plan_and_records_the_run(world: World) -> None:
    """A crossed plan is re-solved: each job moves to the technician near it, and plan_runs says so."""
    t_a = new_ticket(world.url, world.devices["a"], "P1")
    t_b = new_ticket(world.url, world.devices["b"], "P2")
    with service(world) as svc:
        svc.dispatch_ticket(t_a)
        svc.dispatch_ticket(t_b)
    _swap_to_bad_plan(world, t_a, t_b)
    run = reoptimize_day(world.url, now=NOW, time_limit_s=1, freeze_minutes=0)
    assert run.accepted and run.moved == 2 and run.cost_after < run.cost_before
    assert assignment(world.url, t_a)["name"] == "Ana" and assignment(world.url, t_b)["name"] == "Bo"
    assert assignment(world.url, t_a)["origin"] == "reoptimize"
    with psycopg.connect(world.url) as conn:
        assert conn.execute("SELECT accepted, moved FROM plan_runs").fetchall() == [(True, 2)]
    again = reoptimize_day(world.url, now=NOW, time_limit_s=1, freeze_minutes=0)
    assert not again.accepted and again.note.startswith("kept")


def test_reoptimisation_keeps_locked_and_frozen_assignments(world: World) -> None:
    """Locked assignments, and ones starting inside the freeze horizon, are never moved."""
    t_a = new_ticket(world.url, world.devices["a"], "P1")
    t_b = new_ticket(world.url, world.devices["b"], "P2")
    with service(world) as svc:
        svc.dispatch_ticket(t_a)
        svc.dispatch_ticket(t_b)
    _swap_to_bad_plan(world, t_a, t_b)
    with psycopg.connect(world.url) as conn:
        conn.execute("UPDATE assignments SET locked = true WHERE active")
    run = reoptimize_day(world.url, now=NOW, time_limit_s=1, freeze_minutes=0)
    assert run.moved == 0 and assignment(world.url, t_a)["name"] == "Bo"
    with psycopg.connect(world.url) as conn:
        conn.execute("UPDATE assignments SET locked = false WHERE active")
    run = reoptimize_day(world.url, now=NOW, time_limit_s=1, freeze_minutes=24 * 60)  # everything is imminent
    assert run.moved == 0 and assignment(world.url, t_b)["name"] == "Ana"
