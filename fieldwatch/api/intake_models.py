"""Bodies of what ingest could not store (yet): discovered devices, their acceptance, dead letters, replays.

The records come from :mod:`ingest.discovery` and :mod:`ingest.deadletters`; these models decide
what the API shows of them (a dead letter's payload only on ``GET /dead-letters/{id}``).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fwcore.inputs import Input

DiscoveredState = Literal["pending", "accepted", "rejected"]


class DiscoveredPublic(BaseModel):
    id: int
    gateway_id: int
    gateway: str = Field(description="slug of the gateway that announced the device")
    site: str = Field(description="slug of the gateway's site: where an accepted device is registered")
    key: str = Field(description="the device name the gateway publishes")
    profile: str = Field(description="equipment profile the gateway announced (name@version), '' if none")
    tags: dict[str, str] = Field(description="tag -> unit, as announced in the gateway's status or seen in data")
    state: DiscoveredState
    held_points: int = Field(description="points held until the device is accepted (or rejected)")
    oldest_held: datetime | None = Field(description="when the oldest held point arrived")
    first_seen: datetime
    last_seen: datetime
    device_id: int | None = Field(description="the registered device, once accepted")
    decided_at: datetime | None
    decided_by: str | None = Field(description="who accepted or rejected it (token name, 'auto', 'registered')")


class AcceptBody(Input):
    """How to register the accepted device; everything is optional."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=500)] = ""
    equipment_model: Annotated[str | None, Field(min_length=1, max_length=200)] = Field(
        default=None, description="default: the name of the profile the gateway announced"
    )
    serial: Annotated[str, Field(max_length=500)] = ""
    attributes: dict[str, Any] = Field(default_factory=dict)


class AcceptedPublic(BaseModel):
    discovered_id: int
    device_id: int
    stored: int = Field(description="held points newly stored (0 when it was accepted already)")
    duplicates: int = Field(description="held points that were stored already")
    created: bool = Field(description="false: the device existed (registered by hand, or accepted before)")


class Forgotten(BaseModel):
    dead_lettered: int = Field(description="held points moved to the dead letters (reason unknown_device)")


class DeadLetterPublic(BaseModel):
    id: int
    received_at: datetime
    topic: str
    site: str | None = Field(description="from the topic; null when the topic names none (history imports)")
    gateway: str | None
    reason: str
    detail: str
    devices: list[str] = Field(description="device keys of the points kept")
    points: int = Field(description="points in the payload (0 when it could not be read)")
    replays: int = Field(description="times a replay left it here (with a new reason if the cause changed)")
    replayed_at: datetime | None
    payload_bytes: int


class DeadLetterDetail(DeadLetterPublic):
    """One dead letter with its payload: as text when it is UTF-8, else as base64."""

    payload_text: str | None = Field(description="the payload, when it is UTF-8 (telemetry JSON, CSV lines)")
    payload_base64: str | None = Field(description="the payload in base64, when it is not UTF-8")

    @classmethod
    def of(cls, record: Any) -> DeadLetterDetail:
        """From an :class:`ingest.deadletters.DeadLetterRecord`."""
        text = record.payload_text
        fields = {name: getattr(record, name) for name in DeadLetterPublic.model_fields}
        encoded = None if text is not None else base64.b64encode(record.payload).decode("ascii")
        return cls(**fields, payload_text=text, payload_base64=encoded)


class ReplayPublic(BaseModel):
    replayed: int = Field(description="dead letters put through validation and storage again")
    resolved: int = Field(description="of those, every point stored or held: deleted")
    stored: int = Field(description="points newly stored")
    duplicates: int = Field(description="points that were stored already")
    held: int = Field(description="points held for devices still not registered")
    not_replayable: int = Field(description="rows left as they are: not a gateway's telemetry")
    still_failing: dict[str, int] = Field(description="dead letters left or written by the replay, per reason")


class Purged(BaseModel):
    purged: int
