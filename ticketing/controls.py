"""Dispatcher controls and the ticket lifecycle. Data functions: each runs in the caller's
transaction (the API lends an autocommit connection; we open a transaction block here).

* :func:`assign` — put a ticket on a technician's route (also reassigns). Always checked against
  the hard constraints with the optimizer's judge; if any breaks, :class:`HardConstraint` lists
  them, unless ``override=True`` with a ``reason`` — then the assignment is made and the override
  recorded in ``dispatch_overrides`` (who, why, what broke). ``lock=True`` keeps the periodic
  re-optimisation from moving it.
* :func:`pin` / :func:`unpin` — restrict a ticket to one technician (insertion, bumping and
  re-optimisation respect it); pinning an assigned ticket to someone else moves it (validated).
* :func:`transition` — the lifecycle new → assigned → en_route → on_site → resolved → closed, or
  cancelled from any open status; with the reporter's GPS position, a note, a failure code and
  parts used (taken from the technician's van stock). Ending a ticket ends its assignment. The
  position moves the technician who *sends* it, and only when they hold the ticket: a dispatcher's
  coordinates are recorded in the history but move nobody.

Each takes the ``actor`` making the change (:class:`fwcore.policy.Principal`, or a bare name) and
writes one audit entry (:mod:`fwcore.audit`: ``ticket.assign``, ``ticket.pin``, ``ticket.unpin``,
``ticket.status``) with the state before and after, in the same transaction. Whether the actor
may do it at all is the permission policy's question, asked by the caller (the API) before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from fwcore import audit
from fwcore.events import TicketAssignedEvent, TicketStatusEvent, publish
from fwcore.policy import Principal, principal_of
from ticketing.errors import HardConstraint, InvalidTransition, NotFound
from ticketing.geo import TravelModel
from ticketing.optimizer import CachedTravel, Stop, explain_job, simulate
from ticketing.optimizer.insertion import tech_options
from ticketing.planning import explanation_json, load_snapshot, lock_plan, write_route

#: Allowed status changes (cancelled is allowed from every open status).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("assigned", "cancelled"),
    "assigned": ("en_route", "new", "cancelled"),
    "en_route": ("on_site", "assigned", "cancelled"),
    "on_site": ("resolved", "cancelled"),
    "resolved": ("closed", "on_site"),
    "closed": (),
    "cancelled": (),
}
ENDED = ("resolved", "closed", "cancelled")


@dataclass(frozen=True, slots=True)
class AssignResult:
    ticket_id: int
    technician_id: int
    overridden: tuple[str, ...]  # the hard constraints the dispatcher chose to break
    explanation: dict[str, Any]


def _ticket_status(conn: psycopg.Connection, ticket_id: int) -> str:
    row = conn.execute("SELECT status FROM tickets WHERE id = %s FOR UPDATE", (ticket_id,)).fetchone()
    if row is None:
        raise NotFound(f"no ticket {ticket_id}")
    return row[0]


def assign(
    conn: psycopg.Connection,
    ticket_id: int,
    technician_id: int,
    travel: TravelModel,
    *,
    actor: Principal | str,
    override: bool = False,
    reason: str = "",
    lock: bool = False,
    now: datetime | None = None,
) -> AssignResult:
    """Put ``ticket_id`` on ``technician_id``'s route at the cheapest position (see module docstring)."""
    who = principal_of(actor)
    now = now or datetime.now(UTC)
    travel = CachedTravel(travel)
    with conn.transaction():
        status = _ticket_status(conn, ticket_id)
        if status not in ("new", "assigned"):
            raise InvalidTransition(f"ticket {ticket_id} is {status}: only new or assigned tickets can be (re)assigned")
        lock_plan(conn)
        snap = load_snapshot(conn, now, extra_tickets=[ticket_id])
        try:
            tech = snap.problem.tech(technician_id)
        except KeyError:
            raise NotFound(f"no technician {technician_id}") from None
        job = snap.problem.job(ticket_id)
        old_tech = snap.plan.tech_of(ticket_id)
        frozen = snap.in_progress | snap.locked
        base = snap.plan.without(ticket_id)
        option = next(o for o in tech_options(snap.problem, travel, base, job, frozen) if o.tech_id == technician_id)
        broken: list[str] = []
        if option.feasible:
            stops = option.stops
        else:
            broken = list(option.blockers)
            if not override:
                raise HardConstraint(
                    f"{tech.name} cannot take ticket {ticket_id}: {'; '.join(broken)}. "
                    "Choose another technician, or send override=true with a reason.",
                    broken,
                )
            if not reason.strip():
                raise HardConstraint("an override needs a reason (who agreed, and why)", broken)
            stops = (*base.routes.get(technician_id, ()), Stop("job", ticket_id))  # at the end of the day
        plan = base.with_route(technician_id, tuple(stops))
        exp = explanation_json(explain_job(snap.problem, travel, plan, ticket_id))
        exp["dispatcher"] = {"actor": who.name, "override": bool(broken), "reason": reason, "broken": broken}
        visit = simulate(snap.problem, travel, tech, plan.routes[technician_id]).visit_of(ticket_id)
        km = visit.km if visit else None
        text = f"assigned by {who.name}" + (f" (override: {reason}; breaks {'; '.join(broken)})" if broken else "")
        conn.execute(
            "UPDATE assignments SET active = false, ended_at = now() WHERE ticket_id = %s AND active", (ticket_id,)
        )
        conn.execute(
            """INSERT INTO assignments (ticket_id, technician_id, distance_km, reason, explanation, origin, locked)
               VALUES (%s, %s, %s, %s, %s, 'dispatcher', %s)""",
            (ticket_id, technician_id, km, text, Jsonb(exp), lock),
        )
        if broken:
            conn.execute(
                "INSERT INTO dispatch_overrides (ticket_id, technician_id, actor, reason, violations) "
                "VALUES (%s, %s, %s, %s, %s)",
                (ticket_id, technician_id, who.name, reason, Jsonb(broken)),
            )
        conn.execute(
            """UPDATE tickets SET status = 'assigned', unassigned_reason = NULL, unassigned_blockers = '[]',
                      updated_at = now() WHERE id = %s""",
            (ticket_id,),
        )
        for t in {technician_id, old_tech} - {None}:
            write_route(conn, snap, travel, t, plan.routes.get(t, ()))  # type: ignore[arg-type]
        audit.record(
            conn,
            who,
            "ticket.assign",
            "ticket",
            ticket_id,
            before={"status": status, "technician_id": old_tech},
            after={
                "status": "assigned",
                "technician_id": technician_id,
                "override": bool(broken),
                "reason": reason,
                "broken": broken,
                "locked": lock,
            },
        )
        publish(
            conn,
            TicketAssignedEvent(ticket_id=ticket_id, technician_id=technician_id, by=who.name, override=bool(broken)),
        )
    return AssignResult(ticket_id, technician_id, tuple(broken), exp)


