"""Raw points of one series over a time range."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from fwcore.inputs import Instant
from ingest import queries

from ..deps import Access, ConnDep, allow
from ..schemas import SeriesPoints
from ..timerange import resolve_range
from ._prefix import API_PREFIX

MAX_POINTS = 100_000

router = APIRouter(prefix=f"{API_PREFIX}/series", tags=["telemetry"])


@router.get("/{series_id}/points", response_model=SeriesPoints, summary="Points in [from, to), oldest first")
def series_points(
    series_id: int,
    conn: ConnDep,
    _: Annotated[Access, allow("telemetry.read")],
    start: Annotated[
        Instant | None, Query(alias="from", description="ISO 8601, inclusive; default `to` minus one hour")
    ] = None,
    end: Annotated[Instant | None, Query(alias="to", description="ISO 8601, exclusive; default now")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS, description="most points returned")] = 10_000,
) -> queries.SeriesPoints:
    start, end = resolve_range(start, end, datetime.now(UTC))
    return queries.series_points(conn, series_id, start, end, limit)
