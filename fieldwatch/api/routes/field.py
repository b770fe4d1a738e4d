"""The technician field API: status changes with GPS position, notes, failure code, parts used,
photo evidence with its geotag and time, and the ticket's timeline (with time on site).

Field engineers and technicians act only on the tickets they hold (their token is bound to their
technician); a status sent with coordinates moves the sender, never someone else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from fwcore.inputs import Input, Instant, Quantity
from ticketing.controls import transition
from ticketing.errors import NotFound as TicketNotFound
from ticketing.evidence import MAX_PHOTO_BYTES, Photo, add_photo, list_photos, photo_bytes
from ticketing.timeline import Timeline as TicketTimeline
from ticketing.timeline import ticket_timeline

from ..deps import TICKET, Access, ConnDep, SettingsDep, allow
from ..errors import Invalid, NotFound
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/tickets", tags=["field"])
Reader = Annotated[Access, allow("ticket.read", on=TICKET)]

Status = Literal["new", "assigned", "en_route", "on_site", "resolved", "closed", "cancelled"]


class StatusChange(Input):
    status: Status
    lat: float | None = Field(
        None, ge=-90, le=90, description="where the sender is; moves the sender if they hold the ticket"
    )
    lon: float | None = Field(None, ge=-180, le=180)
    note: str = ""
    failure_code: str | None = None
    parts_used: dict[str, Quantity] = Field(default_factory=dict, description="part code → quantity (from the van)")


class StatusEntry(BaseModel):
    status: str
    at: datetime
    actor: str
    lat: float | None
    lon: float | None


class Timeline(BaseModel):
    ticket_id: int
    status: str
    failure_code: str | None
    history: list[StatusEntry]
    notes: list[dict]
    parts_used: list[dict]
    time_on_site_minutes: float | None


@router.post(
    "/{ticket_id}/status",
    response_model=Timeline,
    summary="Change a ticket's status from the field",
    responses={409: {"description": "the lifecycle does not allow this change"}},
)
def change_status(
    ticket_id: int,
    body: StatusChange,
    conn: ConnDep,
    access: Annotated[Access, allow("ticket.update_status", on=TICKET)],
) -> TicketTimeline:
    try:
        transition(
            conn,
            ticket_id,
            body.status,
            actor=access.principal,
            lat=body.lat,
            lon=body.lon,
            note=body.note,
            failure_code=body.failure_code,
            parts_used=body.parts_used,
        )
    except TicketNotFound:  # worded "no ticket 7"; an InvalidTransition is a Conflict (409) as it is
        raise NotFound("ticket", ticket_id) from None
    return ticket_timeline(conn, ticket_id)


@router.get("/{ticket_id}/timeline", response_model=Timeline, summary="Status history, notes, parts, time on site")
def timeline(ticket_id: int, conn: ConnDep, _: Reader) -> TicketTimeline:
    return ticket_timeline(conn, ticket_id)


@router.post(
    "/{ticket_id}/photos",
    response_model=Photo,
    status_code=201,
    summary="Upload photo evidence (raw image bytes as the body)",
)
async def upload_photo(
    ticket_id: int,
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    access: Annotated[Access, allow("ticket.add_evidence", on=TICKET)],
    lat: float | None = None,
    lon: float | None = None,
    taken_at: Instant | None = None,
) -> Photo:
    # Never more than the limit + 1 byte in memory (the guard refuses 413 beyond the limit as it streams).
    limit = min(settings.api_max_photo_bytes, MAX_PHOTO_BYTES)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise HTTPException(413, f"a photo may be at most {limit} bytes; send a smaller image")
    data = bytes(buf)
    del buf
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        return add_photo(
            conn,
            ticket_id,
            data,
            content_type,
            taken_at=taken_at or datetime.now(UTC),
            lat=lat,
            lon=lon,
            actor=access.principal.name,
        )
    except TicketNotFound:
        raise NotFound("ticket", ticket_id) from None
    except ValueError as exc:
        raise Invalid(str(exc)) from None


@router.get("/{ticket_id}/photos", response_model=list[Photo], summary="Photo evidence of a ticket")
def photos(ticket_id: int, conn: ConnDep, _: Reader) -> list[Photo]:
    return list_photos(conn, ticket_id)


@router.get(
    "/{ticket_id}/photos/{photo_id}",
    summary="One photo's bytes",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def photo(ticket_id: int, photo_id: int, conn: ConnDep, _: Reader) -> Response:
    try:
        data, content_type = photo_bytes(conn, ticket_id, photo_id)
    except TicketNotFound:
        raise NotFound("photo", photo_id) from None
    return Response(data, media_type=content_type)
