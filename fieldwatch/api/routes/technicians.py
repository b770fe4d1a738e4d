"""Technicians: the roster, adding people, where they are now, and their skills matrix (general
levels and levels per equipment model)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from fwcore import paging
from ticketing import technicians
from ticketing.technicians import ModelSkill, SkillMatrix, Technician, get_skill_matrix, set_skill_matrix

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
) -> paging.Page[Technician]:
    return technicians.find_technicians(conn, skill=skill, available=available, limit=page.limit, offset=page.offset)


@router.post(
    "",
    response_model=TechnicianPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Add a technician",
    responses={409: {"description": "the email is taken"}},
)
def create_technician(
    body: TechnicianCreate, conn: ConnDep, token: Dispatcher, request: Request, response: Response
) -> Technician:
    technician = technicians.create_technician(conn, **body.model_dump())  # unknown skills: 422, email taken: 409
    response.headers["Location"] = str(request.url_for("get_technician", technician_id=technician.id))
    return technician


@router.get("/{technician_id}", response_model=TechnicianPublic, summary="One technician")
def get_technician(technician_id: int, conn: ConnDep, token: AnyRole) -> Technician:
    return technicians.get_technician(conn, technician_id)


@router.put("/{technician_id}/location", response_model=TechnicianPublic, summary="Report where a technician is")
def set_location(technician_id: int, body: LocationUpdate, conn: ConnDep, token: LocationReporter) -> Technician:
    technicians.set_technician_location(conn, technician_id, body.lat, body.lon)
    return technicians.get_technician(conn, technician_id)


class ModelSkillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skill: str = Field(min_length=1, description="skill code, e.g. pump_mech")
    model: str = Field(min_length=1, description="equipment model, as on the device, e.g. C200")
    level: int = Field(ge=1, le=5)


class SkillMatrixIn(BaseModel):
    """The whole matrix (PUT replaces it): general levels and levels per equipment model."""

    model_config = ConfigDict(extra="forbid")

    skills: dict[str, int] = Field(default_factory=dict, description="skill code -> level 1..5 (any model)")
    models: list[ModelSkillIn] = Field(
        default_factory=list,
        description="levels on one equipment model; they replace the general level on that model, even when lower",
    )


@router.get("/{technician_id}/skills", response_model=SkillMatrix, summary="A technician's skills matrix")
def get_skills(technician_id: int, conn: ConnDep, token: AnyRole) -> SkillMatrix:
    return get_skill_matrix(conn, technician_id)


@router.put(
    "/{technician_id}/skills",
    response_model=SkillMatrix,
    summary="Replace a technician's skills matrix",
    responses={422: {"description": "unknown skill code, level outside 1..5, or a model listed twice"}},
)
def put_skills(technician_id: int, body: SkillMatrixIn, conn: ConnDep, token: Dispatcher) -> SkillMatrix:
    models = [ModelSkill(skill=m.skill, model=m.model, level=m.level) for m in body.models]
    return set_skill_matrix(conn, technician_id, body.skills, models)  # unknown technician 404, bad entries 422
