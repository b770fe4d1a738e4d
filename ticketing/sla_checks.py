"""SLA policies from the database, due times on tickets, breaches and escalation (a scheduled job).

:func:`check_slas` (every minute) walks the open tickets and, from each one's status history:

* sets ``tickets.due_at`` (response: the technician on site) and ``resolution_due_at``;
* records a row in ``sla_breaches`` once a target passes (once per ticket and kind);
* escalates a ticket predicted to breach — its planned start is after the response due time, or it
  is due within the segment's ``warn_minutes`` with nobody assigned: ``escalated_at`` is set and an
  ``sla_at_risk`` event is sent (once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import psycopg
from psycopg.rows import dict_row

from fwcore.events import SlaAtRiskEvent, SlaBreachedEvent, publish
from ticketing.sla import BusinessCalendar, Target, due_at

log = logging.getLogger(__name__)

#: The response clock stops when the technician is on site (or the ticket ends).
RESPONDED = ("on_site", "resolved", "closed", "cancelled")
ENDED = ("resolved", "closed", "cancelled")


@dataclass(frozen=True)
class Policy:
    segment: str
    calendar: BusinessCalendar
    target: Target
    paused: frozenset[str]
    warn_minutes: int


def load_policy(conn: psycopg.Connection, segment: str | None, priority: int) -> Policy | None:
    """The SLA policy of ``segment`` for ``priority``; None when the client has no segment."""
    if segment is None:
        return None
    row = conn.execute(
        """SELECT s.timezone, s.paused_statuses, s.warn_minutes,
                  COALESCE(t.response_minutes, s.response_minutes), COALESCE(t.resolution_minutes, s.resolution_minutes)
           FROM sla_segments s LEFT JOIN sla_targets t ON t.segment = s.name AND t.priority = %s
           WHERE s.name = %s""",
        (priority, segment),
    ).fetchone()
    if row is None:
        return None
    tz, paused, warn, response, resolution = row
    hours = {
        wd: (o, c)
        for wd, o, c in conn.execute("SELECT weekday, opens, closes FROM business_hours WHERE segment = %s", (segment,))
    }
    holidays = frozenset(
        d for (d,) in conn.execute("SELECT day FROM holidays WHERE segment IS NULL OR segment = %s", (segment,))
    )
    return Policy(segment, BusinessCalendar(tz, hours, holidays), Target(response, resolution), frozenset(paused), warn)


def _until(history: list[tuple[datetime, str]], stops: tuple[str, ...]) -> list[tuple[datetime, str]]:
    """History up to (and including) the first status in ``stops``."""
    out = []
    for at, status in history:
        out.append((at, status))
        if status in stops:
            break
    return out


def _due(
    policy: Policy, history: list[tuple[datetime, str]], minutes: int, stops: tuple[str, ...], now: datetime
) -> datetime | None:
    h = _until(history, stops)
    if h and h[-1][1] in stops:  # the clock stopped: due is when it would have been reached, if it was
        stopped_at = h[-1][0]
        d = due_at(policy.calendar, h[:-1], minutes, stopped_at, policy.paused)
        return d
    return due_at(policy.calendar, h, minutes, now, policy.paused)


def initial_due(policy: Policy | None, opened: datetime) -> datetime | None:
    """The response due time of a ticket opened at ``opened`` (history: just 'new')."""
    if policy is None:
        return None
    return due_at(policy.calendar, [(opened, "new")], policy.target.response_minutes, opened, policy.paused)


@dataclass(frozen=True, slots=True)
class SlaCheck:
    checked: int
    breaches: int
    escalated: int


def check_slas(db_url: str, now: datetime | None = None) -> SlaCheck:
    """Update due times, record breaches and escalate tickets at risk (see the module docstring)."""
    now = now or datetime.now(UTC)
    checked = breaches = escalated = 0
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """SELECT t.id, t.priority, t.status, t.escalated_at, c.segment,
                      (SELECT a.planned_start FROM assignments a WHERE a.ticket_id = t.id AND a.active) AS planned_start
               FROM tickets t JOIN devices d ON d.id = t.device_id JOIN sites s ON s.id = d.site_id
               JOIN clients c ON c.id = s.client_id
               WHERE t.status NOT IN ('closed', 'cancelled')
               ORDER BY t.id FOR UPDATE OF t SKIP LOCKED"""
        )
        tickets = cur.fetchall()
        policies: dict[tuple[str, int], Policy | None] = {}
        for t in tickets:
            key = (t["segment"], t["priority"])
            if key not in policies:
                policies[key] = load_policy(conn, *key)
            policy = policies[key]
            if policy is None:
                continue
            checked += 1
            history = [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT at, status FROM ticket_status_history WHERE ticket_id = %s AND at <= %s ORDER BY at, id",
                    (t["id"], now),
                )
            ]
            if not history:
                continue
            response = _due(policy, history, policy.target.response_minutes, RESPONDED, now)
            resolution = _due(policy, history, policy.target.resolution_minutes, ENDED, now)
            conn.execute(
                "UPDATE tickets SET due_at = COALESCE(%s, due_at), resolution_due_at = COALESCE(%s, resolution_due_at) "
                "WHERE id = %s",
                (response, resolution, t["id"]),
            )
            responded_at = next((at for at, s in history if s in RESPONDED), None)
            ended_at = next((at for at, s in history if s in ENDED), None)
            clocks: tuple[tuple[Literal["response", "resolution"], datetime | None, datetime | None], ...] = (
                ("response", response, responded_at),
                ("resolution", resolution, ended_at),
            )
            for kind, due, done in clocks:
                if due is not None and due <= (done or now) and (done is None or done > due):
                    added = conn.execute(
                        """INSERT INTO sla_breaches (ticket_id, kind, segment, priority, due_at)
                           VALUES (%s, %s, %s, %s, %s) ON CONFLICT (ticket_id, kind) DO NOTHING""",
                        (t["id"], kind, policy.segment, t["priority"], due),
                    ).rowcount
                    breaches += added
                    if added:
                        publish(conn, SlaBreachedEvent(ticket_id=t["id"], kind=kind))
            at_risk = (
                response is not None
                and responded_at is None
                and response > now
                and (
                    (t["planned_start"] is not None and t["planned_start"] > response)
                    or (t["planned_start"] is None and (response - now).total_seconds() <= policy.warn_minutes * 60)
                )
            )
            if at_risk and response is not None and t["escalated_at"] is None:
                conn.execute("UPDATE tickets SET escalated_at = %s WHERE id = %s", (now, t["id"]))
                publish(conn, SlaAtRiskEvent(ticket_id=t["id"], due_at=response))
                escalated += 1
    return SlaCheck(checked, breaches, escalated)


def sla_job(db_url: str) -> SlaCheck:
    """Scheduler entry point."""
    return check_slas(db_url)


__all__ = ["Policy", "SlaCheck", "check_slas", "initial_due", "load_policy", "sla_job"]
