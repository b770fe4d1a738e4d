"""Service tickets with their active assignment (a technician's token lists only its own tickets)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from fwcore import paging
from ticketing import tickets

from ..deps import TICKET, Access, ConnDep, PageDep, allow
from ..schemas import Page, TicketPublic, TicketStatus
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/tickets", tags=["tickets"])


@router.get("", response_model=Page[TicketPublic], summary="List tickets, newest first")
def list_tickets(
    conn: ConnDep,
    access: Annotated[Access, allow("ticket.read")],
    page: PageDep,
    status: TicketStatus | None = None,
    device_id: int | None = None,
) -> paging.Page[tickets.TicketSummary]:
    return tickets.list_ticket_summaries(
        conn, status=status, device_id=device_id, visible=access.visible, limit=page.limit, offset=page.offset
    )


@router.get("/{ticket_id}", response_model=TicketPublic, summary="One ticket")
def get_ticket(
    ticket_id: int, conn: ConnDep, _: Annotated[Access, allow("ticket.read", on=TICKET)]
) -> tickets.TicketSummary:
    return tickets.get_ticket_summary(conn, ticket_id)
