"""Generic injectable faults for any simulated device: sensor faults on tags, comms faults on the device.

Sensor faults change what one tag (or every tag, ``"*"``) reads; they are pure
and seeded, applied to a model's reading before it is encoded::

    drift     value + rate * (t - t_start)             a sensor losing calibration
    spike     value + magnitude (random sign) with probability p per reading
    stuck     the value at injection time, forever      a frozen transmitter
    step      value + magnitude                         a shifted zero (knocked sensor, wrong range)
    variance  value + gauss(0, sigma) per reading       a noisy transmitter, loose wiring
    decouple  2 * v0 - value, v0 the value at injection the tag moves against the process: each change
                                                         is mirrored, so it stays in its usual range
                                                         but no longer agrees with the other tags
                                                         (broken correlation)

Comms faults change how the device *answers*; the Modbus and OPC-UA servers
consult them on every request::

    comms_loss     the device stops answering: Modbus requests time out
                   (``await server.stop()`` / ``start()`` gives connection refused,
                   see :meth:`simulators.modbus_server.EquipmentModbusServer.unplug`)
    slow           every request is answered ``latency`` seconds late
    illegal_block  reads touching ``count`` registers from ``start`` of one table
                   answer exception 2, ILLEGAL DATA ADDRESS

One :class:`FaultSet` per device (unit id / OPC-UA object). Faults are set from
Python (tests), from ``fieldwatch simulate --fault`` (:func:`parse_fault`) and,
on the OPC-UA simulator, with the ``SetFault``/``ClearFaults`` methods.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

SENSOR_FAULTS = ("drift", "spike", "stuck", "step", "variance", "decouple")
COMMS_FAULTS = ("comms_loss", "slow", "illegal_block")
ALL_FAULTS = SENSOR_FAULTS + COMMS_FAULTS
TABLES = ("holding", "input", "coil", "discrete")


@dataclass(slots=True)
class SensorFault:
    """One sensor fault on one tag (``"*"``: every tag). ``start``/``frozen`` are filled on first use."""

    kind: str
    tag: str = "*"
    rate: float = 0.0  # drift: units per second
    probability: float = 0.0  # spike: chance per reading
    magnitude: float = 0.0  # spike: size of the outlier; step: the offset
    sigma: float = 0.0  # variance: standard deviation of the added noise
    start: float | None = None
    frozen: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SENSOR_FAULTS:
            raise ValueError(f"unknown sensor fault {self.kind!r}; known: {', '.join(SENSOR_FAULTS)}")
        for name in ("rate", "probability", "magnitude", "sigma"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{self.kind} fault: {name} must be a finite number")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"spike fault: probability must be within 0..1, not {self.probability}")
        if self.sigma < 0:
            raise ValueError(f"variance fault: sigma must be >= 0, not {self.sigma}")

    def applies_to(self, tag: str) -> bool:
        return self.tag in ("*", tag)


@dataclass(frozen=True, slots=True)
class IllegalBlock:
    """``count`` addresses of ``table`` from ``start`` that answer ILLEGAL DATA ADDRESS."""

    table: str
    start: int
    count: int

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"illegal_block: table must be one of {', '.join(TABLES)}, not {self.table!r}")
        if self.start < 0 or self.count < 1 or self.start + self.count > 65536:
            raise ValueError(f"illegal_block: {self.count} addresses from {self.start} is not a valid range")

    def overlaps(self, table: str, address: int, count: int) -> bool:
        return table == self.table and address < self.start + self.count and self.start < address + count


class FaultSet:
    """The faults active on one device. Sensor faults are applied by :meth:`apply` (pure, seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed ^ 0x5EED)
        self.sensor: list[SensorFault] = []
        self.comms_loss = False
        self.latency = 0.0
        self.illegal: list[IllegalBlock] = []

    # --- setting faults ---------------------------------------------------------------
    def drift(self, tag: str, rate: float) -> None:
        """``tag`` drifts by ``rate`` units per second from the next reading on."""
        self._replace(SensorFault("drift", tag, rate=rate))

    def spike(self, tag: str, probability: float, magnitude: float) -> None:
        """``tag`` reads ``± magnitude`` off with ``probability`` per reading."""
        self._replace(SensorFault("spike", tag, probability=probability, magnitude=magnitude))

    def stuck(self, tag: str) -> None:
        """``tag`` keeps its next value forever."""
        self._replace(SensorFault("stuck", tag))

    def step(self, tag: str, magnitude: float) -> None:
        """``tag`` reads ``magnitude`` off from the next reading on."""
        self._replace(SensorFault("step", tag, magnitude=magnitude))

    def variance(self, tag: str, sigma: float) -> None:
        """``tag`` gains seeded Gaussian noise of standard deviation ``sigma``."""
        self._replace(SensorFault("variance", tag, sigma=sigma))

    def decouple(self, tag: str) -> None:
        """``tag`` mirrors its true changes around its next value (broken correlation with the other tags)."""
        self._replace(SensorFault("decouple", tag))

    def slow(self, latency: float) -> None:
        """Answer every request ``latency`` seconds late (0 clears it)."""
        if latency < 0 or not math.isfinite(latency):
            raise ValueError(f"slow fault: latency must be a finite number >= 0, not {latency!r}")
        self.latency = latency

    def illegal_block(self, table: str, start: int, count: int) -> None:
        """Make ``count`` addresses of ``table`` from ``start`` answer exception 2."""
        self.illegal.append(IllegalBlock(table, start, count))

    def _replace(self, fault: SensorFault) -> None:
        self.sensor = [f for f in self.sensor if (f.kind, f.tag) != (fault.kind, fault.tag)] + [fault]

    def clear(self, kind: str | None = None, tag: str | None = None) -> None:
        """Clear faults: all, one kind, or one kind/every kind on one tag."""
        if kind is not None and kind not in ALL_FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(ALL_FAULTS)}")
        self.sensor = [
            f for f in self.sensor if not ((kind is None or f.kind == kind) and (tag is None or f.tag == tag))
        ]
        if tag is None:
            if kind in (None, "comms_loss"):
                self.comms_loss = False
            if kind in (None, "slow"):
                self.latency = 0.0
            if kind in (None, "illegal_block"):
                self.illegal.clear()

    @property
    def active(self) -> bool:
        return bool(self.sensor or self.comms_loss or self.latency or self.illegal)

    # --- using them -------------------------------------------------------------------
    def apply(self, t: float, reading: dict[str, float]) -> dict[str, float]:
        """``reading`` (tag -> value at model time ``t``) as the faulty sensors report it."""
        if not self.sensor:
            return reading
        out = dict(reading)
        for fault in self.sensor:
            if fault.start is None:
                fault.start = t
            for tag in out:
                if not fault.applies_to(tag):
                    continue
                if fault.kind == "drift":
                    out[tag] += fault.rate * (t - fault.start)
                elif fault.kind == "spike":
                    if self._rng.random() < fault.probability:
                        out[tag] += fault.magnitude if self._rng.random() < 0.5 else -fault.magnitude
                elif fault.kind == "step":
                    out[tag] += fault.magnitude
                elif fault.kind == "variance":
                    out[tag] += self._rng.gauss(0.0, fault.sigma)
                elif fault.kind == "decouple":
                    out[tag] = 2 * fault.frozen.setdefault(tag, out[tag]) - out[tag]
                else:  # stuck
                    out[tag] = fault.frozen.setdefault(tag, out[tag])
        return out

    def illegal_for(self, table: str, address: int, count: int) -> bool:
        """Whether a request for ``count`` of ``table`` at ``address`` touches an illegal block."""
        return any(b.overlaps(table, address, count) for b in self.illegal)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    return value


