"""Decode and validate an ordinary telemetry message in one tight pass.

Profiling the bench (``bench/ingest.py`` under py-spy) showed the writer thread
spending ~80% of its time in ``decode_batch`` + ``validate_batch``: a frozen
``Point`` and an ``AcceptedPoint`` per reading, and a function call per field
check. Almost every message is well-formed and from known devices, so this module
checks exactly the same rules on the raw ``orjson`` objects and produces the
writer's row tuples directly.

It never *rejects* anything: the first thing that is not plainly fine (a bad
field, an unknown device, a timestamp out of range, anything) makes it return
``None``, and the caller takes the full path, which gives the precise reason and
the dead letters. So the fast path can only change speed, never outcomes; the
tests run every bad-input class through both and compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from fwcore.contract import CONTRACT_VERSION, MAX_PAYLOAD_BYTES, MAX_POINTS_PER_MESSAGE
from ingest.validate import MAX_SEQ, Limits, RegistryView

#: (device_id, device key, tag, ts_ms, value, quality): one accepted reading as the writer stores it.
Row = tuple[int, str, str, int, float, int]

_MS_PER_DAY = 86_400_000
_FINITE = 1.7976931348623157e308


@dataclass(slots=True)
class FastBatch:
    """A message whose every point is accepted."""

    gateway_id: int
    seq: int
    historical: bool
    rows: list[Row]


def fast_accept(
    payload: bytes, *, site: str, gateway: str, registry: RegistryView, now_ms: int, limits: Limits
) -> FastBatch | None:
    """The accepted rows of ``payload`` if the message is entirely valid and known; else None (use the full path)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        obj = orjson.loads(payload)  # also refuses invalid UTF-8, NaN and Infinity
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    v, seq, pts = obj.get("v"), obj.get("seq"), obj.get("points")
    if type(v) is not int or v != CONTRACT_VERSION or obj.get("gateway") != gateway or obj.get("site") != site:
        return None
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ or type(pts) is not list or len(pts) > MAX_POINTS_PER_MESSAGE:
        return None
    if type(obj["gateway"]) is not str or type(obj["site"]) is not str:
        return None
    ref = registry.gateway(gateway)
    if ref is None or ref.site != site:
        return None
    latest = now_ms + limits.max_future_seconds * 1000
    oldest = now_ms - limits.retention_days * _MS_PER_DAY
    gid = ref.id
    known: dict[str, int] = {}
    rows: list[Row] = []
    append = rows.append
    for rp in pts:
        if type(rp) is not dict:
            return None
        dev, tag, ts, value, q = rp.get("device"), rp.get("tag"), rp.get("ts"), rp.get("value"), rp.get("quality", 0)
        if type(dev) is not str or type(tag) is not str or type(ts) is not int or type(q) is not int:
            return None
        if type(value) is not float:
            if type(value) is not int:
                return None
            value = float(value) if -_FINITE <= value <= _FINITE else None
            if value is None:
                return None
        if not -_FINITE <= value <= _FINITE or not 0 <= q <= 32767 or not oldest <= ts <= latest:
            return None
        did = known.get(dev)
        if did is None:
            if not dev or "\x00" in dev:
                return None
            did = registry.device(gid, dev)
            if did is None:
                return None
            known[dev] = did
        if not tag or "\x00" in tag:
            return None
        append((did, dev, tag, ts, value, q))
    historical = obj.get("historical", False)
    return FastBatch(gid, seq, bool(historical), rows)
