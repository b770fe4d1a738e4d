"""Service KPIs over a period (the same rows `fieldwatch report kpis` exports)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel

from fwcore.inputs import AwareInstant
from ticketing.kpis import compute_kpis

from ..deps import Access, ConnDep, allow
from ..errors import Invalid
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/kpis", tags=["kpis"])


class KpiOut(BaseModel):
    kpi: str
    dimension: str
    value: float | None
    unit: str
    n: int


@router.get("", response_model=list[KpiOut], summary="MTTR, MTBF, SLA compliance, first-time fix, utilization…")
def kpis(
    conn: ConnDep,
    _: Annotated[Access, allow("kpi.read")],
    since: AwareInstant | None = None,
    until: AwareInstant | None = None,
) -> list[KpiOut]:
    end = until or datetime.now(UTC)
    start = since or end - timedelta(days=30)
    if start >= end:
        raise Invalid("since must be before until", ("query", "since"))
    return [KpiOut(**r.as_dict()) for r in compute_kpis(conn, start, end)]
