"""Tickets: read functions for the API and the demo (the writes happen in :mod:`ticketing.service`
and :mod:`ticketing.controls`).

:func:`list_tickets` / :func:`get_ticket` give the ticket rows themselves; :func:`list_ticket_summaries`
/ :func:`get_ticket_summary` add what a person reading a list needs (device, site, the active
assignment); :func:`ticket_explanation` says why a ticket went where it did.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from fwcore.paging import Page, Row, fetch_page
from fwcore.policy import EVERYTHING, Visible
from ticketing.errors import NotFound

OPEN_STATUSES = ("new", "assigned", "en_route", "on_site")

#: The technician a ticket ``t`` belongs to: who holds its active assignment or, once the ticket has
#: ended (resolved, closed, cancelled), who held it last. An open ticket nobody holds belongs to no one.
#: The permission policy's ``own`` scope for tickets is this (``ticketing.scope``, the lists below).
OWNER_SQL: LiteralString = """(SELECT a.technician_id FROM assignments a
    WHERE a.ticket_id = t.id AND (a.active OR t.status IN ('resolved', 'closed', 'cancelled'))
    ORDER BY a.active DESC, a.id DESC LIMIT 1)"""


def visible_conditions(visible: Visible) -> list[LiteralString]:
    """SQL conditions (on ``t`` tickets and ``s`` sites, parameters ``owner`` and ``client``) for ``visible``."""
    conditions: list[LiteralString] = []
    if visible.technician_id is not None:
        conditions.append(OWNER_SQL + " = %(owner)s")
    if visible.client_id is not None:
        conditions.append("s.client_id = %(client)s")
    return conditions


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


class TicketSummary(Ticket):
    """A ticket with its device (key, and name or else key), site slug and active assignment."""

    device_key: str
    device_name: str
    site: str
    assignment: Assignment | None


_SUMMARY_FROM: LiteralString = """
    tickets t JOIN devices d ON d.id = t.device_id JOIN sites s ON s.id = d.site_id"""
_SUMMARY_SELECT: LiteralString = (
    """SELECT t.id, t.device_id, d.key AS device_key, COALESCE(NULLIF(d.name, ''), d.key) AS device_name,
              s.slug AS site, t.problem_code, t.title, t.priority, t.status, t.required_skill, t.source, t.alarm_id,
              t.unassigned_reason, t.created_at, t.updated_at, t.due_at,
              a.id AS assignment_id, a.technician_id, tech.name AS technician_name, a.assigned_at, a.distance_km,
              a.eta_minutes, a.reason
       FROM"""
    + _SUMMARY_FROM
    + """
       LEFT JOIN assignments a ON a.ticket_id = t.id AND a.active
       LEFT JOIN technicians tech ON tech.id = a.technician_id"""
)
_ASSIGNMENT_KEYS = ("technician_id", "technician_name", "assigned_at", "distance_km", "eta_minutes", "reason")


def _summary(r: Row) -> TicketSummary:
    assignment_id = r.pop("assignment_id")
    assignment = {k: r.pop(k) for k in _ASSIGNMENT_KEYS}
    return TicketSummary(
        **r, assignment=Assignment(id=assignment_id, **assignment) if assignment_id is not None else None
    )


def list_ticket_summaries(
    conn: psycopg.Connection,
    *,
    status: str | None = None,
    device_id: int | None = None,
    visible: Visible = EVERYTHING,
    limit: int | None = None,
    offset: int = 0,
) -> Page[TicketSummary]:
    """Tickets, newest first, each with its active assignment; in ``status`` and/or of ``device_id`` when given.

    ``visible`` narrows the list to one technician's tickets (:data:`OWNER_SQL`) and/or one client's.
    """
    conditions = visible_conditions(visible)
    if status is not None:
        conditions.append("t.status = %(status)s")
    if device_id is not None:
        conditions.append("t.device_id = %(device_id)s")
    return fetch_page(
        conn,
        _SUMMARY_SELECT,
        _SUMMARY_FROM,
        conditions,
        "t.created_at DESC, t.id DESC",
        {"status": status, "device_id": device_id, "owner": visible.technician_id, "client": visible.client_id},
        _summary,
        limit=limit,
        offset=offset,
    )


def get_ticket_summary(conn: psycopg.Connection, ticket_id: int) -> TicketSummary:
    """The ticket with its device, site and active assignment; raises :class:`NotFound`."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SUMMARY_SELECT + " WHERE t.id = %s", (ticket_id,)).fetchone()
    if row is None:
        raise NotFound("ticket", ticket_id)
    return _summary(row)


class TicketExplanation(BaseModel):
    """Who has the ticket and why (the optimizer's explanation), or why nobody has it."""

    ticket_id: int
    status: str
    technician_id: int | None
    technician_name: str | None
    reason: str | None  # the assignment's reason, else why it is unassigned
    explanation: dict[str, Any]
    unassigned_blockers: list[str]
    pinned_technician_id: int | None


def ticket_explanation(conn: psycopg.Connection, ticket_id: int) -> TicketExplanation:
    """Why the ticket went to its technician, or why it is unassigned; raises :class:`NotFound`."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """SELECT t.id AS ticket_id, t.status, a.technician_id, tech.name AS technician_name,
                      COALESCE(a.reason, t.unassigned_reason) AS reason,
                      COALESCE(a.explanation, '{}') AS explanation, t.unassigned_blockers, t.pinned_technician_id
               FROM tickets t LEFT JOIN assignments a ON a.ticket_id = t.id AND a.active
               LEFT JOIN technicians tech ON tech.id = a.technician_id WHERE t.id = %s""",
            (ticket_id,),
        ).fetchone()
    if row is None:
        raise NotFound("ticket", ticket_id)
    return TicketExplanation(**row)
