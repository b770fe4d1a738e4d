"""Tickets: read functions for the API and the demo (the writes happen in :mod:`ticketing.service`
and :mod:`ticketing.controls`).

:func:`list_tickets` / :func:`get_ticket` give the ticket rows themselves; :func:`list_ticket_summaries`
/ :func:`get_ticket_summary` add what a person reading a list needs (device, site, the active
assignment); :func:`ticket_explanation` says why a ticket went where it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, LiteralString

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from fwcore import errors
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
    """The active assignment: a stop on its technician's planned route for the day.

    ``eta_minutes`` was the travel time when the ticket was placed; ``eta_at`` is the planned arrival,
    kept current by re-planning, so "ETA in N min" is computed from it and the clock, never stored.
    """

    id: int
    technician_id: int
    technician_name: str
    assigned_at: datetime
    distance_km: float | None
    eta_minutes: float | None
    reason: str
    route_order: int | None = None  # position on the technician's route (0 first)
    eta_at: datetime | None = None
    planned_start: datetime | None = None
    planned_end: datetime | None = None

    def minutes_to_arrival(self, now: datetime) -> float | None:
        """Minutes from ``now`` until the planned arrival (0 once it has passed), or None if unplanned."""
        if self.eta_at is None:
            return None
        return max(0.0, (self.eta_at - now).total_seconds() / 60.0)


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
                      a.eta_minutes, a.reason, a.sequence AS route_order, a.eta_at, a.planned_start, a.planned_end
               FROM assignments a JOIN technicians t ON t.id = a.technician_id
               WHERE a.ticket_id = %s AND a.active""",
            (ticket_id,),
        )
        assignment = cur.fetchone()
        cur.execute("SELECT id FROM alarms WHERE ticket_id = %s ORDER BY id", (ticket_id,))
        alarm_ids = [r["id"] for r in cur.fetchall()]
    return TicketDetail(**row, assignment=Assignment(**assignment) if assignment else None, alarm_ids=alarm_ids)


SlaState = Literal["breached", "at_risk", "on_track"]
TicketSort = Literal["-created_at", "created_at", "priority", "-priority", "due_at", "planned_start", "route"]

#: The response target's state of an open ticket not yet on site (NULL otherwise, or without a target):
#: ``breached`` past due; ``at_risk`` escalated (:mod:`ticketing.sla_checks`) or planned to start after
#: it is due; else ``on_track``.
SLA_STATE_SQL: LiteralString = """(CASE
    WHEN t.due_at IS NULL OR t.status NOT IN ('new', 'assigned', 'en_route') THEN NULL
    WHEN t.due_at <= now() THEN 'breached'
    WHEN t.escalated_at IS NOT NULL OR a.planned_start > t.due_at THEN 'at_risk'
    ELSE 'on_track' END)"""

_SORTS: dict[str, LiteralString] = {
    "-created_at": "t.created_at DESC, t.id DESC",
    "created_at": "t.created_at, t.id",
    "priority": "t.priority, t.created_at DESC, t.id DESC",  # most urgent first
    "-priority": "t.priority DESC, t.created_at DESC, t.id DESC",
    "due_at": "t.due_at NULLS LAST, t.id",  # least SLA time left first
    "planned_start": "a.planned_start NULLS LAST, t.id",
    "route": "tech.name NULLS LAST, a.technician_id, a.sequence NULLS LAST, a.planned_start NULLS LAST, t.id",
}


class TicketSummary(Ticket):
    """A ticket with its device (key, and name or else key), site, client and active assignment, and
    its response SLA: seconds left until due (negative once late; None when ended or on site) and state."""

    device_key: str
    device_name: str
    site: str
    client_id: int
    client: str
    segment: str | None
    assignment: Assignment | None
    sla_remaining_s: float | None
    sla_state: SlaState | None


_SUMMARY_FROM: LiteralString = """
    tickets t JOIN devices d ON d.id = t.device_id JOIN sites s ON s.id = d.site_id
    JOIN clients c ON c.id = s.client_id
    LEFT JOIN assignments a ON a.ticket_id = t.id AND a.active
    LEFT JOIN technicians tech ON tech.id = a.technician_id"""