def pin(
    conn: psycopg.Connection,
    ticket_id: int,
    technician_id: int,
    travel: TravelModel,
    *,
    actor: Principal | str,
    override: bool = False,
    reason: str = "",
    now: datetime | None = None,
) -> AssignResult | None:
    """Pin a ticket to a technician; an open ticket assigned elsewhere (or unassigned) moves to them."""
    with conn.transaction():
        status = _ticket_status(conn, ticket_id)
        pinned = _pinned(conn, ticket_id)
        if conn.execute("SELECT 1 FROM technicians WHERE id = %s", (technician_id,)).fetchone() is None:
            raise NotFound(f"no technician {technician_id}")
        current = conn.execute(
            "SELECT technician_id FROM assignments WHERE ticket_id = %s AND active", (ticket_id,)
        ).fetchone()
        result = None
        if status in ("new", "assigned") and (current is None or current[0] != technician_id):
            result = assign(
                conn, ticket_id, technician_id, travel, actor=actor, override=override, reason=reason, now=now
            )
        elif status not in ("new", "assigned") and (current is None or current[0] != technician_id):
            raise InvalidTransition(f"ticket {ticket_id} is {status}: it can no longer move to another technician")
        conn.execute(
            "UPDATE tickets SET pinned_technician_id = %s, updated_at = now() WHERE id = %s", (technician_id, ticket_id)
        )
        audit.record(
            conn,
            actor,
            "ticket.pin",
            "ticket",
            ticket_id,
            before={"pinned_technician_id": pinned},
            after={"pinned_technician_id": technician_id, "override": override, "reason": reason},
        )
    return result


def _pinned(conn: psycopg.Connection, ticket_id: int) -> int | None:
    row = conn.execute("SELECT pinned_technician_id FROM tickets WHERE id = %s", (ticket_id,)).fetchone()
    return row[0] if row else None


