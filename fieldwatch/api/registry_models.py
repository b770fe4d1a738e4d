"""Request and response bodies of the asset registry (clients, sites, gateways, devices, series).

``*Create`` bodies list every field a client may set; ``*Update`` bodies make each of them optional
(a PATCH changes only the fields it names); ``*Record`` bodies are what the server answers. Slugs and
device keys appear in MQTT topics and payloads, so they are restricted to characters that are safe
there (no ``/``, ``+``, ``#``, spaces).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from fwcore.inputs import Input

from .schemas import GatewayStatus, Latitude, Longitude

Name = Annotated[str, Field(min_length=1, max_length=200)]
Slug = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="lower case, topic-safe")
]
Key = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", description="topic-safe")
]
Text = Annotated[str, Field(max_length=500)]


class _Body(Input):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


# --- clients ----------------------------------------------------------------------------------


class ClientCreate(_Body):
    name: Name
    segment: str = Field(description="SLA segment: platinum, gold, standard, ... (table sla_segments)")


class ClientUpdate(_Body):
    name: Name | None = None
    segment: str | None = None


class ClientRecord(BaseModel):
    id: int
    name: str
    segment: str
    created_at: datetime


# --- sites ------------------------------------------------------------------------------------


class SiteCreate(_Body):
    client_id: int
    slug: Slug
    name: Name
    address: Text = ""
    latitude: Latitude
    longitude: Longitude


class SiteUpdate(_Body):
    client_id: int | None = None
    slug: Slug | None = None
    name: Name | None = None
    address: Text | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None


class SiteRecord(BaseModel):
    id: int
    client_id: int
    slug: str
    name: str
    address: str
    latitude: float
    longitude: float


# --- gateways ---------------------------------------------------------------------------------


class GatewayCreate(_Body):
    site_id: int
    slug: Slug
    name: Text = ""
    auto_accept: bool = Field(
        default=False, description="register the devices it announces without asking (see GET /discovered)"
    )


class GatewayUpdate(_Body):
    site_id: int | None = None
    slug: Slug | None = None
    name: Text | None = None
    auto_accept: bool | None = None


class RejectionPublic(BaseModel):
    """The gateway's dead letters of one reason."""

    reason: str
    messages: int = Field(description="dead-letter rows")
    points: int = Field(description="points they keep (0 for messages that could not be read)")
    since: datetime = Field(description="when the oldest arrived")
    last: datetime = Field(description="when the newest arrived")
    devices: list[str] = Field(description="device keys among their points (at most 20)")


class PendingDevicePublic(BaseModel):
    """A device the gateway announced that waits to be accepted or rejected (GET /discovered/{id})."""

    id: int
    key: str
    held_points: int
    since: datetime = Field(description="when its oldest held point arrived (or it was first seen)")


class GatewayRecord(BaseModel):
    id: int
    site_id: int
    site: str = Field(description="site slug")
    slug: str
    name: str
    status: GatewayStatus
    status_at: datetime | None
    last_seq: int | None = Field(description="highest batch sequence committed from this gateway")
    seq_gaps: int = Field(description="sequences currently missing: batches we have not seen yet (lost in transit)")
    seq_skipped_total: int = Field(description="sequences ever skipped when seen, including those that arrived later")
    seq_filled_total: int = Field(description="skipped sequences that arrived later (out of order or resent)")
    seq_missing: list[tuple[int, int]] = Field(
        description="the newest 100 missing ranges [first, last] (inclusive), oldest first"
    )
    created_at: datetime
    auto_accept: bool
    healthy: bool = Field(description="online, with no dead letters and no discovered device waiting")
    problems: list[str] = Field(
        description='one sentence per problem, e.g. "4 points rejected since 2026-03-01T10:00:00Z: unknown device '
        "'pump-9'\""
    )
    rejections: list[RejectionPublic] = Field(description="its dead letters by reason (purge or replay them to clear)")
    discovered: list[PendingDevicePublic] = Field(description="its devices waiting to be accepted")


# --- devices ----------------------------------------------------------------------------------


class DeviceCreate(_Body):
    site_id: int
    gateway_id: int | None = Field(default=None, description="the gateway that polls it (must be on the same site)")
    key: Key = Field(description="the device name its gateway publishes")
    name: Text = ""
    equipment_model: Name
    serial: Text = ""
    profile: Text = Field(default="", description="equipment profile (gateway/profiles/<profile>.yaml)")
    attributes: dict[str, Any] = Field(default_factory=dict)
    parent_id: int | None = None


class DeviceUpdate(_Body):
    site_id: int | None = None
    gateway_id: int | None = None
    key: Key | None = None
    name: Text | None = None
    equipment_model: Name | None = None
    serial: Text | None = None
    profile: Text | None = None
    attributes: dict[str, Any] | None = None
    parent_id: int | None = None


class DeviceRecord(BaseModel):
    id: int
    site_id: int
    gateway_id: int | None
    key: str
    name: str
    equipment_model: str
    serial: str
    profile: str
    attributes: dict[str, Any]
    parent_id: int | None
    created_at: datetime


# --- series -----------------------------------------------------------------------------------


class SeriesCreate(_Body):
    device_id: int
    tag: Key
    unit: Annotated[str, Field(max_length=32)] = ""


class SeriesUpdate(_Body):
    tag: Key | None = None
    unit: Annotated[str | None, Field(max_length=32)] = None


class SeriesRecord(BaseModel):
    id: int
    device_id: int
    tag: str
    unit: str
