"""Telemetry queries (time buckets with min/max/avg/last, data gaps, CSV export) and history import."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from fwcore.inputs import Instant
from ingest import timeseries

from ..deps import Access, ConnDep, SettingsDep, allow
from ..devicepath import DEVICE_PATH_HELP
from ..errors import Invalid, NotFound
from ..schemas import SeriesBuckets, SeriesGaps
from ..streams import BodyTextError, body_lines
from ..timerange import parse_span, resolve_range
from ._prefix import API_PREFIX

series_router = APIRouter(prefix=f"{API_PREFIX}/series", tags=["telemetry"])
devices_router = APIRouter(prefix=f"{API_PREFIX}/devices", tags=["telemetry"])
Reader = Annotated[Access, allow("telemetry.read")]

From = Annotated[Instant | None, Query(alias="from", description="ISO 8601, inclusive; default `to` minus one hour")]
To = Annotated[Instant | None, Query(alias="to", description="ISO 8601, exclusive; default now")]
MAX_EXPORT_ROWS = 1_000_000
#: Refused rows listed in an import's answer (all of them are counted and kept in dead_letters).
MAX_BAD_SHOWN = 100


@series_router.get("/{series_id}/buckets", response_model=SeriesBuckets, summary="min/max/avg/last per time bucket")
def series_buckets(
    series_id: int,
    conn: ConnDep,
    _: Reader,
    start: From = None,
    end: To = None,
    bucket: Annotated[str, Query(description="bucket width: 30s, 5m, 1h, 1d (aligned on UTC)")] = "1m",
) -> timeseries.SeriesBuckets:
    start, end = resolve_range(start, end, datetime.now(UTC))
    return timeseries.buckets(conn, series_id, start, end, parse_span(bucket))


@series_router.get("/{series_id}/gaps", response_model=SeriesGaps, summary="Intervals without data")
def series_gaps(
    series_id: int,
    conn: ConnDep,
    _: Reader,
    start: From = None,
    end: To = None,
    factor: Annotated[float, Query(gt=1, le=1000, description="a gap is longer than factor × cadence")] = 3.0,
    cadence: Annotated[
        str | None, Query(description="the expected interval (e.g. 10s); default: the median interval seen")
    ] = None,
) -> timeseries.SeriesGaps:
    now = datetime.now(UTC)
    start, end = resolve_range(start, end, now)
    cadence_s = parse_span(cadence, loc=("query", "cadence")).total_seconds() if cadence else None
    return timeseries.gaps(conn, series_id, start, end, now, factor=factor, cadence_s=cadence_s)


@series_router.get(
    "/{series_id}/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Points in [from, to) as CSV (time,value,quality)",
)
def series_csv(
    series_id: int,
    conn: ConnDep,
    _: Reader,
    start: From = None,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EXPORT_ROWS, description="most rows")] = MAX_EXPORT_ROWS,
) -> Response:
    start, end = resolve_range(start, end, datetime.now(UTC))
    body = timeseries.export_csv(conn, series_id, start, end, limit)
    name = f"series-{series_id}-{start:%Y%m%dT%H%M%S}.csv"
    return Response(body, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


class HistoryBadRow(BaseModel):
    line: int
    reason: str


class HistoryImportResult(BaseModel):
    rows: int
    points: int
    inserted: int
    duplicates: int = Field(description="points already stored (re-importing a file is harmless)")
    conflicts: int = Field(
        0, description="points stored earlier with another value: those are kept, these are dead letters"
    )
    tags: list[str]
    bad_rows: int = Field(description="rows refused; each is kept in dead_letters with its line number")
    bad: list[HistoryBadRow] = Field(description="the first 100 refused rows")


@devices_router.post(
    "/{device_id:device}/history",
    response_model=HistoryImportResult,
    summary="Import a wide CSV (time column + one column per tag) for this device",
    description=f"`device_id`: {DEVICE_PATH_HELP}.",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}},
)
async def import_device_history(
    device_id: str,
    request: Request,
    settings: SettingsDep,
    _: Annotated[Access, allow("telemetry.import")],
    separator: Annotated[str, Query(min_length=1, max_length=1)] = ",",
    time_column: Annotated[str | None, Query(description="default: the first column")] = None,
    time_format: Annotated[str | None, Query(description="strptime format, epoch_s or epoch_ms; default ISO")] = None,
    timezone: Annotated[str, Query(description="IANA zone for times without an offset")] = "UTC",
    decimal: Annotated[str, Query(min_length=1, max_length=1)] = ".",
    ignore_retention: Annotated[
        bool, Query(description="import rows older than the retention too (the retention job drops them later)")
    ] = False,
) -> HistoryImportResult:
    from ingest.history import MAX_LINE_CHARS, CsvOptions, HistoryError, import_history

    # Streamed: the body is read chunk by chunk by the import's worker thread (constant memory; the
    # guard has already refused it if it passes FIELDWATCH_API_MAX_IMPORT_BYTES).
    opts = CsvOptions(separator, time_column, time_format, timezone, decimal)
    try:
        report = await run_in_threadpool(
            import_history,
            settings.database_url,
            body_lines(request.stream(), max_line=MAX_LINE_CHARS),
            str(device_id),
            opts,
            retention_days=settings.retention_days,
            max_future_s=settings.max_future_seconds,
            keep_bad=MAX_BAD_SHOWN,
            ignore_retention=ignore_retention,
        )
    except BodyTextError as exc:
        raise Invalid(str(exc), loc=("body",)) from None
    except HistoryError as exc:
        if str(exc).startswith("no device"):
            raise NotFound("device", device_id) from None
        raise Invalid(str(exc), loc=("body",)) from None
    return HistoryImportResult(
        rows=report.rows,
        points=report.points,
        inserted=report.inserted,
        duplicates=report.duplicates,
        conflicts=report.conflicts,
        tags=report.tags,
        bad_rows=report.bad_rows,
        bad=[HistoryBadRow(line=b.line, reason=b.reason) for b in report.bad],
    )


router = APIRouter()
router.include_router(series_router)
router.include_router(devices_router)
