"""Sparkplug B edge-node session: which message to send when, as a pure state machine (no I/O).

The gateway is one Sparkplug *edge node* (``group_id``/``edge_node_id``) and each
configured device is a Sparkplug *device*. Topics are
``spBv1.0/{group}/{NBIRTH|NDEATH|NCMD}/{node}`` and
``spBv1.0/{group}/{DBIRTH|DDATA|DDEATH}/{node}/{device}``.

Lifecycle of one MQTT connection::

    connect (Will = NDEATH with bdSeq b)
      -> NBIRTH  seq 0, metrics bdSeq=b and "Node Control/Rebirth"=false
      -> DBIRTH  per device that answers: every tag with name, alias, datatype, current value
      -> DDATA   per device per publish interval: changed tags by alias, with timestamps
      -> DDEATH  when a device stops answering (DBIRTH again when it answers)
      -> NCMD "Node Control/Rebirth"=true: NBIRTH (same bdSeq, seq 0) + every DBIRTH again
    lost connection: the broker publishes the Will (NDEATH, bdSeq b); the next connect uses b+1

``seq`` counts every NBIRTH/DBIRTH/DDATA/DDEATH of the connection 0..255 and wraps;
NDEATH carries none. Aliases are fixed for the life of the process (1.. in config
order of devices and tags), unique across the node.

Quality: a good point is sent as its value. A bad point is sent with ``is_null``
and the property ``Quality`` = 0 (Int32, the OPC DA code Ignition and other hosts
read: 192 good, 64 uncertain, 0 bad) plus ``fieldwatch_quality`` (String, e.g.
``BAD_TIMEOUT``); the first good point after a non-good one carries ``Quality`` = 192
so a host that remembers properties sees the recovery. Uncertain points keep their
value with ``Quality`` = 64.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fwcore.contract import Point, Quality
from gateway.sparkplug_proto import (
    DataType,
    Metric,
    Payload,
    encode_metric,
    encode_payload,
    encode_payload_raw,
    fast_metric,
    uint_field,
)

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"

QUALITY_GOOD = 192
QUALITY_UNCERTAIN = 64
QUALITY_BAD = 0

#: Register data types -> Sparkplug datatypes when the value is not scaled. uint32 goes as Int64:
#: readers disagree on whether UInt32 sits in int_value or long_value; Int64 is unambiguous and fits.
_UNSCALED: dict[str, DataType] = {
    "bool": DataType.Boolean,
    "bit": DataType.Boolean,
    "int16": DataType.Int16,
    "uint16": DataType.UInt16,
    "int32": DataType.Int32,
    "uint32": DataType.Int64,
    "int64": DataType.Int64,
    "uint64": DataType.UInt64,
    "float32": DataType.Float,
    "float64": DataType.Double,
}


def check_id(value: str, what: str) -> str:
    """A Sparkplug topic element: non-empty, without the MQTT special characters ``/ + #``."""
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"{what} {value!r} must be non-empty and contain none of '/', '+', '#'")
    return value


