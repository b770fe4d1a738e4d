"""Server-side validation of decoded telemetry: pure functions, no I/O.

:func:`fwcore.contract.decode_batch` checks what the wire contract says
(shape, types, sizes). Whether the gateway and devices exist and whether the
timestamps are plausible depends on server state; that is decided here, given a
registry snapshot and the clock as arguments, so the rules are table-testable.

A message is either rejected whole (``topic_mismatch``, ``invalid_seq``,
``unknown_gateway``) or split point by point into accepted points and
rejections grouped by reason (``invalid_name``, ``unknown_device``,
``future_timestamp``, ``too_old``). Nothing is dropped: the caller dead-letters
every rejection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from fwcore.contract import Batch, ContractError, Point

#: The largest sequence PostgreSQL's ``bigint`` (``gateways.last_seq``) can hold.
MAX_SEQ = 2**63 - 1
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class GatewayRef:
    """A registered gateway: its id and the slug of the site it is registered at."""

    id: int
    site: str


class RegistryView(Protocol):
    """Read access to the asset registry, as much of it as validation needs."""

    def gateway(self, slug: str) -> GatewayRef | None: ...

    def device(self, gateway_id: int, key: str) -> int | None: ...


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """An in-memory :class:`RegistryView` (tests, and the cache's backing store)."""

    gateways: Mapping[str, GatewayRef] = field(default_factory=dict)
    devices: Mapping[tuple[int, str], int] = field(default_factory=dict)

    def gateway(self, slug: str) -> GatewayRef | None:
        return self.gateways.get(slug)

    def device(self, gateway_id: int, key: str) -> int | None:
        return self.devices.get((gateway_id, key))


@dataclass(frozen=True, slots=True)
class Limits:
    """How far from "now" a source timestamp may be (from ``Settings``)."""

    max_future_seconds: int = 300
    retention_days: int = 90

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(max_future_seconds=settings.max_future_seconds, retention_days=settings.retention_days)


@dataclass(frozen=True, slots=True)
class AcceptedPoint:
    """A point that may be stored, with the device id it resolved to."""

    device_id: int
    point: Point


@dataclass(frozen=True, slots=True)
class Rejection:
    """Points refused for one reason (``points`` is empty when the whole message is refused)."""

    reason: str
    detail: str
    points: tuple[Point, ...] = ()


@dataclass(slots=True)
class Verdict:
    """The outcome of validating one message.

    ``missing_gateway`` / ``missing_devices`` name registry keys that were not
    found, so the caller can refresh its cache and validate again.
    """

    gateway_id: int | None
    accepted: list[AcceptedPoint] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    missing_gateway: str | None = None
    missing_devices: set[tuple[int, str]] = field(default_factory=set)

    @property
    def rejected_whole(self) -> bool:
        """True when no point of the message may be stored."""
        return self.gateway_id is None


def _names(values: Iterable[str], limit: int = 5) -> str:
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    shown = [f"{k!r}" + (f" (x{n})" if n > 1 else "") for k, n in list(counts.items())[:limit]]
    more = len(counts) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _bad_name(value: str) -> bool:
    # PostgreSQL text cannot hold NUL; an empty device or tag name identifies nothing.
    return not value or "\x00" in value


def validate_batch(
    batch: Batch,
    *,
    site: str,
    gateway: str,
    registry: RegistryView,
    now_ms: int,
    limits: Limits,
) -> Verdict:
    """Split ``batch`` (received on the topic of ``site``/``gateway``) into accepted and rejected points."""
    if batch.gateway != gateway or batch.site != site:
        return Verdict(
            None,
            rejections=[
                Rejection(
                    "topic_mismatch",
                    f"payload says site {batch.site!r} gateway {batch.gateway!r}; "
                    f"topic says site {site!r} gateway {gateway!r}",
                )
            ],
        )
    if batch.seq > MAX_SEQ:
        return Verdict(None, rejections=[Rejection("invalid_seq", f"seq {batch.seq} exceeds {MAX_SEQ}")])
    ref = registry.gateway(gateway)
    if ref is None:
        return Verdict(
            None,
            rejections=[Rejection("unknown_gateway", f"gateway {gateway!r} is not registered")],
            missing_gateway=gateway,
        )
    if ref.site != site:
        return Verdict(
            None,
            rejections=[
                Rejection("unknown_gateway", f"gateway {gateway!r} is registered at site {ref.site!r}, not {site!r}")
            ],
        )

    latest = now_ms + limits.max_future_seconds * 1000
    oldest = now_ms - limits.retention_days * _MS_PER_DAY
    verdict = Verdict(ref.id)
    refused: dict[str, list[Point]] = defaultdict(list)
    for p in batch.points:
        if _bad_name(p.device) or _bad_name(p.tag):
            refused["invalid_name"].append(p)
            continue
        device_id = registry.device(ref.id, p.device)
        if device_id is None:
            verdict.missing_devices.add((ref.id, p.device))
            refused["unknown_device"].append(p)
        elif p.ts > latest:
            refused["future_timestamp"].append(p)
        elif p.ts < oldest:
            refused["too_old"].append(p)
        else:
            verdict.accepted.append(AcceptedPoint(device_id, p))

    for reason, pts in refused.items():
        if reason == "unknown_device":
            detail = f"{len(pts)} point(s) from devices not registered on gateway {gateway!r}: "
            detail += _names(p.device for p in pts)
        elif reason == "future_timestamp":
            detail = f"{len(pts)} point(s) more than {limits.max_future_seconds} s ahead of {now_ms}: "
            detail += _names(str(p.ts) for p in pts)
        elif reason == "too_old":
            detail = f"{len(pts)} point(s) older than the {limits.retention_days}-day retention: "
            detail += _names(str(p.ts) for p in pts)
        else:
            detail = f"{len(pts)} point(s) with an empty device/tag or one containing NUL"
        verdict.rejections.append(Rejection(reason, detail, tuple(pts)))
    return verdict


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A birth/death message from a gateway's retained status topic.

    ``session``: the gateway's MQTT connection the message belongs to (``None`` from gateways that
    predate it); :func:`ingest.liveness.status_applies` orders statuses by it.
    """

    state: str  # online | offline
    ts_ms: int
    reason: str = ""
    session: int | None = None


def parse_status(payload: bytes, *, gateway: str) -> StatusUpdate:
    """Parse a status payload received on ``gateway``'s topic, or raise :class:`ContractError`."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = "invalid_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
        raise ContractError(reason, str(exc)) from None
    if not isinstance(obj, dict):
        raise ContractError("wrong_type", "status payload must be a JSON object")
    for key, typ in (("gateway", str), ("state", str), ("ts", int)):
        if key not in obj:
            raise ContractError("missing_field", f"status: field {key!r} is missing")
        if not isinstance(obj[key], typ) or isinstance(obj[key], bool):
            raise ContractError("wrong_type", f"status: field {key!r} must be {typ.__name__}")
    if obj["state"] not in ("online", "offline"):
        raise ContractError("wrong_type", f"status: state {obj['state']!r} is not 'online' or 'offline'")
    if obj["gateway"] != gateway:
        raise ContractError("topic_mismatch", f"payload says gateway {obj['gateway']!r}; topic says {gateway!r}")
    # Outside what timestamptz holds is a broken clock, not a status.
    if not 0 <= obj["ts"] < 2**53:
        raise ContractError("wrong_type", f"status: ts {obj['ts']} is out of range")
    reason = obj.get("reason", "")
    session = obj.get("session")
    if session is not None and (not isinstance(session, int) or isinstance(session, bool) or not 0 <= session < 2**63):
        raise ContractError("wrong_type", f"status: session must be an integer 0..2^63-1, not {session!r}")
    return StatusUpdate(obj["state"], obj["ts"], reason if isinstance(reason, str) else "", session)


def day_of(ts_ms: int) -> int:
    """The UTC day number (days since 1970-01-01) of an epoch-millisecond timestamp."""
    return ts_ms // _MS_PER_DAY
