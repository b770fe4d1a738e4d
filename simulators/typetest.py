"""A "type-test" device: one known value per data type and byte order, over Modbus and OPC-UA.

What a field engineer (or a test) points the gateway at to prove its decoding
end to end: every numeric type (int16/uint16, int32/uint32, int64/uint64,
float32, float64) in every byte order (ABCD, CDAB, BADC, DCBA) in holding
registers, ``bit`` tags in one register, ``bool`` as a coil, a discrete input
and a non-zero register, and ASCII strings in each order. The values are chosen
to catch swaps: every byte differs, signs are negative where the type allows,
and the 64-bit values need all four words (and are exact in a float64).

Use :func:`modbus_bank` for a :class:`simulators.register_bank.RegisterBankServer`
and ``EquipmentOpcUaServer(..., types=True)`` for the OPC-UA nodes
(:data:`OPCUA_VALUES`, under ``Objects/2:types``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncua import ua

from gateway.decode import NUMERIC_TYPES, WORD_ORDERS, encode, encode_string, register_count

#: The served value of each numeric type (exact in float64, distinct bytes).
VALUES: dict[str, float] = {
    "int16": -12_345,
    "uint16": 54_321,
    "int32": -123_456_789,
    "uint32": 3_000_000_001,
    "float32": 12.5,
    "int64": -(2**40) - 12_345,
    "uint64": 2**52 + 7,
    "float64": -1234.015625,
}
TEXT = "FW-TYPES"
STRING_REGISTERS = 5  # 10 characters, NUL padded
BITS = {0: 1.0, 3: 0.0, 7: 1.0, 15: 1.0}  # bit -> expected, in one register
BIT_WORD = 0b1000_0000_1000_0001  # bits 0, 7 and 15 set


@dataclass
class ModbusLayout:
    """Registers to serve and the tags (gateway config dicts) with their expected values."""

    holding: dict[int, int] = field(default_factory=dict)
    coils: dict[int, bool] = field(default_factory=dict)
    discrete: dict[int, bool] = field(default_factory=dict)
    tags: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, float] = field(default_factory=dict)
    #: String tags (name -> (address, order)); the telemetry contract carries numbers, so these are read raw.
    strings: dict[str, tuple[int, str]] = field(default_factory=dict)


def modbus_layout() -> ModbusLayout:
    """Every numeric type x order back to back from holding 0, then bits, bools and strings."""
    out = ModbusLayout()
    addr = 0
    for data_type in NUMERIC_TYPES:
        for order in WORD_ORDERS:
            name = f"{data_type}-{order}".lower()
            for i, reg in enumerate(encode(VALUES[data_type], data_type, order)):
                out.holding[addr + i] = reg
            out.tags.append({"name": name, "address": addr, "data_type": data_type, "word_order": order})
            out.expected[name] = float(VALUES[data_type])
            addr += register_count(data_type)
    out.holding[addr] = BIT_WORD
    for bit, value in BITS.items():
        out.tags.append({"name": f"bit{bit}", "address": addr, "data_type": "bit", "bit": bit})
        out.expected[f"bit{bit}"] = value
    addr += 1
    out.holding[addr] = 0x0100  # a non-zero register reads as bool true
    out.tags.append({"name": "bool-register", "address": addr, "data_type": "bool"})
    out.expected["bool-register"] = 1.0
    addr += 1
    out.coils = {0: False, 1: True}
    out.discrete = {0: True, 1: False}
    out.tags += [
        {"name": "bool-coil", "register": "coil", "address": 1, "data_type": "bool"},
        {"name": "bool-discrete", "register": "discrete", "address": 0, "data_type": "bool"},
    ]
    out.expected |= {"bool-coil": 1.0, "bool-discrete": 1.0}
    for order in WORD_ORDERS:
        for i, reg in enumerate(encode_string(TEXT, STRING_REGISTERS, order)):
            out.holding[addr + i] = reg
        out.strings[f"string-{order.lower()}"] = (addr, order)
        addr += STRING_REGISTERS
    return out


def modbus_bank(**kw: Any) -> Any:
    """A :class:`RegisterBankServer` serving :func:`modbus_layout` (``kw``: host, port, framer, unit_id)."""
    from simulators.register_bank import RegisterBankServer

    layout = modbus_layout()
    return RegisterBankServer(holding=layout.holding, coils=layout.coils, discrete=layout.discrete, **kw)


#: One OPC-UA variable per built-in scalar type: (browse name, type, value).
OPCUA_VALUES: tuple[tuple[str, ua.VariantType, Any], ...] = (
    ("boolean", ua.VariantType.Boolean, True),
    ("sbyte", ua.VariantType.SByte, -100),
    ("byte", ua.VariantType.Byte, 200),
    ("int16", ua.VariantType.Int16, -12_345),
    ("uint16", ua.VariantType.UInt16, 54_321),
    ("int32", ua.VariantType.Int32, -123_456_789),
    ("uint32", ua.VariantType.UInt32, 3_000_000_001),
    ("int64", ua.VariantType.Int64, -(2**40) - 12_345),
    ("uint64", ua.VariantType.UInt64, 2**52 + 7),
    ("float", ua.VariantType.Float, 12.5),
    ("double", ua.VariantType.Double, -1234.015625),
    ("string", ua.VariantType.String, TEXT),
)
