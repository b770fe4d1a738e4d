"""Planned maintenance: plans per equipment model generate tickets ahead of time (a scheduled job).

A plan is either calendar-based (every N days) or usage-based (every N run-hours, read from the
device's ``run_hours`` telemetry — the latest stored value). For each device of the plan's model
the next due point counts from the last generated visit (``maintenance_runs``), or from the
device's registration / zero run-hours for the first one. Once the due point is within the lead
(``lead_days`` / ``lead_run_hours``) a ``planned`` ticket is opened with ``due_at`` = the due date
(for usage plans: now), low priority, so the optimizer fits it into free time around urgent work
and emergencies may bump it. One open planned ticket per device and plan (the open-ticket index on
(device, problem code) enforces it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from fwcore.events import TicketCreatedEvent, publish

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Generated:
    plan: str
    device_id: int
    ticket_id: int
    due_at: datetime | None
    due_run_hours: float | None


def next_due_days(last_due: datetime | None, registered: datetime, every_days: int) -> datetime:
    """Pure: the next calendar due point."""
    return (last_due or registered) + timedelta(days=every_days)


def next_due_hours(last_due_hours: float | None, every_hours: float) -> float:
    """Pure: the next usage due point (run-hours)."""
    return (last_due_hours or 0.0) + every_hours


def generate_maintenance(db_url: str, now: datetime | None = None) -> list[Generated]:
    """Open the planned-maintenance tickets that are due within their lead; returns what was opened."""
    now = now or datetime.now(UTC)
    out: list[Generated] = []
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM maintenance_plans WHERE active ORDER BY id")
        for plan in cur.fetchall():
            cur.execute(
                """SELECT d.id, d.created_at, d.name, d.key,
                          (SELECT jsonb_build_array(r.due_at, r.due_run_hours) FROM maintenance_runs r
                            WHERE r.plan_id = %(plan)s AND r.device_id = d.id ORDER BY r.id DESC LIMIT 1) AS last,
                          (SELECT t.value FROM series s JOIN telemetry t ON t.series_id = s.id
                            WHERE s.device_id = d.id AND s.tag = %(tag)s ORDER BY t.time DESC LIMIT 1) AS run_hours
                   FROM devices d WHERE d.equipment_model = %(model)s ORDER BY d.id""",
                {"plan": plan["id"], "tag": plan["run_hours_tag"], "model": plan["equipment_model"]},
            )
            for dev in cur.fetchall():
                last_at = datetime.fromisoformat(dev["last"][0]) if dev["last"] and dev["last"][0] else None
                last_hours = dev["last"][1] if dev["last"] else None
                due_at = due_hours = None
                if plan["every_days"] is not None:
                    due_at = next_due_days(last_at, dev["created_at"], plan["every_days"])
                    if due_at - timedelta(days=plan["lead_days"]) > now:
                        continue
                else:
                    due_hours = next_due_hours(last_hours, plan["every_run_hours"])
                    if dev["run_hours"] is None or dev["run_hours"] < due_hours - plan["lead_run_hours"]:
                        continue
                ticket_id = _open(conn, plan, dev, due_at or now)
                if ticket_id is None:
                    continue
                conn.execute(
                    "INSERT INTO maintenance_runs (plan_id, device_id, ticket_id, due_at, due_run_hours) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (plan["id"], dev["id"], ticket_id, due_at, due_hours),
                )
                out.append(Generated(plan["name"], dev["id"], ticket_id, due_at, due_hours))
    for g in out:
        log.info("planned maintenance %s: ticket %d for device %d", g.plan, g.ticket_id, g.device_id)
    return out


def _open(conn: psycopg.Connection, plan: dict, dev: dict, due: datetime) -> int | None:
    label = dev["name"] or dev["key"]
    row = conn.execute(
        """INSERT INTO tickets (device_id, problem_code, title, priority, required_skill, service_minutes,
                               source, due_at)
           VALUES (%s, %s, %s, %s, %s, %s, 'planned', %s)
           ON CONFLICT (device_id, problem_code) WHERE status NOT IN ('resolved', 'closed', 'cancelled')
           DO NOTHING RETURNING id""",
        (
            dev["id"],
            f"PM:{plan['name']}",
            f"Planned maintenance ({plan['name']}) on {label}",
            plan["priority"],
            plan["required_skill"],
            plan["service_minutes"],
            due,
        ),
    ).fetchone()
    if row is not None:
        publish(conn, TicketCreatedEvent(ticket_id=row[0]))
    return row[0] if row else None


def maintenance_job(db_url: str) -> list[Generated]:
    """Scheduler entry point."""
    return generate_maintenance(db_url)