def parse_fault(spec: str) -> tuple[str, str, dict[str, float | str]]:
    """Parse a ``--fault`` option: ``DEVICE:KIND[:TAG][:key=value,...]``.

    Examples: ``1:drift:bearing_temp:rate=0.05``, ``1:spike:*:p=0.1,m=20``,
    ``2:stuck:flow``, ``1:step:flow:m=-8``, ``1:variance:vibration:sigma=0.5``,
    ``1:decouple:motor_current``, ``1:slow:latency=0.8``, ``1:illegal_block:input=4-7``,
    ``chiller-1:comms_loss``. Returns ``(device, kind, params)``; sensor faults
    get ``params["tag"]``. Errors say which part is wrong and show the format.
    """
    usage = "expected DEVICE:KIND[:TAG][:key=value,...], e.g. 1:drift:bearing_temp:rate=0.05"
    parts = spec.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"fault {spec!r}: {usage}")
    device, kind, rest = parts[0], parts[1], parts[2:]
    if kind not in ALL_FAULTS:
        raise ValueError(f"fault {spec!r}: unknown kind {kind!r}; known: {', '.join(ALL_FAULTS)}")
    params: dict[str, float | str] = {}
    if kind in SENSOR_FAULTS:
        if not rest or "=" in rest[0]:
            raise ValueError(f"fault {spec!r}: a {kind} fault needs a tag name (or *); {usage}")
        params["tag"] = rest.pop(0)
    if len(rest) > 1:
        raise ValueError(f"fault {spec!r}: too many ':' parts; {usage}")
    raw = dict(item.split("=", 1) for item in rest[0].split(",") if "=" in item) if rest else {}
    if rest and len(raw) != len([i for i in rest[0].split(",") if i]):
        raise ValueError(f"fault {spec!r}: parameters must be key=value pairs separated by ','")
    aliases = {"p": "probability", "m": "magnitude", "s": "sigma"}
    allowed = {
        "drift": {"rate"},
        "spike": {"probability", "magnitude"},
        "stuck": set(),
        "step": {"magnitude"},
        "variance": {"sigma"},
        "decouple": set(),
        "comms_loss": set(),
        "slow": {"latency"},
        "illegal_block": set(TABLES),
    }[kind]
    for key, value in raw.items():
        key = aliases.get(key, key)
        if key not in allowed:
            raise ValueError(
                f"fault {spec!r}: {kind} takes {', '.join(sorted(allowed)) or 'no parameters'}, not {key!r}"
            )
        if kind == "illegal_block":
            lo, _, hi = value.partition("-")
            start = int(_number(lo, f"fault {spec!r}"))
            end = int(_number(hi, f"fault {spec!r}")) if hi else start
            params.update(table=key, start=start, count=end - start + 1)
        else:
            params[key] = _number(value, f"fault {spec!r} {key}")
    required = {
        "drift": ("rate",),
        "spike": ("probability", "magnitude"),
        "step": ("magnitude",),
        "variance": ("sigma",),
        "slow": ("latency",),
    }.get(kind, ())
    missing = [k for k in required if k not in params]
    if kind == "illegal_block" and "table" not in params:
        missing = ["<table>=<start>-<end>, e.g. input=4-7"]
    if missing:
        raise ValueError(f"fault {spec!r}: missing {', '.join(missing)}")
    return device, kind, params


def apply_fault(faults: FaultSet, kind: str, params: dict[str, float | str]) -> None:
    """Set one parsed fault (:func:`parse_fault`) on ``faults``."""
    if kind == "drift":
        faults.drift(str(params["tag"]), float(params["rate"]))
    elif kind == "spike":
        faults.spike(str(params["tag"]), float(params["probability"]), float(params["magnitude"]))
    elif kind == "stuck":
        faults.stuck(str(params["tag"]))
    elif kind == "step":
        faults.step(str(params["tag"]), float(params["magnitude"]))
    elif kind == "variance":
        faults.variance(str(params["tag"]), float(params["sigma"]))
    elif kind == "decouple":
        faults.decouple(str(params["tag"]))
    elif kind == "comms_loss":
        faults.comms_loss = True
    elif kind == "slow":
        faults.slow(float(params["latency"]))
    elif kind == "illegal_block":
        faults.illegal_block(str(params["table"]), int(params["start"]), int(params["count"]))
    else:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(ALL_FAULTS)}")
