"""Service tickets with their active assignment."""

from __future__ import annotations

from fastapi import APIRouter

from fwcore import paging
from ticketing import tickets

from ..deps import AnyRole, ConnDep, PageDep
from ..schemas import Page, TicketPublic, TicketStatus
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/tickets", tags=["tickets"])


@router.get("", response_model=Page[TicketPublic], summary="List tickets, newest first")
def list_tickets(
    conn: ConnDep,
    token: AnyRole,
    page: PageDep,
    status: TicketStatus | None = None,
    device_id: int | None = None,
) -> paging.Page[tickets.TicketSummary]:
    return tickets.list_ticket_summaries(conn, status=status, device_id=device_id, limit=page.limit, offset=page.offset)


@router.get("/{ticket_id}", response_model=TicketPublic, summary="One ticket")
def get_ticket(ticket_id: int, conn: ConnDep, token: AnyRole) -> tickets.TicketSummary:
    return tickets.get_ticket_summary(conn, ticket_id)
