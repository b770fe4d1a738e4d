"""Register maps of the simulated equipment models: which value sits where, in which type and byte order.

A map is data, shared by the Modbus server (to encode) and by the tests that
check the shipped profiles (``gateway/profiles/*.yaml``) against it. Values come
from a model's reading plus ``status`` (the status word), ``run_hours`` and
``starts``. Addresses are 0-based PDU addresses of input registers (FC 4).

Every model also has the same three holding registers (FC 3/6/16)::

    0  fault_code    uint16  0 none, 1 the model's fault (write to inject / clear)
    1  fault_rate    uint16  the fault's rate x 0.01 (its unit depends on the model)
    2  run_command   uint16  1 run, 0 stop

The three models use different encodings on purpose, as real fleets do: the
P100 pump is big-endian float32 (ABCD); the C200 chiller is mostly scaled
16-bit integers with word-swapped (CDAB) 32-bit values; the A300 compressor is
little-endian (DCBA) for its 32/64-bit values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.decode import encode, register_count

if TYPE_CHECKING:
    from simulators.chiller import ChillerModel
    from simulators.compressor import CompressorModel
    from simulators.pump import PumpModel

    #: One simulated machine, of any kind :func:`make_model` builds.
    Model = PumpModel | ChillerModel | CompressorModel


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """One value of a map: ``raw = value / scale`` encoded as ``data_type`` in ``word_order``."""

    name: str
    address: int
    data_type: str
    word_order: str = "ABCD"
    scale: float = 1.0
    unit: str = ""

    @property
    def count(self) -> int:
        return register_count(self.data_type)

    def registers(self, value: float) -> list[int]:
        """The registers of ``value`` (integers are rounded and saturated to the type's range)."""
        raw = value / self.scale
        if self.data_type.startswith("float"):
            return encode(raw, self.data_type, self.word_order)
        bits = self.count * 16
        signed = self.data_type.startswith("int")
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        return encode(max(lo, min(hi, round(raw))), self.data_type, self.word_order)


@dataclass(frozen=True, slots=True)
class ModelMap:
    """The input-register map of one equipment model."""

    model: str  # the nameplate model, e.g. "P100"
    profile: str  # the Modbus profile shipped for it
    opcua_profile: str
    entries: tuple[RegisterEntry, ...]

    @property
    def input_count(self) -> int:
        return max(e.address + e.count for e in self.entries)

    def input_registers(self, values: dict[str, float]) -> list[int]:
        """The whole input table for ``values`` (a missing value reads 0)."""
        regs = [0] * self.input_count
        for e in self.entries:
            regs[e.address : e.address + e.count] = e.registers(values.get(e.name, 0.0))
        return regs


E = RegisterEntry

PUMP_MAP = ModelMap(
    "P100",
    "pump-p100",
    "pump-p100-opcua",
    (
        E("flow", 0, "float32", unit="m3/h"),
        E("discharge_pressure", 2, "float32", unit="bar"),
        E("motor_current", 4, "float32", unit="A"),
        E("bearing_temp", 6, "float32", unit="degC"),
        E("vibration", 8, "float32", unit="mm/s"),
        E("status", 10, "uint16"),
        E("run_hours", 11, "uint32", scale=0.01, unit="h"),
    ),
)

CHILLER_MAP = ModelMap(
    "C200",
    "chiller-c200",
    "chiller-c200-opcua",
    (
        E("chw_supply_temp", 0, "int16", scale=0.01, unit="degC"),
        E("chw_return_temp", 1, "int16", scale=0.01, unit="degC"),
        E("evap_pressure", 2, "uint16", scale=0.01, unit="bar"),
        E("cond_pressure", 3, "uint16", scale=0.01, unit="bar"),
        E("compressor_current", 4, "float32", "CDAB", unit="A"),
        E("superheat", 6, "int16", scale=0.1, unit="K"),
        E("status", 7, "uint16"),
        E("run_hours", 8, "uint32", "CDAB", scale=0.1, unit="h"),
        E("starts", 10, "uint32", "CDAB"),
    ),
)

COMPRESSOR_MAP = ModelMap(
    "A300",
    "compressor-a300",
    "compressor-a300-opcua",
    (
        E("discharge_pressure", 0, "float32", "DCBA", unit="bar"),
        E("oil_temp", 2, "float32", "DCBA", unit="degC"),
        E("motor_current", 4, "float32", "DCBA", unit="A"),
        E("vibration", 6, "float32", "DCBA", unit="mm/s"),
        E("dew_point", 8, "int16", scale=0.1, unit="degC"),
        E("status", 9, "uint16"),
        E("run_hours", 10, "float64", "DCBA", unit="h"),
        E("starts", 14, "uint32", "DCBA"),
        E("loaded", 16, "uint16"),
    ),
)

#: Model kind (as in ``fieldwatch simulate --model``) -> map.
MAPS: dict[str, ModelMap] = {"pump": PUMP_MAP, "chiller": CHILLER_MAP, "compressor": COMPRESSOR_MAP}


def model_kind(model: object) -> str:
    """``pump``, ``chiller`` or ``compressor`` for a model instance (by its class)."""
    from simulators.chiller import ChillerModel
    from simulators.compressor import CompressorModel
    from simulators.pump import PumpModel

    for kind, cls in (("pump", PumpModel), ("chiller", ChillerModel), ("compressor", CompressorModel)):
        if isinstance(model, cls):
            return kind
    raise TypeError(f"{type(model).__name__} is not a simulated equipment model (pump, chiller, compressor)")


def make_model(kind: str, seed: int = 0) -> Model:
    """A fresh model of ``kind`` (``fieldwatch simulate --model``)."""
    from simulators.chiller import ChillerModel
    from simulators.compressor import CompressorModel
    from simulators.pump import PumpModel

    classes: dict[str, type[Model]] = {"pump": PumpModel, "chiller": ChillerModel, "compressor": CompressorModel}
    if kind not in classes:
        raise ValueError(f"unknown model {kind!r}; known: {', '.join(classes)}")
    return classes[kind](seed)


def map_values(model: Model, reading: dict[str, float]) -> dict[str, float]:
    """A reading plus the counters every map may hold (status word, run hours, starts)."""
    return {
        **reading,
        "status": float(model.status_word(reading)),
        "run_hours": float(model.run_hours),
        "starts": float(getattr(model, "starts", 0)),
    }
