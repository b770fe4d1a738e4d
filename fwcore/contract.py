"""The wire contract between gateways and ingest: MQTT topics and payloads.

This is the one module both sides share, so it imports nothing heavy (orjson
only) and holds no I/O. ``docs/contract.md`` is its prose twin; change both
together and bump :data:`CONTRACT_VERSION` for anything a deployed gateway
would misread.

Topics (one gateway per prefix, ``{site}`` and ``{gateway}`` are slugs)::

    fw/v1/{site}/{gateway}/telemetry   gateway -> ingest   QoS 1, batches of points
    fw/v1/{site}/{gateway}/status      gateway -> all      QoS 1, retained: birth/death (Last Will), by session
    fw/v1/{site}/{gateway}/health      gateway -> all      QoS 0, periodic health numbers
    fw/v1/{site}/{gateway}/ack         ingest  -> gateway  QoS 1, sequences committed
    fw/v1/{site}/{gateway}/config      server  -> gateway  QoS 1, retained: desired config

Telemetry payload (JSON object)::

    {"v": 1, "gateway": "gw-a", "site": "site-a", "seq": 42,
     "sent_at": 1767225600123, "historical": false,
     "points": [{"device": "pump-1", "tag": "bearing_temp",
                 "ts": 1767225600000, "value": 71.25, "quality": 0}]}

``ts`` and ``sent_at`` are Unix epoch milliseconds (UTC). ``seq`` increases by
one per batch for the life of the gateway (it survives restarts), so ingest can
spot gaps and the gateway can drop buffered batches only after ingest says the
sequence is committed. ``historical`` marks replayed backlog.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import orjson

CONTRACT_VERSION = 1
TOPIC_ROOT = f"fw/v{CONTRACT_VERSION}"
#: Largest telemetry payload ingest accepts, in bytes.
MAX_PAYLOAD_BYTES = 1_048_576
#: Most points one telemetry message may carry.
MAX_POINTS_PER_MESSAGE = 10_000

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# NaN/Infinity literals, or numbers too large for a double: not JSON, but worth their own reason.
_NON_FINITE = re.compile(r"(?:[:\[,]\s*)-?(?:NaN|Infinity)\b")
KINDS = ("telemetry", "status", "health", "ack", "config")


class Quality(IntEnum):
    """Per-point quality. 0 is good; anything else says why the value is not."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2  # unspecified
    BAD_TIMEOUT = 3  # device did not answer
    BAD_EXCEPTION = 4  # device answered with a protocol exception (e.g. illegal address)
    BAD_DECODE = 5  # bytes arrived but could not be decoded as configured
    BAD_NOT_CONNECTED = 6  # no connection to the device
    BAD_OUT_OF_RANGE = 7  # value clamped / outside the configured range


class ContractError(ValueError):
    """A payload or topic breaks the contract. ``reason`` is a short machine code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_slug(value: str, what: str) -> str:
    """Return ``value`` if it can stand in a topic level, else raise ``ValueError`` naming it."""
    if not isinstance(value, str) or not _SLUG.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return value


def topic(site: str, gateway: str, kind: str) -> str:
    """The topic of ``kind`` for one gateway, e.g. ``fw/v1/site-a/gw-1/telemetry``."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {KINDS}")
    return f"{TOPIC_ROOT}/{check_slug(site, 'site')}/{check_slug(gateway, 'gateway')}/{kind}"


def subscription(kind: str, site: str = "+", gateway: str = "+") -> str:
    """A subscription filter for ``kind`` across sites/gateways (``+`` wildcards by default)."""
    return f"{TOPIC_ROOT}/{site}/{gateway}/{kind}"


def shared_subscription(group: str, kind: str = "telemetry") -> str:
    """An MQTT 5 shared subscription so several ingest workers split the load."""
    return f"$share/{group}/{subscription(kind)}"


def parse_topic(topic_name: str) -> tuple[str, str, str]:
    """Split a topic into ``(site, gateway, kind)`` or raise :class:`ContractError`."""
    parts = topic_name.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or parts[4] not in KINDS:
        raise ContractError("bad_topic", f"{topic_name!r} is not {TOPIC_ROOT}/<site>/<gateway>/<kind>")
    return parts[2], parts[3], parts[4]


@dataclass(frozen=True, slots=True)
class Point:
    """One reading: a value of one tag of one device at one source time."""

    device: str
    tag: str
    ts: int  # epoch milliseconds
    value: float
    quality: int = Quality.GOOD


@dataclass(slots=True)
class Batch:
    """One telemetry message."""

    gateway: str
    site: str
    seq: int
    points: list[Point]
    sent_at: int = 0
    historical: bool = False
    v: int = CONTRACT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


