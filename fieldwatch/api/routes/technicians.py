"""Technicians: the roster, adding people, and where they are now."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from .. import queries
from ..deps import AnyRole, ConnDep, Dispatcher, LocationReporter, PageDep
from ..schemas import LocationUpdate, Page, TechnicianCreate, TechnicianPublic
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/technicians", tags=["technicians"])


@router.get("", response_model=Page[TechnicianPublic], summary="List technicians")
def list_technicians(
    conn: ConnDep,
    token: AnyRole,
    page: PageDep,
    skill: str | None = None,
    available: bool | None = None,
) -> Page[TechnicianPublic]:
    return queries.list_technicians(conn, skill=skill, available=available, limit=page.limit, offset=page.offset)


@router.post(
    "",
    response_model=TechnicianPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Add a technician",
    responses={409: {"description": "the email is taken"}},
)
def create_technician(
    body: TechnicianCreate, conn: ConnDep, token: Dispatcher, request: Request, response: Response
) -> TechnicianPublic:
    technician = queries.create_technician(conn, body)
    response.headers["Location"] = str(request.url_for("get_technician", technician_id=technician.id))
    return technician


@router.get("/{technician_id}", response_model=TechnicianPublic, summary="One technician")
def get_technician(technician_id: int, conn: ConnDep, token: AnyRole) -> TechnicianPublic:
    return queries.get_technician(conn, technician_id)


@router.put("/{technician_id}/location", response_model=TechnicianPublic, summary="Report where a technician is")
def set_location(technician_id: int, body: LocationUpdate, conn: ConnDep, token: LocationReporter) -> TechnicianPublic:
    return queries.set_technician_location(conn, technician_id, body.lat, body.lon)
