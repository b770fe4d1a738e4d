"""Gateways and their connection health (birth/death status, sequence gaps); pushing a configuration."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from fwcore import paging
from fwcore.inputs import Input
from ingest import queries
from ingest.config_push import PushedConfig

from ... import gateway_push
from ..deps import Access, ConnDep, PageDep, SettingsDep, allow
from ..schemas import GatewayPublic, GatewayStatus, Page
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/gateways", tags=["gateways"])


@router.get("", response_model=Page[GatewayPublic], summary="List gateways")
def list_gateways(
    conn: ConnDep,
    _: Annotated[Access, allow("gateway.read")],
    page: PageDep,
    site: Annotated[str | None, Query(description="site slug")] = None,
    status: GatewayStatus | None = None,
) -> paging.Page[queries.GatewaySummary]:
    return queries.list_gateways(conn, site=site, status=status, limit=page.limit, offset=page.offset)


class ConfigPush(Input):
    """A gateway config document to push (YAML or JSON, with a ``config_version``)."""

    model_config = ConfigDict(extra="forbid")

    document: str = Field(
        max_length=gateway_push.MAX_DOCUMENT, description="the whole gateway config, as YAML or JSON text"
    )


class ConfigPushed(BaseModel):
    id: int
    gateway_id: int
    version: str
    pushed_by: str
    pushed_at: datetime


@router.post(
    "/{gateway_id}/config",
    response_model=ConfigPushed,
    status_code=202,
    summary="Push a configuration to a gateway (validated first; the outcome arrives in its status)",
)
def push_config(
    gateway_id: int,
    body: ConfigPush,
    conn: ConnDep,
    settings: SettingsDep,
    access: Annotated[Access, allow("gateway.configure")],
) -> PushedConfig:
    """Validate with the gateway's own rules, then publish retained on ``…/config``; 422 names what to fix,
    503 when the broker did not take it (nothing recorded)."""
    try:
        return gateway_push.push(conn, settings, gateway_id, body.document, access.principal.name)
    except gateway_push.BrokerDown as exc:
        raise HTTPException(503, str(exc)) from None
