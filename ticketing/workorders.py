"""Inbound work orders (CRM, accounting: commissioning after a contract, a shipped unit…) become
tickets, idempotent by (source, external id): sending the same order again returns the ticket it
already made. A new ticket gets its SLA due time and is placed in today's plan at once."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg import errors
from pydantic import Field

from fwcore.events import TicketAssignedEvent, TicketCreatedEvent, publish
from fwcore.inputs import Input, Instant, Quantity
from ticketing.errors import NotFound, TicketingError
from ticketing.geo import TravelModel
from ticketing.planning import Placement, place_ticket
from ticketing.sla_checks import initial_due, load_policy


class WorkOrder(Input):
    """A work order as an external system sends it."""

    source: str = Field(..., min_length=1, description="the sending system, e.g. 'crm'")
    external_id: str = Field(..., min_length=1, description="its id there; repeats return the same ticket")
    device_id: int
    problem_code: str = Field("WORK_ORDER", min_length=1)
    title: str = Field(..., min_length=1)
    priority: int = Field(3, ge=1, le=5)
    required_skill: str | None = None
    required_level: int = Field(1, ge=1, le=5)
    required_tools: list[str] = Field(default_factory=list)
    parts: dict[str, Quantity] = Field(default_factory=dict, description="part code → quantity")
    service_minutes: int = Field(60, gt=0)
    window_start: Instant | None = None
    window_end: Instant | None = None


class DuplicateOpenTicket(TicketingError):
    """The device already has an open ticket for this problem code."""


def create_work_order(
    conn: psycopg.Connection, order: WorkOrder, travel: TravelModel, now: datetime | None = None
) -> tuple[int, bool, Placement | None]:
    """(ticket id, created?, placement) — an order seen before returns its ticket, unchanged."""
    now = now or datetime.now(UTC)
    with conn.transaction():
        existing = conn.execute(
            "SELECT id FROM tickets WHERE external_source = %s AND external_id = %s", (order.source, order.external_id)
        ).fetchone()
        if existing:
            return existing[0], False, None
        seg = conn.execute(
            "SELECT c.segment FROM devices d JOIN sites s ON s.id = d.site_id JOIN clients c ON c.id = s.client_id "
            "WHERE d.id = %s",
            (order.device_id,),
        ).fetchone()
        if seg is None:
            raise NotFound(f"no device {order.device_id}")
        due = initial_due(load_policy(conn, seg[0], order.priority), now)
        try:
            with conn.transaction():
                row = conn.execute(
                    """INSERT INTO tickets (device_id, problem_code, title, priority, required_skill, required_level,
                                           required_tools, service_minutes, window_start, window_end, source,
                                           external_source, external_id, due_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'api', %s, %s, %s)
                       ON CONFLICT (external_source, external_id) WHERE external_id IS NOT NULL DO NOTHING
                       RETURNING id""",
                    (
                        order.device_id,
                        order.problem_code,
                        order.title,
                        order.priority,
                        order.required_skill,
                        order.required_level,
                        order.required_tools,
                        order.service_minutes,
                        order.window_start,
                        order.window_end,
                        order.source,
                        order.external_id,
                        due,
                    ),
                ).fetchone()
                if row is None:  # a concurrent request with the same external id won
                    again = conn.execute(
                        "SELECT id FROM tickets WHERE external_source = %s AND external_id = %s",
                        (order.source, order.external_id),
                    ).fetchone()
                    return again[0], False, None  # type: ignore[index]
                ticket_id = row[0]
                for code, qty in order.parts.items():
                    conn.execute(
                        "INSERT INTO ticket_parts (ticket_id, part_code, quantity) VALUES (%s, %s, %s)",
                        (ticket_id, code, qty),
                    )
        except errors.UniqueViolation:
            raise DuplicateOpenTicket(
                f"device {order.device_id} already has an open ticket for problem {order.problem_code!r}; "
                "send a different problem_code or update that ticket"
            ) from None
        except errors.ForeignKeyViolation as exc:
            raise NotFound(f"unknown skill or part in the work order: {exc.diag.message_detail}") from None
        publish(conn, TicketCreatedEvent(ticket_id=ticket_id))
        placement = place_ticket(conn, ticket_id, travel, now)
        if placement.tech_id is not None:
            publish(conn, TicketAssignedEvent(ticket_id=ticket_id, technician_id=placement.tech_id))
    return ticket_id, True, placement