def unpin(conn: psycopg.Connection, ticket_id: int, *, actor: Principal | str) -> None:
    """Let the optimizer choose again (the current assignment stays until re-optimisation moves it)."""
    with conn.transaction():
        _ticket_status(conn, ticket_id)
        pinned = _pinned(conn, ticket_id)
        conn.execute("UPDATE tickets SET pinned_technician_id = NULL, updated_at = now() WHERE id = %s", (ticket_id,))
        audit.record(
            conn,
            actor,
            "ticket.unpin",
            "ticket",
            ticket_id,
            before={"pinned_technician_id": pinned},
            after={"pinned_technician_id": None},
        )


def transition(
    conn: psycopg.Connection,
    ticket_id: int,
    to: str,
    *,
    actor: Principal | str,
    lat: float | None = None,
    lon: float | None = None,
    note: str = "",
    failure_code: str | None = None,
    parts_used: Mapping[str, int] | None = None,
) -> str:
    """Move a ticket along its lifecycle; returns the new status (see the module docstring).

    ``lat``/``lon`` are where the actor is: recorded with the status, and the actor's technician
    (``actor.technician_id``) moves there if they hold the ticket — nobody else ever does.
    """
    who = principal_of(actor)
    with conn.transaction():
        status = _ticket_status(conn, ticket_id)
        old_failure = conn.execute("SELECT failure_code FROM tickets WHERE id = %s", (ticket_id,)).fetchone()
        if to not in TRANSITIONS:
            raise InvalidTransition(f"unknown status {to!r}; one of {', '.join(TRANSITIONS)}")
        if to not in TRANSITIONS[status]:
            allowed = ", ".join(TRANSITIONS[status]) or "none (the ticket is final)"
            raise InvalidTransition(f"ticket {ticket_id} is {status}; it can move to: {allowed}")
        tech_row = conn.execute(
            "SELECT technician_id FROM assignments WHERE ticket_id = %s AND active", (ticket_id,)
        ).fetchone()
        tech_id = tech_row[0] if tech_row else None
        if to in ("assigned", "en_route", "on_site", "resolved") and tech_id is None:
            raise InvalidTransition(f"ticket {ticket_id} has no technician; assign one first")
        conn.execute(
            "UPDATE tickets SET status = %s, failure_code = COALESCE(%s, failure_code), updated_at = now() "
            "WHERE id = %s",
            (to, failure_code, ticket_id),
        )
        conn.execute(
            """UPDATE ticket_status_history SET actor = %s, lat = %s, lon = %s
               WHERE id = (SELECT max(id) FROM ticket_status_history WHERE ticket_id = %s)""",
            (who.name, lat, lon, ticket_id),
        )
        if lat is not None and lon is not None and tech_id is not None and who.technician_id == tech_id:
            conn.execute("UPDATE technicians SET current_lat = %s, current_lon = %s WHERE id = %s", (lat, lon, tech_id))
        if note:
            conn.execute(
                "INSERT INTO ticket_notes (ticket_id, author, body) VALUES (%s, %s, %s)", (ticket_id, who.name, note)
            )
        for code, qty in (parts_used or {}).items():
            if conn.execute("SELECT 1 FROM parts WHERE code = %s", (code,)).fetchone() is None:
                raise InvalidTransition(f"unknown part {code!r}; add it to parts first")
            conn.execute(
                "INSERT INTO ticket_parts_used (ticket_id, technician_id, part_code, quantity) VALUES (%s, %s, %s, %s)",
                (ticket_id, tech_id, code, qty),
            )
            if tech_id is not None:
                conn.execute(
                    "UPDATE van_stock SET quantity = GREATEST(0, quantity - %s) "
                    "WHERE technician_id = %s AND part_code = %s",
                    (qty, tech_id, code),
                )
        if to in ENDED or to == "new":
            conn.execute(
                "UPDATE assignments SET active = false, ended_at = now() WHERE ticket_id = %s AND active", (ticket_id,)
            )
        before_failure = old_failure[0] if old_failure else None
        audit.record(
            conn,
            who,
            "ticket.status",
            "ticket",
            ticket_id,
            before={"status": status, "failure_code": before_failure, "technician_id": tech_id},
            after={
                "status": to,
                "failure_code": failure_code or before_failure,
                "note": note,
                "parts_used": dict(parts_used or {}),
                "lat": lat,
                "lon": lon,
            },
        )
        publish(conn, TicketStatusEvent(ticket_id=ticket_id, status=to, from_status=status))
    return to
