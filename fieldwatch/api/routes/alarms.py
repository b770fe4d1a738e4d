"""Alarms raised by rules, and acknowledging them."""

from __future__ import annotations

from fastapi import APIRouter

from .. import queries
from ..deps import AlarmHandler, AnyRole, ConnDep, PageDep
from ..schemas import AlarmPublic, AlarmState, Page
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/alarms", tags=["alarms"])


@router.get("", response_model=Page[AlarmPublic], summary="List alarms, newest first")
def list_alarms(
    conn: ConnDep,
    token: AnyRole,
    page: PageDep,
    state: AlarmState | None = None,
    device_id: int | None = None,
) -> Page[AlarmPublic]:
    return queries.list_alarms(conn, state=state, device_id=device_id, limit=page.limit, offset=page.offset)


@router.get("/{alarm_id}", response_model=AlarmPublic, summary="One alarm")
def get_alarm(alarm_id: int, conn: ConnDep, token: AnyRole) -> AlarmPublic:
    return queries.get_alarm(conn, alarm_id)


@router.post(
    "/{alarm_id}/acknowledge",
    response_model=AlarmPublic,
    summary="Acknowledge an active alarm (idempotent)",
    responses={409: {"description": "the alarm is cleared"}},
)
def acknowledge_alarm(alarm_id: int, conn: ConnDep, token: AlarmHandler) -> AlarmPublic:
    from rules.service import release_latched

    alarm = queries.acknowledge_alarm(conn, alarm_id, by=token.name)
    if release_latched(conn, alarm_id, by=token.name):  # a latched alarm whose condition is gone clears now
        return queries.get_alarm(conn, alarm_id)
    return alarm
