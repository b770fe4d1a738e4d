"""Gateways and their connection health (birth/death status, sequence gaps)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fwcore import paging
from ingest import queries

from ..deps import Access, ConnDep, PageDep, allow
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
