"""Register decoding: raw 16-bit registers -> engineering value. Pure functions, no I/O.

The pipeline is the one every Modbus integration converges on: put the words in
big-endian order (swap), unpack the bytes as the configured type, then apply
``value * scale + offset``. Keeping it pure lets a table of raw registers pin the
behaviour down (``tests/test_decode.py``).

Word orders: ``ABCD`` — high word first (Modbus' own big-endian convention);
``CDAB`` — low word first ("word swapped"), common on PLCs. For 64-bit types
``CDAB`` means all four words reversed.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

from gateway.errors import DecodeError

DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"]
WordOrder = Literal["ABCD", "CDAB"]

#: struct format and register count per data type.
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
DATA_TYPES: tuple[str, ...] = tuple(_FORMATS)
WORD_ORDERS: tuple[str, ...] = ("ABCD", "CDAB")


def register_count(data_type: str) -> int:
    """How many 16-bit registers a value of ``data_type`` occupies."""
    try:
        return _FORMATS[data_type][1]
    except KeyError:
        raise DecodeError(f"unknown data type {data_type!r}; expected one of {', '.join(DATA_TYPES)}") from None


def _ordered(words: Sequence[int], word_order: str) -> Sequence[int]:
    if word_order == "ABCD":
        return words
    if word_order == "CDAB":
        return list(reversed(words))
    raise DecodeError(f"unknown word order {word_order!r}; expected one of {', '.join(WORD_ORDERS)}")


def decode(
    registers: Sequence[int],
    data_type: str,
    word_order: str = "ABCD",
    scale: float = 1.0,
    offset: float = 0.0,
) -> float:
    """Decode ``registers`` to ``raw * scale + offset``; raise :class:`DecodeError` if impossible.

    NaN and infinities are refused: the contract carries only finite values, and
    a device that sends NaN is telling us the reading is invalid.
    """
    fmt, count = _FORMATS.get(data_type, ("", 0))
    if not count:
        register_count(data_type)  # raises with the list of known types
    if len(registers) != count:
        raise DecodeError(f"{data_type} needs {count} registers, got {len(registers)}")
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise DecodeError(f"registers must be 0..65535, got {list(registers)}")
    raw = struct.unpack(fmt, struct.pack(f">{count}H", *_ordered(registers, word_order)))[0]
    value = raw * scale + offset
    if not math.isfinite(value):
        raise DecodeError(f"{data_type} registers {list(registers)} decode to {value}")
    return float(value)


def encode(value: float, data_type: str, word_order: str = "ABCD") -> list[int]:
    """The inverse of :func:`decode` without scale/offset (for writes and tests)."""
    fmt, count = _FORMATS.get(data_type, ("", 0))
    if not count:
        register_count(data_type)
    native = value if data_type.startswith("float") else int(value)
    try:
        words = list(struct.unpack(f">{count}H", struct.pack(fmt, native)))
    except struct.error as exc:
        raise DecodeError(f"{value!r} does not fit {data_type}: {exc}") from None
    return list(_ordered(words, word_order))
