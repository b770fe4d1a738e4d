"""Tickets: read functions for the API (the writes happen in :mod:`ticketing.service`)."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

OPEN_STATUSES = ("new", "assigned", "en_route", "on_site")

SEVERITY_PRIORITY = {"critical": 1, "major": 2, "minor": 3, "warning": 4}


def ticket_priority(severity: str, segment: str | None) -> int:
    """1 (most urgent) .. 5: from the alarm's severity, one step more urgent for platinum clients."""
    base = SEVERITY_PRIORITY.get(severity, 3)
    return max(1, base - 1) if segment == "platinum" else base


class Assignment(BaseModel):
    id: int
    technician_id: int
    technician_name: str
    assigned_at: datetime
    distance_km: float | None
    eta_minutes: float | None
    reason: str


class Ticket(BaseModel):
    id: int
    device_id: int
    problem_code: str
    title: str
    priority: int
    status: str
    required_skill: str | None
    source: str
    alarm_id: int | None
    unassigned_reason: str | None
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None


class TicketDetail(Ticket):
    """A ticket with its active assignment (if any) and the alarms attached to it."""

    assignment: Assignment | None
    alarm_ids: list[int]


_COLUMNS = (
    "id, device_id, problem_code, title, priority, status, required_skill, source, alarm_id, "
    "unassigned_reason, created_at, updated_at, due_at"
)


def list_tickets(conn: psycopg.Connection, status: str | None = None) -> list[Ticket]:
    """Tickets, newest first; only those in ``status`` when given."""
    with conn.cursor(row_factory=dict_row) as cur:
        if status is None:
            cur.execute(f"SELECT {_COLUMNS} FROM tickets ORDER BY id DESC")
        else:
            cur.execute(f"SELECT {_COLUMNS} FROM tickets WHERE status = %s ORDER BY id DESC", (status,))
        return [Ticket(**row) for row in cur.fetchall()]


def get_ticket(conn: psycopg.Connection, ticket_id: int) -> TicketDetail | None:
    """The ticket with its active assignment and technician, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM tickets WHERE id = %s", (ticket_id,))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(
            """SELECT a.id, a.technician_id, t.name AS technician_name, a.assigned_at, a.distance_km,
                      a.eta_minutes, a.reason
               FROM assignments a JOIN technicians t ON t.id = a.technician_id
               WHERE a.ticket_id = %s AND a.active""",
            (ticket_id,),
        )
        assignment = cur.fetchone()
        cur.execute("SELECT id FROM alarms WHERE ticket_id = %s ORDER BY id", (ticket_id,))
        alarm_ids = [r["id"] for r in cur.fetchall()]
    return TicketDetail(**row, assignment=Assignment(**assignment) if assignment else None, alarm_ids=alarm_ids)
