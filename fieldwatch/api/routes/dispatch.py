"""Dispatcher controls: assign / reassign, pin / unpin, and why a ticket went where it did.

Every assignment is checked against the hard constraints (skill and level, shift, time window,
parts and tools, availability). A choice that breaks one is refused with 409 and the list of
broken constraints, unless the body says ``override: true`` with a ``reason`` — then it is made
and the override recorded.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fwcore.inputs import Input
from ticketing.controls import AssignResult, assign, pin, unpin
from ticketing.errors import HardConstraint
from ticketing.errors import NotFound as TicketNotFound
from ticketing.geo import GreatCircleTravel
from ticketing.tickets import TicketExplanation, ticket_explanation

from ..deps import TICKET, Access, ConnDep, SettingsDep, allow
from ..errors import Conflict, NotFound
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/tickets", tags=["dispatch"])
Dispatcher = Annotated[Access, allow("ticket.assign")]


class AssignBody(Input):
    technician_id: int
    override: bool = Field(False, description="break the listed hard constraints on purpose (needs a reason)")
    reason: str = Field("", description="why the override is right; recorded with your token's name")
    lock: bool = Field(False, description="keep the periodic re-optimisation from moving it")


class PinBody(Input):
    technician_id: int
    override: bool = False
    reason: str = ""


class AssignOut(BaseModel):
    ticket_id: int
    technician_id: int
    overridden: list[str]
    explanation: dict[str, Any]


class ExplanationOut(BaseModel):
    ticket_id: int
    status: str
    technician_id: int | None
    technician_name: str | None
    reason: str | None
    explanation: dict[str, Any]
    unassigned_blockers: list[str]
    pinned_technician_id: int | None


def _out(r: AssignResult) -> AssignOut:
    return AssignOut(
        ticket_id=r.ticket_id, technician_id=r.technician_id, overridden=list(r.overridden), explanation=r.explanation
    )


def _mapped(fn, *args, **kw):
    """Call a dispatcher control, wording its refusals for the API (an InvalidTransition is a Conflict as it is)."""
    try:
        return fn(*args, **kw)
    except TicketNotFound as exc:
        raise NotFound("ticket or technician", str(exc)) from None
    except HardConstraint as exc:
        raise Conflict(f"{exc} (broken: {'; '.join(exc.blockers)})") from None


def _travel(settings) -> GreatCircleTravel:
    return GreatCircleTravel(speed_kmh=settings.travel_speed_kmh, detour_factor=settings.travel_detour_factor)


@router.post(
    "/{ticket_id}/assign",
    response_model=AssignOut,
    summary="Assign or reassign a ticket (validated)",
    responses={409: {"description": "breaks a hard constraint (send override + reason) or wrong status"}},
)
def assign_ticket(
    ticket_id: int, body: AssignBody, conn: ConnDep, access: Dispatcher, settings: SettingsDep
) -> AssignOut:
    return _out(
        _mapped(
            assign,
            conn,
            ticket_id,
            body.technician_id,
            _travel(settings),
            actor=access.principal,
            override=body.override,
            reason=body.reason,
            lock=body.lock,
        )
    )


@router.put(
    "/{ticket_id}/pin",
    response_model=AssignOut | None,
    summary="Pin a ticket to a technician",
    responses={409: {"description": "breaks a hard constraint (send override + reason) or wrong status"}},
)
def pin_ticket(
    ticket_id: int, body: PinBody, conn: ConnDep, access: Dispatcher, settings: SettingsDep
) -> AssignOut | None:
    r = _mapped(
        pin,
        conn,
        ticket_id,
        body.technician_id,
        _travel(settings),
        actor=access.principal,
        override=body.override,
        reason=body.reason,
    )
    return _out(r) if r is not None else None


@router.delete("/{ticket_id}/pin", status_code=204, summary="Unpin a ticket")
def unpin_ticket(ticket_id: int, conn: ConnDep, access: Dispatcher) -> None:
    _mapped(unpin, conn, ticket_id, actor=access.principal)


@router.get(
    "/{ticket_id}/explanation",
    response_model=ExplanationOut,
    summary="Why the ticket went to its technician, or why it is unassigned",
)
def explanation(
    ticket_id: int, conn: ConnDep, _: Annotated[Access, allow("ticket.read", on=TICKET)]
) -> TicketExplanation:
    return ticket_explanation(conn, ticket_id)
