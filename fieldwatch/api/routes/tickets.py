"""Service tickets with their active assignment (a technician's token lists only its own tickets)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from fwcore import paging
from ticketing import tickets

from ..deps import TICKET, Access, ConnDep, PageDep, allow
from ..schemas import Page, SlaState, TicketPublic, TicketSort, TicketStatus
from ..timerange import as_utc
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/tickets", tags=["tickets"])


@router.get("", response_model=Page[TicketPublic], summary="List tickets, filtered, sorted and paged")
def list_tickets(
    conn: ConnDep,
    access: Annotated[Access, allow("ticket.read")],
    page: PageDep,
    status: Annotated[list[TicketStatus] | None, Query(description="one or more statuses")] = None,
    device_id: int | None = None,
    client_id: int | None = None,
    site: Annotated[str | None, Query(description="site slug")] = None,
    segment: str | None = None,
    technician_id: Annotated[int | None, Query(description="who holds the active assignment")] = None,
    priority: Annotated[list[int] | None, Query(description="one or more priorities, 1 (most urgent) to 5")] = None,
    sla: Annotated[SlaState | None, Query(description="state of the response SLA")] = None,
    created_from: Annotated[datetime | None, Query(alias="from", description="created at or after")] = None,
    created_to: Annotated[datetime | None, Query(alias="to", description="created before")] = None,
    sort: Annotated[
        TicketSort,
        Query(
            description="-created_at (newest first), created_at, priority (most urgent first), -priority, "
            "due_at (least SLA time left first), planned_start, route (each technician's stops in route order)"
        ),
    ] = "-created_at",
) -> paging.Page[tickets.TicketSummary]:
    return tickets.list_ticket_summaries(
        conn,
        status=status,
        device_id=device_id,
        client_id=client_id,
        site=site,
        segment=segment,
        technician_id=technician_id,
        priority=priority,
        sla_state=sla,
        created_from=as_utc(created_from) if created_from else None,
        created_to=as_utc(created_to) if created_to else None,
        sort=sort,
        visible=access.visible,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{ticket_id}", response_model=TicketPublic, summary="One ticket")
def get_ticket(
    ticket_id: int, conn: ConnDep, _: Annotated[Access, allow("ticket.read", on=TICKET)]
) -> tickets.TicketSummary:
    return tickets.get_ticket_summary(conn, ticket_id)
