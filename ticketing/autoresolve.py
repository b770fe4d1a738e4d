"""Auto-resolve a ticket when its alarms clear (optional, per client segment or per rule).

When EVERY alarm attached to a ticket has cleared and auto-resolve applies to it:

* a ticket still ``new`` or ``assigned`` (nobody has set off yet) is resolved with the note
  "alarm cleared"; its assignment ends and the technician's route is re-timed without it, so the
  plan is freed for other work;
* a ticket ``en_route`` or ``on_site`` is left alone — a technician is committed and may still
  find the cause — but gets a note so they know.

Whether it applies: the rules of the attached alarms may say so in ``rule_ticket_settings``
(every rule that says anything must say yes); otherwise the client segment's
``sla_segments.auto_resolve_on_clear`` decides; off by default. ``tickets.alarms_cleared_at``
records that ticketing acted, so a replayed ``alarm_cleared`` event or the periodic sweep never
acts twice; a new alarm attaching to the ticket resets it.

Lock order as everywhere in ticketing: ticket row → plan (advisory lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import psycopg

from fwcore.events import TicketNoteEvent, TicketStatusEvent, publish
from ticketing.geo import TravelModel
from ticketing.optimizer import CachedTravel
from ticketing.planning import load_snapshot, lock_plan, write_route

AUTHOR = "ticketing"
RESOLVED_NOTE = "alarm cleared"

#: Open tickets whose attached alarms have all cleared, that ticketing has not acted on yet, and to
#: which auto-resolve applies (rule settings first, then the client segment).
_CANDIDATES = """
SELECT t.id FROM tickets t
JOIN devices d ON d.id = t.device_id
JOIN sites s ON s.id = d.site_id
JOIN clients c ON c.id = s.client_id
LEFT JOIN sla_segments seg ON seg.name = c.segment
WHERE t.status IN ('new', 'assigned', 'en_route', 'on_site')
  AND t.alarms_cleared_at IS NULL
  AND EXISTS (SELECT 1 FROM alarms a WHERE a.ticket_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM alarms a WHERE a.ticket_id = t.id AND a.cleared_at IS NULL)
  AND COALESCE(
        (SELECT bool_and(rs.auto_resolve_on_clear) FROM alarms a
           JOIN rule_ticket_settings rs ON rs.rule_id = a.rule_id WHERE a.ticket_id = t.id),
        seg.auto_resolve_on_clear, false)
"""


@dataclass(frozen=True, slots=True)
class ClearOutcome:
    """What auto-resolve did to one ticket."""

    ticket_id: int
    action: Literal["resolved", "noted"]
    status: str  # the status after acting
    technician_id: int | None = None  # whose route was freed (resolved) or who was told (noted)


def candidates(conn: psycopg.Connection, ticket_id: int | None = None) -> list[int]:
    """Tickets auto-resolve should act on now (just ``ticket_id`` when given, if it qualifies)."""
    sql = _CANDIDATES + (" AND t.id = %s" if ticket_id is not None else "") + " ORDER BY t.id"
    return [r[0] for r in conn.execute(sql, (ticket_id,) if ticket_id is not None else ()).fetchall()]


def ticket_of_alarm(conn: psycopg.Connection, alarm_id: int) -> int | None:
    row = conn.execute("SELECT ticket_id FROM alarms WHERE id = %s", (alarm_id,)).fetchone()
    return row[0] if row else None


def act_on_cleared(
    conn: psycopg.Connection, ticket_id: int, travel: TravelModel, now: datetime | None = None
) -> ClearOutcome | None:
    """Resolve or annotate ``ticket_id`` if it still qualifies (re-checked under its row lock).

    Runs in the caller's transaction; the caller commits. Returns None when there is nothing to do.
    """
    status_row = conn.execute("SELECT status FROM tickets WHERE id = %s FOR UPDATE", (ticket_id,)).fetchone()
    if status_row is None or not candidates(conn, ticket_id):
        return None
    status = status_row[0]
    tech_row = conn.execute(
        "SELECT technician_id FROM assignments WHERE ticket_id = %s AND active", (ticket_id,)
    ).fetchone()
    tech_id = tech_row[0] if tech_row else None
    conn.execute("UPDATE tickets SET alarms_cleared_at = now() WHERE id = %s", (ticket_id,))
    if status in ("en_route", "on_site"):
        where = "en route" if status == "en_route" else "on site"
        conn.execute(
            "INSERT INTO ticket_notes (ticket_id, author, body) VALUES (%s, %s, %s)",
            (ticket_id, AUTHOR, f"alarm cleared while the technician was {where}; the ticket stays open"),
        )
        publish(conn, TicketNoteEvent(ticket_id=ticket_id, reason="alarm_cleared"))
        return ClearOutcome(ticket_id, "noted", status, tech_id)
    lock_plan(conn)
    conn.execute(
        "UPDATE tickets SET status = 'resolved', unassigned_reason = NULL, updated_at = now() WHERE id = %s",
        (ticket_id,),
    )
    conn.execute(
        """UPDATE ticket_status_history SET actor = %s
           WHERE id = (SELECT max(id) FROM ticket_status_history WHERE ticket_id = %s)""",
        (AUTHOR, ticket_id),
    )
    conn.execute(
        "INSERT INTO ticket_notes (ticket_id, author, body) VALUES (%s, %s, %s)", (ticket_id, AUTHOR, RESOLVED_NOTE)
    )
    if tech_id is not None:
        conn.execute(
            "UPDATE assignments SET active = false, ended_at = now() WHERE ticket_id = %s AND active", (ticket_id,)
        )
        # Re-time the rest of the technician's day without this stop.
        cached = CachedTravel(travel)
        snap = load_snapshot(conn, now or datetime.now(UTC))
        write_route(conn, snap, cached, tech_id, tuple(snap.plan.routes.get(tech_id, ())))
    publish(
        conn,
        TicketStatusEvent(
            ticket_id=ticket_id, status="resolved", from_status=status, by=AUTHOR, reason="alarm_cleared"
        ),
    )
    return ClearOutcome(ticket_id, "resolved", "resolved", tech_id)