def encode_batch(batch: Batch) -> bytes:
    """Serialise a batch to the wire form (compact JSON)."""
    return orjson.dumps(
        {
            "v": batch.v,
            "gateway": batch.gateway,
            "site": batch.site,
            "seq": batch.seq,
            "sent_at": batch.sent_at,
            "historical": batch.historical,
            "points": [
                {"device": p.device, "tag": p.tag, "ts": p.ts, "value": p.value, "quality": int(p.quality)}
                for p in batch.points
            ],
        }
    )


def _need(obj: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ContractError("missing_field", f"{where}: field {key!r} is missing")
    val = obj[key]
    # bool is an int in Python; refuse it where a number is wanted.
    if isinstance(val, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ContractError("wrong_type", f"{where}: field {key!r} must be {types}, got bool")
    if not isinstance(val, types):
        raise ContractError("wrong_type", f"{where}: field {key!r} must be {types}, got {type(val).__name__}")
    return val


def decode_batch(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Batch:
    """Parse and validate a telemetry payload, or raise :class:`ContractError` with a reason.

    Checks only what the contract itself says (shape, types, finiteness, sizes).
    Whether the gateway or device is known, and whether timestamps are plausible,
    depends on server state and is ingest's business.
    """
    if len(payload) > max_bytes:
        raise ContractError("oversized", f"payload is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError("invalid_utf8", str(exc)) from None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "infinity" in str(exc) or _NON_FINITE.search(text):
            raise ContractError("non_finite", f"a value is NaN or infinite ({exc})") from None
        raise ContractError("invalid_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise ContractError("wrong_type", "payload must be a JSON object")
    version = _need(obj, "v", int, "batch")
    if version != CONTRACT_VERSION:
        raise ContractError("unsupported_version", f"contract version {version}; this ingest speaks {CONTRACT_VERSION}")
    gateway = _need(obj, "gateway", str, "batch")
    site = _need(obj, "site", str, "batch")
    seq = _need(obj, "seq", int, "batch")
    if seq < 0:
        raise ContractError("wrong_type", "batch: seq must be >= 0")
    raw_points = _need(obj, "points", list, "batch")
    if len(raw_points) > MAX_POINTS_PER_MESSAGE:
        raise ContractError("oversized", f"{len(raw_points)} points; the limit is {MAX_POINTS_PER_MESSAGE}")
    points: list[Point] = []
    for i, rp in enumerate(raw_points):
        where = f"points[{i}]"
        if not isinstance(rp, dict):
            raise ContractError("wrong_type", f"{where} must be an object")
        value = _need(rp, "value", (int, float), where)
        if not math.isfinite(value):
            raise ContractError("non_finite", f"{where}: value {value} is not finite")
        quality = rp.get("quality", 0)
        if not isinstance(quality, int) or isinstance(quality, bool) or not 0 <= quality <= 32767:
            raise ContractError("wrong_type", f"{where}: quality must be an integer 0..32767")
        points.append(
            Point(
                device=_need(rp, "device", str, where),
                tag=_need(rp, "tag", str, where),
                ts=_need(rp, "ts", int, where),
                value=float(value),
                quality=quality,
            )
        )
    sent_at = obj.get("sent_at", 0)
    historical = obj.get("historical", False)
    return Batch(
        gateway=gateway,
        site=site,
        seq=seq,
        points=points,
        sent_at=sent_at if isinstance(sent_at, int) else 0,
        historical=bool(historical),
        v=version,
    )


def encode_status(
    state: str, *, gateway: str, ts: int, reason: str = "", session: int | None = None, **extra: Any
) -> bytes:
    """Birth/death message for the retained status topic. ``state`` is ``online`` or ``offline``.

    ``session`` (optional, added in place of ordering by ``ts``): the number of the gateway's MQTT
    connection the message belongs to; it grows with every connection (see ``docs/contract.md``,
    "Status payload"). Ingest orders statuses that carry it by session; without it, by ``ts``.
    """
    if state not in ("online", "offline"):
        raise ValueError(f"status state must be 'online' or 'offline', not {state!r}")
    head: dict[str, Any] = {"v": CONTRACT_VERSION, "gateway": gateway, "state": state, "ts": ts, "reason": reason}
    if session is not None:
        head["session"] = session
    return orjson.dumps({**head, **extra})


def encode_ack(seqs: list[int], *, ts: int) -> bytes:
    """Ingest's application-level ack: the batches with these sequences are committed.

    Listing the sequences (not only the highest) keeps the gateway from dropping
    an older batch that was lost in transit and must be sent again.
    """
    return orjson.dumps({"v": CONTRACT_VERSION, "seq": max(seqs), "seqs": sorted(seqs), "ts": ts})


def decode_ack(payload: bytes) -> list[int]:
    """The acknowledged sequences from an ack payload."""
    obj = orjson.loads(payload)
    seqs = obj.get("seqs") if isinstance(obj, dict) else None
    if not isinstance(seqs, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seqs):
        raise ContractError("wrong_type", "ack: seqs must be a list of integers")
    return seqs
