"""Request and response bodies of the HTTP API.

Response models (``*Public``) are separate from request models (``*Create``,
``*Update``) so a column added to a table never leaks out, and a client can
never set a field the server owns (ids, timestamps, state).

The domains return their own records (dataclasses or models: ``ingest.queries.Device``,
``rules.alarms.Alarm``, ...); a route returns them as they are and FastAPI builds the response
model from their attributes, so these classes alone decide what the API shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from fwcore.inputs import Input

T = TypeVar("T")

AlarmState = Literal["active", "acknowledged", "cleared"]
AlarmKind = Literal["equipment", "rule_error"]
SlaState = Literal["breached", "at_risk", "on_track"]
TicketSort = Literal["-created_at", "created_at", "priority", "-priority", "due_at", "planned_start", "route"]
TicketStatus = Literal["new", "assigned", "en_route", "on_site", "resolved", "closed", "cancelled"]
GatewayStatus = Literal["unknown", "online", "offline"]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
SkillLevel = Annotated[int, Field(ge=1, le=5, description="1 (basic) to 5 (expert)")]


class Page(BaseModel, Generic[T]):
    """One page of a list; ``total`` counts every row matching the filters."""

    items: list[T]
    total: int
    limit: int
    offset: int


# --- health -----------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready", "degraded", "unavailable"] = Field(
        description="ready; degraded: serving, but the storage's background jobs fail (see storage); unavailable"
    )
    database: str = Field(description='"ok", or why the database cannot be used')
    storage: str = Field(
        "ok", description='"ok", or "degraded: " and which storage background jobs fail (TimescaleDB job statistics)'
    )


# --- assets -----------------------------------------------------------------------------------


class ClientRef(BaseModel):
    id: int
    name: str
    segment: str = Field(description="SLA segment (platinum, gold, standard, ...)")


class SiteRef(BaseModel):
    id: int
    slug: str
    name: str
    latitude: float
    longitude: float


class DevicePublic(BaseModel):
    id: int
    key: str = Field(description="the device name its gateway publishes")
    name: str
    equipment_model: str
    serial: str
    attributes: dict[str, Any]
    gateway: str | None = Field(description="slug of the gateway that polls it")
    site: SiteRef
    client: ClientRef
    created_at: datetime


class LatestValue(BaseModel):
    """The newest stored point of one series; time/value/quality are null if it has none yet."""

    series_id: int
    tag: str
    unit: str
    time: datetime | None
    value: float | None
    quality: int | None = Field(description="0 is good; see docs/contract.md for the other codes")


class DeviceLatest(BaseModel):
    device_id: int
    values: list[LatestValue]


class Point(BaseModel):
    time: datetime
    value: float
    quality: int


class SeriesPoints(BaseModel):
    """Points of one series with ``from <= time < to``, oldest first."""

    model_config = ConfigDict(populate_by_name=True)

    series_id: int
    device_id: int
    tag: str
    unit: str
    from_: datetime = Field(alias="from")
    to: datetime
    limit: int
    truncated: bool = Field(description="true if more points lie in the range than `limit`")
    points: list[Point]


class Bucket(BaseModel):
    time: datetime = Field(description="start of the bucket")
    count: int
    min: float
    max: float
    avg: float
    last: float = Field(description="the newest value in the bucket")


class SeriesBuckets(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    series_id: int
    bucket_s: int
    from_: datetime = Field(alias="from")
    to: datetime
    buckets: list[Bucket]


class Gap(BaseModel):
    start: datetime = Field(description="time of the last point before the gap")
    end: datetime = Field(description="time of the first point after it (or the end of the range if still open)")
    seconds: float
    open: bool = Field(description="true if no point has arrived since `start`")


class SeriesGaps(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    series_id: int
    from_: datetime = Field(alias="from")
    to: datetime
    cadence_s: float | None = Field(description="normal interval between points (median), or the one given")
    threshold_s: float | None
    gaps: list[Gap]


class GatewayPublic(BaseModel):
    id: int
    slug: str
    name: str
    site: str = Field(description="site slug")
    status: GatewayStatus = Field(description="from the gateway's retained birth/death message")
    status_at: datetime | None
    last_seq: int | None = Field(description="highest batch sequence committed from this gateway")
    seq_gaps: int = Field(description="sequences currently missing: batches we have not seen yet (lost in transit)")
    created_at: datetime


# --- alarms -----------------------------------------------------------------------------------


class AlarmPublic(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    problem_code: str
    device_id: int
    device_name: str
    site: str = Field(description="site slug")
    severity: str
    state: AlarmState
    message: str
    trigger_value: float | None
    triggered_at: datetime
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    ticket_id: int | None
    suppressed_by: str | None = Field(None, description="why it is hidden: 'maintenance:ID', 'parent:ALARM', …")
    flapping: bool = False
    explanation: dict[str, Any] | None = Field(
        None,
        description="anomaly alarms: the tags that drove the score — {score, drivers: [{tag, share, value, normal: "
        "[low, high], outside, features}], summary}",
    )
    auto_dispatch: bool = Field(True, description="false: the rule is not validated; ticketed, not dispatched")
    kind: AlarmKind = Field(
        "equipment",
        description="equipment: the equipment misbehaves (ticketed); rule_error: the rule cannot evaluate the "
        "device (a bad device attribute): for the rule's owner, never ticketed; its id is the rule error's",
    )
    owner: str | None = Field(None, description="rule errors: who must fix it (who last changed the rule)")
    hint: str | None = Field(None, description="rule errors: what to do about it")


# --- tickets ----------------------------------------------------------------------------------


class AssignmentPublic(BaseModel):
    technician_id: int
    technician_name: str
    assigned_at: datetime
    distance_km: float | None
    eta_minutes: float | None = Field(description="travel time when the ticket was placed (see eta_at for now)")
    reason: str = Field(description="why this technician was chosen")
    route_order: int | None = Field(None, description="position on the technician's planned route (0 first)")
    eta_at: datetime | None = Field(None, description="planned arrival at the site")
    planned_start: datetime | None = Field(None, description="planned start of the work on site")
    planned_end: datetime | None = Field(None, description="planned end of the work on site")


class TicketPublic(BaseModel):
    id: int
    device_id: int
    device_name: str
    site: str = Field(description="site slug")
    problem_code: str
    title: str
    priority: int = Field(description="1 is most urgent")
    status: TicketStatus
    required_skill: str | None
    source: str
    alarm_id: int | None
    unassigned_reason: str | None
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None
    client_id: int
    client: str
    segment: str | None
    sla_remaining_s: float | None = Field(
        description="seconds until the response SLA is due (negative: late); null once on site or ended"
    )
    sla_state: SlaState | None = Field(description="breached, at_risk (escalated or planned after due) or on_track")
    assignment: AssignmentPublic | None = Field(description="the active assignment, if any")


# --- technicians ------------------------------------------------------------------------------


class TechnicianPublic(BaseModel):
    """A technician. ``email`` and ``phone`` are personal: the keys are present only when the caller may
    see them (dispatchers and admins; a technician or field engineer for themself), absent otherwise."""

    id: int
    name: str
    email: str | None = Field(None, description="present only if your role may see contact details")
    phone: str | None = Field(None, description="present only if your role may see contact details")
    home_lat: float
    home_lon: float
    current_lat: float | None
    current_lon: float | None
    available: bool
    skills: dict[str, int] = Field(description="skill code -> level 1..5")
    created_at: datetime
    retired_at: datetime | None = Field(None, description="set once retired: never dispatched again")


class TechnicianCreate(Input):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
    phone: str = Field("", max_length=50)
    home_lat: Latitude
    home_lon: Longitude
    available: bool = True
    skills: dict[str, SkillLevel] = Field(default_factory=dict, description="skill code -> level 1..5")


class LocationUpdate(Input):
    model_config = ConfigDict(extra="forbid")

    lat: Latitude
    lon: Longitude
