"""Telemetry queries: time buckets (min/max/avg/last), data gaps and CSV export of one series."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from .. import telemetry
from ..deps import AnyRole, ConnDep
from ..timerange import resolve_range
from ._prefix import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/series", tags=["telemetry"])

From = Annotated[datetime | None, Query(alias="from", description="ISO 8601, inclusive; default `to` minus one hour")]
To = Annotated[datetime | None, Query(alias="to", description="ISO 8601, exclusive; default now")]
MAX_EXPORT_ROWS = 1_000_000


@router.get("/{series_id}/buckets", response_model=telemetry.SeriesBuckets, summary="min/max/avg/last per time bucket")
def series_buckets(
    series_id: int,
    conn: ConnDep,
    token: AnyRole,
    start: From = None,
    end: To = None,
    bucket: Annotated[str, Query(description="bucket width: 30s, 5m, 1h, 1d (aligned on UTC)")] = "1m",
) -> telemetry.SeriesBuckets:
    start, end = resolve_range(start, end, datetime.now(UTC))
    return telemetry.buckets(conn, series_id, start, end, telemetry.parse_span(bucket))


@router.get("/{series_id}/gaps", response_model=telemetry.SeriesGaps, summary="Intervals without data")
def series_gaps(
    series_id: int,
    conn: ConnDep,
    token: AnyRole,
    start: From = None,
    end: To = None,
    factor: Annotated[float, Query(gt=1, le=1000, description="a gap is longer than factor × cadence")] = 3.0,
    cadence: Annotated[
        str | None, Query(description="the expected interval (e.g. 10s); default: the median interval seen")
    ] = None,
) -> telemetry.SeriesGaps:
    now = datetime.now(UTC)
    start, end = resolve_range(start, end, now)
    cadence_s = telemetry.parse_span(cadence, loc=("query", "cadence")).total_seconds() if cadence else None
    return telemetry.gaps(conn, series_id, start, end, now, factor=factor, cadence_s=cadence_s)


@router.get(
    "/{series_id}/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Points in [from, to) as CSV (time,value,quality)",
)
def series_csv(
    series_id: int,
    conn: ConnDep,
    token: AnyRole,
    start: From = None,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EXPORT_ROWS, description="most rows")] = MAX_EXPORT_ROWS,
) -> Response:
    start, end = resolve_range(start, end, datetime.now(UTC))
    body = telemetry.export_csv(conn, series_id, start, end, limit)
    name = f"series-{series_id}-{start:%Y%m%dT%H%M%S}.csv"
    return Response(body, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})
