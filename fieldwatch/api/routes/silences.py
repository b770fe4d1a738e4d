"""Silences and maintenance windows: they suppress alarms (recorded, not announced), never evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, Field, model_validator

from fwcore.inputs import Input, Instant, Seconds

from ..deps import Access, ConnDep, allow
from ..errors import NotFound
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/silences", tags=["alarms"])

Silencer = Annotated[Access, allow("silence.write")]


class SilenceIn(Input):
    kind: Literal["silence", "maintenance"] = "silence"
    device: str | None = Field(None, description="device id, SITE/KEY, GATEWAY/KEY or a unique KEY")
    site: str | None = Field(None, description="site slug")
    rule: str | None = Field(None, description="rule id or name")
    starts_at: Instant | None = Field(None, description="default: now")
    ends_at: Instant | None = None
    duration_s: Seconds | None = Field(None, description="instead of ends_at; at most ten years")
    reason: str = ""

    @model_validator(mode="after")
    def _window(self) -> SilenceIn:
        if (self.ends_at is None) == (self.duration_s is None):
            raise ValueError("give exactly one of ends_at or duration_s")
        if self.device is None and self.site is None and self.rule is None:
            raise ValueError("give a device, a site or a rule (several: all must match)")
        return self


class SilencePublic(BaseModel):
    id: int
    kind: str
    device_id: int | None
    device: str | None
    site_id: int | None
    site: str | None
    rule_id: int | None
    rule: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


class EndResponse(BaseModel):
    silence: SilencePublic
    released_alarms: list[int] = Field(description="open alarms it held that are now visible (and ticketed)")


@router.get("", response_model=list[SilencePublic], summary="Silences and maintenance windows, newest first")
def list_silences(
    conn: ConnDep, _: Annotated[Access, allow("silence.read")], active: bool = False
) -> list[SilencePublic]:
    from rules.lifecycle import list_silences as _list
    from rules.lifecycle import silence_rows

    return [SilencePublic(**r) for r in silence_rows(conn, _list(conn, active_only=active))]


@router.post(
    "",
    response_model=SilencePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Silence alarms of a device, site or rule for a time window",
)
def create_silence(body: SilenceIn, conn: ConnDep, access: Silencer) -> SilencePublic:
    from rules.lifecycle import create_silence as _create
    from rules.lifecycle import resolve_targets, silence_rows

    # A LifecycleError (unknown target, empty window) is an Invalid: 422 with its message.
    device_id, site_id, rule_id = resolve_targets(conn, device=body.device, site=body.site, rule=body.rule)
    starts = body.starts_at or datetime.now(UTC)
    ends = body.ends_at or starts + timedelta(seconds=body.duration_s or 0)
    s = _create(
        conn,
        created_by=access.principal,
        kind=body.kind,
        device_id=device_id,
        site_id=site_id,
        rule_id=rule_id,
        starts_at=starts,
        ends_at=ends,
        reason=body.reason,
    )
    return SilencePublic(**silence_rows(conn, [s])[0])


@router.post("/{silence_id}/end", response_model=EndResponse, summary="End a window now and release what it held")
def end_silence(silence_id: int, conn: ConnDep, access: Silencer) -> EndResponse:
    from rules.lifecycle import UnknownSilence, silence_rows
    from rules.lifecycle import end_silence as _end

    try:
        s, released = _end(conn, silence_id, by=access.principal)
    except UnknownSilence:  # its own message adds a CLI hint; the API says only that it does not exist
        raise NotFound("silence", silence_id) from None
    return EndResponse(silence=SilencePublic(**silence_rows(conn, [s])[0]), released_alarms=released)
