"""Skills: the codes rules require and technicians hold. Dispatchers create, rename, retire and restore
them (``skill.manage``); everyone who reads technicians reads skills. A retired skill stays on the rules,
tickets and technicians that have it, but is given to nobody new (see :mod:`ticketing.skills`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import ConfigDict, Field

from fwcore.inputs import Input
from ticketing import skills
from ticketing.skills import Skill

from ..deps import Access, ConnDep, allow
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/skills", tags=["technicians"])
Manager = Annotated[Access, allow("skill.manage")]
Code = Annotated[str, Path(description="the skill's code, e.g. pump_mech")]


class SkillCreate(Input):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="lower-case letters, digits and _, e.g. pump_mech; rules name it")
    name: str = Field(default="", description="what people read, e.g. Pump mechanics")


class SkillRename(Input):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the new readable name (the code stays)")


@router.get("", response_model=list[Skill], summary="List skills (retired ones too, unless include_retired=false)")
def list_skills(conn: ConnDep, _: Annotated[Access, allow("skill.read")], include_retired: bool = True) -> list[Skill]:
    return skills.list_skills(conn, include_retired=include_retired)


@router.post(
    "",
    response_model=Skill,
    status_code=status.HTTP_201_CREATED,
    summary="Add a skill",
    responses={409: {"description": "the code exists"}, 422: {"description": "the code is not a valid code"}},
)
def create_skill(body: SkillCreate, conn: ConnDep, access: Manager, request: Request, response: Response) -> Skill:
    skill = skills.create_skill(conn, body.code, body.name, actor=access.principal)
    response.headers["Location"] = str(request.url_for("get_skill", skill_code=skill.code))
    return skill


@router.get("/{skill_code}", response_model=Skill, summary="One skill")
def get_skill(skill_code: Code, conn: ConnDep, _: Annotated[Access, allow("skill.read")]) -> Skill:
    return skills.get_skill(conn, skill_code)


@router.patch("/{skill_code}", response_model=Skill, summary="Rename a skill (its code stays)")
def rename_skill(skill_code: Code, body: SkillRename, conn: ConnDep, access: Manager) -> Skill:
    return skills.rename_skill(conn, skill_code, body.name, actor=access.principal)


@router.post(
    "/{skill_code}/retire",
    response_model=Skill,
    summary="Retire a skill: nobody new gets it or requires it; who has it keeps it",
)
def retire_skill(skill_code: Code, conn: ConnDep, access: Manager) -> Skill:
    return skills.retire_skill(conn, skill_code, actor=access.principal)


@router.post("/{skill_code}/restore", response_model=Skill, summary="Restore a retired skill")
def restore_skill(skill_code: Code, conn: ConnDep, access: Manager) -> Skill:
    return skills.retire_skill(conn, skill_code, restore=True, actor=access.principal)
