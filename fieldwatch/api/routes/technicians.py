"""Technicians: the roster, adding people, where they are now, and their skills matrix (general
levels and levels per equipment model).

Contact details (``email``, ``phone``) are personal: they appear only for callers the policy lets
see them (``technician.read_contact``: dispatchers and admins, and technicians for themselves);
for everyone else the two keys are left out of the technician's body. A technician's own token
lists only themself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import ConfigDict, Field

from fwcore.inputs import Input
from fwcore.policy import Facts
from ticketing import technicians
from ticketing.technicians import ModelSkill, SkillMatrix, Technician, get_skill_matrix, set_skill_matrix

from ..deps import TECHNICIAN, Access, ConnDep, PageDep, allow
from ..schemas import LocationUpdate, Page, TechnicianCreate, TechnicianPublic
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/technicians", tags=["technicians"])
Dispatcher = Annotated[Access, allow("technician.create")]

#: Left out unless the caller may see them (``response_model_exclude_unset`` drops what was not set).
CONTACT = frozenset({"email", "phone"})


def _public(access: Access, t: Technician) -> TechnicianPublic:
    """``t`` as the caller may see it: without ``email`` and ``phone`` unless the policy shows them."""
    shown = access.may("technician.read_contact", Facts("technician", t.id, frozenset({t.id})))
    return TechnicianPublic.model_validate(t.model_dump(exclude=None if shown else set(CONTACT)))


@router.get(
    "",
    response_model=Page[TechnicianPublic],
    response_model_exclude_unset=True,
    summary="List technicians",
)
def list_technicians(
    conn: ConnDep,
    access: Annotated[Access, allow("technician.read")],
    page: PageDep,
    skill: str | None = None,
    available: bool | None = None,
) -> Page[TechnicianPublic]:
    found = technicians.find_technicians(
        conn, skill=skill, available=available, visible=access.visible, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[_public(access, t) for t in found.items], total=found.total, limit=page.limit, offset=page.offset
    )


@router.post(
    "",
    response_model=TechnicianPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Add a technician",
    responses={409: {"description": "the email is taken"}},
)
def create_technician(
    body: TechnicianCreate, conn: ConnDep, access: Dispatcher, request: Request, response: Response
) -> Technician:
    # unknown skills: 422, email taken: 409
    technician = technicians.create_technician(conn, **body.model_dump(), actor=access.principal)
    response.headers["Location"] = str(request.url_for("get_technician", technician_id=technician.id))
    return technician


@router.get(
    "/{technician_id}", response_model=TechnicianPublic, response_model_exclude_unset=True, summary="One technician"
)
def get_technician(
    technician_id: int, conn: ConnDep, access: Annotated[Access, allow("technician.read", on=TECHNICIAN)]
) -> TechnicianPublic:
    return _public(access, technicians.get_technician(conn, technician_id))


@router.put(
    "/{technician_id}/location",
    response_model=TechnicianPublic,
    response_model_exclude_unset=True,
    summary="Report where a technician is (a field engineer or technician: only themself)",
)
def set_location(
    technician_id: int,
    body: LocationUpdate,
    conn: ConnDep,
    access: Annotated[Access, allow("technician.set_location", on=TECHNICIAN)],
) -> TechnicianPublic:
    technicians.set_technician_location(conn, technician_id, body.lat, body.lon)
    return _public(access, technicians.get_technician(conn, technician_id))


class ModelSkillIn(Input):
    model_config = ConfigDict(extra="forbid")

    skill: str = Field(min_length=1, description="skill code, e.g. pump_mech")
    model: str = Field(min_length=1, description="equipment model, as on the device, e.g. C200")
    level: int = Field(ge=1, le=5)


class SkillMatrixIn(Input):
    """The whole matrix (PUT replaces it): general levels and levels per equipment model."""

    model_config = ConfigDict(extra="forbid")

    skills: dict[str, int] = Field(default_factory=dict, description="skill code -> level 1..5 (any model)")
    models: list[ModelSkillIn] = Field(
        default_factory=list,
        description="levels on one equipment model; they replace the general level on that model, even when lower",
    )


@router.get("/{technician_id}/skills", response_model=SkillMatrix, summary="A technician's skills matrix")
def get_skills(
    technician_id: int, conn: ConnDep, _: Annotated[Access, allow("technician.read", on=TECHNICIAN)]
) -> SkillMatrix:
    return get_skill_matrix(conn, technician_id)


@router.put(
    "/{technician_id}/skills",
    response_model=SkillMatrix,
    summary="Replace a technician's skills matrix",
    responses={422: {"description": "unknown skill code, level outside 1..5, or a model listed twice"}},
)
def put_skills(
    technician_id: int,
    body: SkillMatrixIn,
    conn: ConnDep,
    access: Annotated[Access, allow("technician.manage_skills")],
) -> SkillMatrix:
    models = [ModelSkill(skill=m.skill, model=m.model, level=m.level) for m in body.models]
    # unknown technician 404, bad entries 422
    return set_skill_matrix(conn, technician_id, body.skills, models, actor=access.principal)


class TechnicianChange(Input):
    """The fields to change; those left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1)
    email: str | None = Field(default=None, min_length=3)
    phone: str | None = None
    home_lat: float | None = Field(default=None, ge=-90, le=90)
    home_lon: float | None = Field(default=None, ge=-180, le=180)
    available: bool | None = None


@router.patch(
    "/{technician_id}",
    response_model=TechnicianPublic,
    response_model_exclude_unset=True,
    summary="Change a technician's details or availability",
    responses={409: {"description": "the email is taken, or the technician is retired"}},
)
def change_technician(
    technician_id: int,
    body: TechnicianChange,
    conn: ConnDep,
    access: Annotated[Access, allow("technician.change")],
) -> TechnicianPublic:
    fields = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    return _public(access, technicians.change_technician(conn, technician_id, fields, actor=access.principal))


@router.post(
    "/{technician_id}/retire",
    response_model=TechnicianPublic,
    response_model_exclude_unset=True,
    summary="Retire a technician: never dispatched again; their past work stays",
    responses={409: {"description": "they still hold an active assignment"}},
)
def retire_technician(
    technician_id: int, conn: ConnDep, access: Annotated[Access, allow("technician.change")]
) -> TechnicianPublic:
    return _public(access, technicians.retire_technician(conn, technician_id, actor=access.principal))
