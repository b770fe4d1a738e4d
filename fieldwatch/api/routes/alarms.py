"""Alarms raised by rules, and acknowledging them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from fwcore import paging
from fwcore.inputs import Input
from rules import alarms

from ..deps import Access, ConnDep, PageDep, allow
from ..errors import Invalid
from ..schemas import AlarmKind, AlarmPublic, AlarmState, Page
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/alarms", tags=["alarms"])
Reader = Annotated[Access, allow("alarm.read")]


@router.get(
    "",
    response_model=Page[AlarmPublic],
    summary="List alarms, newest first: equipment alarms and rule errors (kind)",
    description="A rule error (`kind` rule_error) is a rule that cannot evaluate a device; it is `active` while "
    "open, names its `owner` and a `hint`, and is never ticketed. Ids are per kind; `/alarms/{id}` is equipment.",
)
def list_alarms(
    conn: ConnDep,
    _: Reader,
    page: PageDep,
    state: AlarmState | None = None,
    device_id: int | None = None,
    kind: AlarmKind | None = None,
) -> paging.Page[alarms.Alarm]:
    return alarms.list_alarms(conn, state=state, device_id=device_id, kind=kind, limit=page.limit, offset=page.offset)


@router.get("/{alarm_id}", response_model=AlarmPublic, summary="One equipment alarm")
def get_alarm(alarm_id: int, conn: ConnDep, _: Reader) -> alarms.Alarm:
    return alarms.get_alarm(conn, alarm_id)


@router.post(
    "/{alarm_id}/acknowledge",
    response_model=AlarmPublic,
    summary="Acknowledge an active alarm (idempotent)",
    responses={409: {"description": "the alarm is cleared"}},
)
def acknowledge_alarm(
    alarm_id: int, conn: ConnDep, access: Annotated[Access, allow("alarm.acknowledge")]
) -> alarms.Alarm:
    return alarms.acknowledge(
        conn, alarm_id, by=access.principal.name
    )  # a latched alarm whose condition is gone clears now


class CommentIn(Input):
    body: str = Field(min_length=1, max_length=10_000, description="the comment text")


class CommentPublic(BaseModel):
    id: int
    alarm_id: int
    author: str
    body: str
    created_at: datetime


@router.get("/{alarm_id}/comments", response_model=list[CommentPublic], summary="An alarm's comments, oldest first")
def list_alarm_comments(alarm_id: int, conn: ConnDep, _: Reader) -> list[CommentPublic]:
    from rules.lifecycle import list_comments

    return [CommentPublic(**_fields(c)) for c in list_comments(conn, alarm_id)]  # UnknownAlarm is a NotFound


@router.post(
    "/{alarm_id}/comments",
    response_model=CommentPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Comment on an alarm (the token's name is the author)",
)
def add_alarm_comment(
    alarm_id: int, comment: CommentIn, conn: ConnDep, access: Annotated[Access, allow("alarm.comment")]
) -> CommentPublic:
    from rules.lifecycle import LifecycleError, UnknownAlarm, add_comment

    try:
        return CommentPublic(**_fields(add_comment(conn, alarm_id, author=access.principal, body=comment.body)))
    except UnknownAlarm:
        raise  # a NotFound (404), though also a LifecycleError
    except LifecycleError as exc:  # the comment's text: reported at the field
        raise Invalid(str(exc), ("body", "body")) from None


def _fields(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__slots__}  # type: ignore[attr-defined]
