"""Register decoding: raw 16-bit registers (or bits) -> engineering value. Pure functions, no I/O.

The pipeline is the one every Modbus integration converges on: put the bytes
in big-endian order (swap), unpack them as the configured type, apply
``value * scale + offset``, then clamp to the configured range. Keeping it pure
lets a table of raw registers pin the behaviour down (``tests/test_decode.py``).

Byte orders name where the value's big-endian bytes ``A B C D`` (``A`` most
significant) sit on the wire, two bytes per register:

==========  =====================  ==============================================
order       registers on the wire  also called
==========  =====================  ==============================================
``ABCD``    ``[AB, CD]``           big-endian, Modbus' own convention
``CDAB``    ``[CD, AB]``           word-swapped (common on PLCs)
``BADC``    ``[BA, DC]``           byte-swapped
``DCBA``    ``[DC, BA]``           little-endian
==========  =====================  ==============================================

For 64-bit types the same rule extends to 8 bytes (``CDAB`` reverses the four
words, ``DCBA`` all eight bytes). For 16-bit types only the byte swap matters:
``BADC``/``DCBA`` swap the two bytes, ``ABCD``/``CDAB`` do not. Each transform is
its own inverse, so :func:`encode` uses the same one.

``bool`` is a coil/discrete input bit or a register that is non-zero; ``bit``
is one bit (0 = least significant) of a 16-bit register; ``string`` is
``length`` registers of ASCII, two characters per register (see
:func:`decode_string`; the telemetry contract carries numbers, so strings are
for ``gateway check`` and future contract versions).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

from gateway.errors import DecodeError

DataType = Literal[
    "bool", "bit", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64", "string"
]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

#: struct format and register count per numeric data type.
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
    "float64": (">d", 4),
}
DATA_TYPES: tuple[str, ...] = ("bool", "bit", *_FORMATS, "string")
NUMERIC_TYPES: tuple[str, ...] = tuple(_FORMATS)
WORD_ORDERS: tuple[str, ...] = ("ABCD", "CDAB", "BADC", "DCBA")


def register_count(data_type: str, length: int = 1) -> int:
    """How many 16-bit registers (or bits, for ``bool`` on a bit table) a value occupies."""
    if data_type in ("bool", "bit"):
        return 1
    if data_type == "string":
        return length
    try:
        return _FORMATS[data_type][1]
    except KeyError:
        raise DecodeError(f"unknown data type {data_type!r}; expected one of {', '.join(DATA_TYPES)}") from None


def _check_registers(registers: Sequence[int]) -> None:
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise DecodeError(f"registers must be 0..65535, got {list(registers)}")


def _swap(data: bytes, word_order: str) -> bytes:
    """Wire bytes <-> big-endian bytes for ``word_order`` (an involution)."""
    if word_order == "ABCD":
        return data
    if word_order == "DCBA":
        return data[::-1]
    if word_order == "BADC":
        return b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    if word_order == "CDAB":
        return b"".join(data[i : i + 2] for i in range(len(data) - 2, -1, -2))
    raise DecodeError(f"unknown word order {word_order!r}; expected one of {', '.join(WORD_ORDERS)}")


def decode(
    registers: Sequence[int],
    data_type: str,
    word_order: str = "ABCD",
    scale: float = 1.0,
    offset: float = 0.0,
    *,
    bit: int = 0,
) -> float:
    """Decode ``registers`` to ``raw * scale + offset``; raise :class:`DecodeError` if impossible.

    For ``bool`` the input may be a bit (``True``/``False``/0/1 from a coil) or a
    register; for ``bit`` it is one register and ``bit`` picks the bit. NaN and
    infinities are refused: the contract carries only finite values, and a
    device that sends NaN is telling us the reading is invalid.
    """
    if data_type in ("bool", "bit"):
        if len(registers) != 1:
            raise DecodeError(f"{data_type} needs 1 register or bit, got {len(registers)}")
        _check_registers([int(registers[0])])
        if data_type == "bit":
            if not 0 <= bit <= 15:
                raise DecodeError(f"bit must be 0..15, got {bit}")
            raw: float = (int(registers[0]) >> bit) & 1
        else:
            raw = 1 if registers[0] else 0
        return float(raw * scale + offset)
    if data_type == "string":
        raise DecodeError("a string tag has no numeric value; use decode_string()")
    fmt, count = _FORMATS.get(data_type, ("", 0))
    if not count:
        register_count(data_type)  # raises with the list of known types
    if len(registers) != count:
        raise DecodeError(f"{data_type} needs {count} registers, got {len(registers)}")
    _check_registers(registers)
    wire = struct.pack(f">{count}H", *registers)
    raw = struct.unpack(fmt, _swap(wire, word_order))[0]
    value = raw * scale + offset
    if not math.isfinite(value):
        raise DecodeError(f"{data_type} registers {list(registers)} decode to {value}")
    return float(value)


def decode_string(registers: Sequence[int], word_order: str = "ABCD") -> str:
    """ASCII text, two characters per register; ``BADC``/``DCBA`` put the first character low.

    Trailing NULs and spaces (padding) are removed; non-ASCII bytes raise :class:`DecodeError`.
    """
    _check_registers(registers)
    data = struct.pack(f">{len(registers)}H", *registers)
    if word_order in ("BADC", "DCBA"):
        data = _swap(data, "BADC")
    elif word_order not in ("ABCD", "CDAB"):
        _swap(data, word_order)  # raises
    try:
        return data.decode("ascii").rstrip("\x00 ")
    except UnicodeDecodeError:
        raise DecodeError(f"registers {list(registers)} are not ASCII text") from None


def clamp(value: float, low: float | None, high: float | None) -> tuple[float, bool]:
    """``value`` limited to ``[low, high]``, and whether it had to be (the point is then BAD_OUT_OF_RANGE)."""
    if low is not None and value < low:
        return low, True
    if high is not None and value > high:
        return high, True
    return value, False


def encode(value: float, data_type: str, word_order: str = "ABCD", *, bit: int = 0) -> list[int]:
    """The inverse of :func:`decode` without scale/offset (for writes, simulators and tests)."""
    if data_type == "bool":
        return [1 if value else 0]
    if data_type == "bit":
        return [(1 << bit) if value else 0]
    fmt, count = _FORMATS.get(data_type, ("", 0))
    if not count:
        register_count(data_type)
    native = value if data_type.startswith("float") else int(value)
    try:
        data = _swap(struct.pack(fmt, native), word_order)
    except struct.error as exc:
        raise DecodeError(f"{value!r} does not fit {data_type}: {exc}") from None
    return list(struct.unpack(f">{count}H", data))


def encode_string(text: str, length: int, word_order: str = "ABCD") -> list[int]:
    """``text`` as ``length`` registers (NUL padded), the inverse of :func:`decode_string`."""
    data = text.encode("ascii").ljust(length * 2, b"\x00")
    if len(data) > length * 2:
        raise DecodeError(f"{text!r} does not fit {length} registers")
    if word_order in ("BADC", "DCBA"):
        data = _swap(data, "BADC")
    return list(struct.unpack(f">{length}H", data))