_SUMMARY_SELECT: LiteralString = (
    """SELECT t.id, t.device_id, d.key AS device_key, COALESCE(NULLIF(d.name, ''), d.key) AS device_name,
              s.slug AS site, s.client_id, c.name AS client, c.segment,
              t.problem_code, t.title, t.priority, t.status, t.required_skill, t.source, t.alarm_id,
              t.unassigned_reason, t.created_at, t.updated_at, t.due_at,
              CASE WHEN t.status IN ('new', 'assigned', 'en_route')
                   THEN EXTRACT(EPOCH FROM t.due_at - now())::float8 END AS sla_remaining_s,
              """
    + SLA_STATE_SQL
    + """ AS sla_state,
              a.id AS assignment_id, a.technician_id, tech.name AS technician_name, a.assigned_at, a.distance_km,
              a.eta_minutes, a.reason, a.sequence AS route_order, a.eta_at, a.planned_start, a.planned_end
       FROM"""
    + _SUMMARY_FROM
)
_ASSIGNMENT_KEYS = (
    "technician_id",
    "technician_name",
    "assigned_at",
    "distance_km",
    "eta_minutes",
    "reason",
    "route_order",
    "eta_at",
    "planned_start",
    "planned_end",
)


def _summary(r: Row) -> TicketSummary:
    assignment_id = r.pop("assignment_id")
    assignment = {k: r.pop(k) for k in _ASSIGNMENT_KEYS}
    return TicketSummary(
        **r, assignment=Assignment(id=assignment_id, **assignment) if assignment_id is not None else None
    )


def list_ticket_summaries(
    conn: psycopg.Connection,
    *,
    status: str | Sequence[str] | None = None,
    device_id: int | None = None,
    client_id: int | None = None,
    site: str | None = None,
    segment: str | None = None,
    technician_id: int | None = None,
    priority: Sequence[int] | None = None,
    sla_state: SlaState | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    sort: TicketSort = "-created_at",
    visible: Visible = EVERYTHING,
    limit: int | None = None,
    offset: int = 0,
) -> Page[TicketSummary]:
    """Tickets with their active assignment, newest first unless ``sort`` says otherwise; every filter given
    narrows the list (``status`` and ``priority`` accept several values; ``created_from`` ≤ created <
    ``created_to``; ``technician_id``: who holds the active assignment).

    ``visible`` narrows the list to one technician's tickets (:data:`OWNER_SQL`) and/or one client's.
    """
    if priority is not None and not set(priority) <= set(range(1, 6)):
        raise errors.Invalid(
            f"priority must be 1 (most urgent) to 5, not {sorted(priority)}", loc=("query", "priority")
        )
    conditions = visible_conditions(visible)
    statuses = [status] if isinstance(status, str) else list(status or ())
    filters: list[tuple[object, LiteralString]] = [
        (statuses, "t.status = ANY(%(status)s)"),
        (device_id, "t.device_id = %(device_id)s"),
        (client_id, "s.client_id = %(client_id)s"),
        (site, "s.slug = %(site)s"),
        (segment, "c.segment = %(segment)s"),
        (technician_id, "a.technician_id = %(technician_id)s"),
        (list(priority or ()), "t.priority = ANY(%(priority)s)"),
        (sla_state, SLA_STATE_SQL + " = %(sla_state)s"),
        (created_from, "t.created_at >= %(created_from)s"),
        (created_to, "t.created_at < %(created_to)s"),
    ]
    conditions += [sql for value, sql in filters if value is not None and value != []]
    params = {
        "status": statuses,
        "device_id": device_id,
        "client_id": client_id,
        "site": site,
        "segment": segment,
        "technician_id": technician_id,
        "priority": list(priority or ()),
        "sla_state": sla_state,
        "created_from": created_from,
        "created_to": created_to,
        "owner": visible.technician_id,
        "client": visible.client_id,
    }
    return fetch_page(
        conn, _SUMMARY_SELECT, _SUMMARY_FROM, conditions, _SORTS[sort], params, _summary, limit=limit, offset=offset
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
