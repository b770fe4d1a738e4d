"""Inbound work orders from a CRM or accounting system, idempotent by (source, external id)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status

from ticketing.errors import NotFound as TicketNotFound
from ticketing.geo import GreatCircleTravel
from ticketing.tickets import TicketSummary, get_ticket_summary
from ticketing.workorders import DuplicateOpenTicket, WorkOrder, create_work_order

from ..deps import Access, ConnDep, SettingsDep, allow
from ..errors import Conflict, Invalid
from ..schemas import TicketPublic
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/workorders", tags=["work orders"])


@router.post(
    "",
    response_model=TicketPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a ticket from a work order (repeats return the same ticket with 200)",
    responses={
        200: {"description": "this (source, external_id) was seen before"},
        409: {"description": "the device already has an open ticket for this problem code"},
    },
)
def create(
    body: WorkOrder,
    conn: ConnDep,
    access: Annotated[Access, allow("ticket.create")],
    settings: SettingsDep,
    response: Response,
) -> TicketSummary:
    travel = GreatCircleTravel(speed_kmh=settings.travel_speed_kmh, detour_factor=settings.travel_detour_factor)
    try:
        ticket_id, created, _ = create_work_order(conn, body, travel)
    except TicketNotFound as exc:
        raise Invalid(str(exc)) from None
    except DuplicateOpenTicket as exc:
        raise Conflict(str(exc)) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return get_ticket_summary(conn, ticket_id)