class SparkplugConfig(BaseModel):
    """``sparkplug:`` in the gateway YAML: publish Sparkplug B instead of fieldwatch telemetry."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false keeps the section but publishes fieldwatch telemetry")
    group_id: str | None = Field(None, description="Sparkplug group; defaults to the site")
    edge_node_id: str | None = Field(None, description="Sparkplug edge node; defaults to the gateway name")

    @field_validator("group_id", "edge_node_id")
    @classmethod
    def _ids(cls, v: str | None) -> str | None:
        return None if v is None else check_id(v, "sparkplug id")


def metric_datatype(tag: Any) -> DataType:
    """The Sparkplug datatype of a configured tag (Modbus or OPC-UA).

    An integer register whose value is scaled or offset is no longer an integer, so it
    goes as Double; OPC-UA tags (no register type) are Double, as the gateway publishes them.
    """
    data_type = getattr(tag, "data_type", None)
    if data_type is None:
        return DataType.Double
    dt = _UNSCALED.get(data_type, DataType.Double)
    if dt != DataType.Boolean and (tag.scale != 1.0 or tag.offset != 0.0):
        return DataType.Double
    return dt


@dataclass(frozen=True, slots=True)
class MetricDef:
    """What the DBIRTH says about one tag."""

    name: str
    alias: int
    datatype: DataType
    unit: str = ""

    @property
    def alias_field(self) -> bytes:
        return uint_field(2, self.alias)

    @property
    def datatype_field(self) -> bytes:
        return uint_field(4, self.datatype)


def metric_defs(devices: Iterable[Any]) -> dict[str, dict[str, MetricDef]]:
    """``{device: {tag: MetricDef}}`` with aliases 1.. in config order (stable across restarts of one config)."""
    out: dict[str, dict[str, MetricDef]] = {}
    alias = 0
    for device in devices:
        defs = out[device.name] = {}
        for tag in device.tags:
            alias += 1
            defs[tag.name] = MetricDef(tag.name, alias, metric_datatype(tag), getattr(tag, "unit", "") or "")
    return out


class Message(NamedTuple):
    """One MQTT publish: Sparkplug data messages are QoS 0 and never retained."""

    topic: str
    payload: bytes
    qos: int = 0


def _typed(datatype: DataType, value: float) -> Any:
    if datatype == DataType.Boolean:
        return bool(value)
    if datatype in (DataType.Float, DataType.Double):
        return float(value)
    return round(value)


class SparkplugSession:
    """Builds the Sparkplug messages of one edge node; the caller publishes them in order.

    Call :meth:`birth` after each connect, :meth:`lost` when the connection drops,
    :meth:`set_online` when a device starts or stops answering and :meth:`data` with
    each publish interval's points.
    """

    def __init__(self, group: str, node: str, devices: Mapping[str, Mapping[str, MetricDef]]) -> None:
        self.group = check_id(group, "sparkplug group_id")
        self.node = check_id(node, "sparkplug edge_node_id")
        for name in devices:
            check_id(name, "device name")
        self.defs = devices
        self.born = False  # NBIRTH sent on the current connection
        self.bdseq = 0
        self._seq = 0
        self._online: set[str] = set()
        self._born_devices: set[str] = set()
        self._last: dict[tuple[str, str], tuple[int, float, int]] = {}  # (device, tag) -> (ts, value, quality)
        self._sent_quality: dict[tuple[str, str], int] = {}
        self._fast: dict[str, dict[str, tuple[bytes, bytes, DataType]]] = {}  # device -> tag -> precomputed fields
        #: Points not sent because their device had no DBIRTH (it was offline: the DDEATH stands for them).
        self.points_superseded = 0

    # --- topics and counters ---------------------------------------------------------
    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group}/{kind}/{self.node}"
        return f"{base}/{device}" if device else base

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    # --- node lifecycle --------------------------------------------------------------
    def death_payload(self, bdseq: int, now_ms: int) -> bytes:
        """NDEATH: the Will of a connection made with ``bdseq`` (no seq)."""
        return encode_payload(Payload(now_ms, [Metric(BDSEQ, datatype=DataType.Int64, value=bdseq)]))

    def birth(self, bdseq: int, now_ms: int) -> list[Message]:
        """NBIRTH (seq 0) and a DBIRTH for every device that answers; also the reply to a rebirth request."""
        self.bdseq = bdseq
        self.born = True
        self._seq = 0
        self._born_devices.clear()
        node_metrics = [
            Metric(BDSEQ, datatype=DataType.Int64, value=bdseq, timestamp=now_ms),
            Metric(REBIRTH, datatype=DataType.Boolean, value=False, timestamp=now_ms),
        ]
        msgs = [Message(self.topic("NBIRTH"), encode_payload(Payload(now_ms, node_metrics, self._next_seq())))]
        for device in self.defs:
            # A device that answered before this connection but whose values have not passed through
            # data() yet (polled while disconnected: those points wait on disk) would be born with every
            # metric null; its DBIRTH goes out with its next data instead, carrying real values.
            if device in self._online and any((device, tag) in self._last for tag in self.defs[device]):
                msgs.append(self._device_birth(device, now_ms))
        return msgs

    def lost(self) -> None:
        """The connection dropped: nothing is born until the next :meth:`birth`."""
        self.born = False
        self._born_devices.clear()

    @property
    def all_devices_born(self) -> bool:
        """Has every configured device had its DBIRTH on this connection?"""
        return self.born and len(self._born_devices) == len(self.defs)

    def is_rebirth_request(self, payload: Payload) -> bool:
        """Does an NCMD ask for a rebirth (``Node Control/Rebirth`` = true)?"""
        return any(m.name == REBIRTH and m.value is True for m in payload.metrics)

    # --- devices ---------------------------------------------------------------------
    def set_online(self, device: str, online: bool, now_ms: int) -> list[Message]:
        """A device went offline: DDEATH if it was born. Online: its DBIRTH goes out with its next data."""
        if online:
            self._online.add(device)
            return []
        self._online.discard(device)
        if not self.born or device not in self._born_devices:
            return []
        self._born_devices.discard(device)
        payload = Payload(now_ms, [], self._next_seq())
        return [Message(self.topic("DDEATH", device), encode_payload(payload))]

    def _quality_props(self, key: tuple[str, str], quality: int, in_birth: bool) -> dict[str, tuple[int, Any]]:
        previous = self._sent_quality.get(key, Quality.GOOD)
        self._sent_quality[key] = quality
        if quality == Quality.GOOD:
            if previous != Quality.GOOD and not in_birth:
                return {"Quality": (DataType.Int32, QUALITY_GOOD)}
            return {}
        code = QUALITY_UNCERTAIN if quality == Quality.UNCERTAIN else QUALITY_BAD
        try:
            reason = Quality(quality).name
        except ValueError:
            reason = f"quality {quality}"
        return {"Quality": (DataType.Int32, code), "fieldwatch_quality": (DataType.String, reason)}

    def _metric(self, device: str, d: MetricDef, ts: int, value: float, quality: int, *, birth: bool) -> Metric:
        bad = quality not in (Quality.GOOD, Quality.UNCERTAIN)
        props = self._quality_props((device, d.name), quality, birth)
        if birth and d.unit:
            props["engUnit"] = (DataType.String, d.unit)
        return Metric(
            name=d.name if birth else None,
            alias=d.alias,
            timestamp=ts,
            datatype=d.datatype,
            value=None if bad else _typed(d.datatype, value),
            is_null=bad,
            properties=props,
        )

    def _ddata(self, device: str, pts: list[Point], now_ms: int, historical: bool) -> bytes:
        """DDATA bytes; a good point that was good before (the usual case) takes the precomputed fast path."""
        defs = self.defs[device]
        fast = self._fast.get(device)
        if fast is None:
            fast = self._fast[device] = {n: (d.alias_field, d.datatype_field, d.datatype) for n, d in defs.items()}
        sent_quality = self._sent_quality
        blobs = []
        for p in pts:
            if p.quality == Quality.GOOD and not historical and sent_quality.get((device, p.tag), 0) == Quality.GOOD:
                alias_field, datatype_field, datatype = fast[p.tag]
                blobs.append(fast_metric(alias_field, p.ts, datatype_field, datatype, _typed(datatype, p.value)))
            else:
                m = self._metric(device, defs[p.tag], p.ts, p.value, p.quality, birth=False)
                m.is_historical = historical
                blobs.append(encode_metric(m))
        return encode_payload_raw(now_ms, blobs, self._next_seq())

    def _device_birth(self, device: str, now_ms: int) -> Message:
        metrics = []
        for d in self.defs[device].values():
            last = self._last.get((device, d.name))
            if last is None:  # not read yet (e.g. OPC-UA before its first notification)
                metrics.append(Metric(d.name, d.alias, now_ms, d.datatype, is_null=True))
                if d.unit:
                    metrics[-1].properties["engUnit"] = (DataType.String, d.unit)
            else:
                metrics.append(self._metric(device, d, *last, birth=True))
        self._born_devices.add(device)
        return Message(self.topic("DBIRTH", device), encode_payload(Payload(now_ms, metrics, self._next_seq())))

    # --- data ------------------------------------------------------------------------
    def data(self, points: Iterable[Point], now_ms: int, *, historical: bool = False) -> tuple[list[Message], int]:
        """DBIRTH for devices that just came online (carrying these values), DDATA for the others.

        Returns the messages and how many points they carry. Points of a device without a
        DBIRTH (offline: its DDEATH stands for them) are counted in :attr:`points_superseded`.
        ``historical`` points (store-and-forward replay) are flagged ``is_historical`` and do
        not change the current values a DBIRTH reports. Call only while :attr:`born`.
        """
        by_device: dict[str, list[Point]] = {}
        for p in points:
            if p.device in self.defs and p.tag in self.defs[p.device]:
                by_device.setdefault(p.device, []).append(p)
            else:
                raise ValueError(f"point {p.device}/{p.tag} is not a configured device tag")
        msgs: list[Message] = []
        carried = 0
        for device, pts in by_device.items():
            if not historical:
                for p in pts:
                    self._last[(device, p.tag)] = (p.ts, p.value, p.quality)
            if device not in self._born_devices:
                if device not in self._online:
                    self.points_superseded += len(pts)
                    continue
                msgs.append(self._device_birth(device, now_ms))
                if not historical:  # the DBIRTH carries these (current) values
                    carried += len(pts)
                    continue
            msgs.append(Message(self.topic("DDATA", device), self._ddata(device, pts, now_ms, historical)))
            carried += len(pts)
        return msgs, carried
