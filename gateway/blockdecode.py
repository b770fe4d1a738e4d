"""Decode every tag of one read at once: the poll loop's hot path. Pure.

:func:`gateway.decode.decode` is the reference (one tag, validated, easy to
read and table-tested). Profiling ``bench/gateway.py`` showed it dominating the
gateway's CPU at 100k points/s: per tag it re-validated every register, packed
a fresh bytes object and parsed a struct format string. :class:`BlockDecoder`
does the same work once per read instead: the answer's registers are packed
into one big-endian buffer (``struct`` validates 0..65535 on the way) and each
tag is unpacked from its offset with a precompiled :class:`struct.Struct`
(``ABCD`` reads big-endian, ``DCBA`` little-endian; ``BADC``/``CDAB`` go through
the reference byte swap). ``tests/test_gateway_blockdecode.py`` checks it
against :func:`decode` for every type and byte order.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, NamedTuple

from fwcore.contract import Point, Quality
from gateway.config import BIT_TABLES, OpcUaTag, Tag
from gateway.decode import _FORMATS, _swap, clamp

_GOOD = int(Quality.GOOD)
_BAD_DECODE = int(Quality.BAD_DECODE)
_BAD_RANGE = int(Quality.BAD_OUT_OF_RANGE)


class TagValue(NamedTuple):
    """A decoded tag: ``value`` is meaningful only when ``quality`` is good."""

    tag: Tag | OpcUaTag  # a Modbus register's tag, or an OPC-UA node's (gateway.opcua)
    value: float
    quality: int = Quality.GOOD
    #: Source timestamp (Unix ms) when the device gives one (OPC-UA); None: the poll's time.
    ts: int | None = None


def to_points(device: str, ts: int, values: Sequence[TagValue]) -> list[Point]:
    """The poll's values as contract :class:`~fwcore.contract.Point` s (``ts`` unless the value has its own).

    Equal to ``[Point(device, v.tag.name, v.ts or ts, v.value, v.quality) for v in values]``
    at about a third of the cost: ``Point`` is a frozen slots dataclass whose generated
    ``__init__`` goes through ``object.__setattr__`` per field (~2 µs a point; 8-16% of the
    gateway's CPU at 100k points/s, then 26% with slot descriptors once the Modbus client got
    lean). Here each point is built as a :class:`_DraftPoint` — same slots, not
    frozen, so plain attribute stores — and then becomes a ``Point`` by ``__class__``
    assignment, which CPython allows between classes of identical layout (and refuses with
    TypeError otherwise, checked at import below). The result *is* a frozen ``Point``
    (``type(p) is Point``); Point has no ``__post_init__`` to skip —
    ``tests/test_gateway_blockdecode.py`` checks equality, hash and frozenness.
    """
    draft, cls = _DraftPoint, Point
    out: list[Point] = []
    append = out.append
    for tag, value, quality, own_ts in values:
        p = draft()
        p.device = device
        p.tag = tag.name
        p.ts = own_ts or ts
        p.value = value
        p.quality = quality
        p.__class__ = cls  # type: ignore[assignment]  # the same-layout class swap described above
        append(p)  # type: ignore[arg-type]  # now a Point, which mypy cannot follow
    return out


class _DraftPoint:
    """A mutable twin of :class:`~fwcore.contract.Point` (same slots): see :func:`to_points`."""

    __slots__ = ("device", "quality", "tag", "ts", "value")  # CPython lays slots out by sorted name anyway

    device: str
    tag: str
    ts: int
    value: float
    quality: int


assert {f.name for f in fields(Point)} == set(_DraftPoint.__slots__), "to_points needs updating"
assert not hasattr(Point, "__post_init__"), "to_points would skip Point.__post_init__"
_probe = _DraftPoint()
_probe.__class__ = Point  # type: ignore[assignment]  # raises TypeError at import if the layouts ever differ
del _probe

# kinds of field
_STRUCT, _BOOL, _BIT = range(3)

#: ``struct.Struct.unpack_from``: a tag's raw value(s) from the read's big-endian buffer at a byte offset.
_UnpackFrom = Callable[[bytes, int], tuple[Any, ...]]
#: One tag of a read: (tag, kind, start, unpack, scale, offset, min, max, bit).
_Field = tuple[Tag, int, int, _UnpackFrom, float, float, float | None, float | None, int]
#: The whole-read struct (see :func:`_whole_block`): unpack, tags, scales, offsets.
_Whole = tuple[Callable[[bytes], tuple[float, ...]], tuple[Tag, ...], tuple[float, ...], tuple[float, ...]]


def _swapped_unpack_from(fmt: str, n: int, word_order: str) -> _UnpackFrom:
    """``unpack_from`` for ``BADC``/``CDAB``, which no struct format reads: the reference byte swap first."""
    unpack = struct.Struct(fmt).unpack
    size = 2 * n

    def unpack_from(buf: bytes, offset: int) -> tuple[Any, ...]:
        return unpack(_swap(buf[offset : offset + size], word_order))

    return unpack_from


def _no_unpack(buf: bytes, offset: int) -> tuple[Any, ...]:
    """The ``unpack`` of ``bool`` and ``bit`` fields, which are read from the registers, never unpacked."""
    raise AssertionError("bool and bit tags are not unpacked")


#: Builds a TagValue from a ready tuple, skipping NamedTuple's keyword-default ``__new__``
#: (half the cost per tag: 0.2 vs 0.4 µs, and the hot loop makes 100k of them a second).
_tuple_new = tuple.__new__


class BlockDecoder:
    """Decodes the answer to one read (``count`` registers or bits from ``address``) into its tags' values."""

    __slots__ = ("_bits", "_count", "_fields", "_whole")

    def __init__(self, address: int, count: int, register_type: str, tags: Sequence[Tag]) -> None:
        self._bits = register_type in BIT_TABLES
        self._count = count
        fields: list[_Field] = []
        for tag in tags:
            start = tag.address - address
            kind: int
            unpack: _UnpackFrom = _no_unpack
            if tag.data_type == "bool":
                kind = _BOOL
            elif tag.data_type == "bit":
                kind = _BIT
            else:
                fmt, n = _FORMATS[tag.data_type]
                if tag.word_order == "ABCD":
                    kind, unpack = _STRUCT, struct.Struct(fmt).unpack_from
                elif tag.word_order == "DCBA":
                    kind, unpack = _STRUCT, struct.Struct("<" + fmt[1:]).unpack_from
                else:
                    kind, unpack = _STRUCT, _swapped_unpack_from(fmt, n, tag.word_order)
            fields.append((tag, kind, start, unpack, tag.scale, tag.offset, tag.min, tag.max, tag.bit or 0))
        self._fields = tuple(fields)
        self._whole = None if self._bits else _whole_block(address, count, tags)

    def __call__(self, registers: Sequence[int] | bytes) -> list[TagValue]:
        """Every tag's value; a tag that cannot be decoded gets ``BAD_DECODE``, the others are unaffected.

        ``registers`` is a list of register values (pymodbus), or — from the lean Modbus TCP
        client — the reply's data bytes as received (big-endian registers): the fast path then
        unpacks them as they are, skipping a pack of every register back into bytes.
        """
        if type(registers) is bytes:
            if self._whole is not None and len(registers) >= 2 * self._count:
                return self._decode_whole(self._whole, registers)
            registers = struct.unpack(f">{len(registers) // 2}H", registers[: len(registers) // 2 * 2])
        if self._bits or len(registers) < self._count:
            buf = b""
        else:
            try:
                buf = struct.pack(f">{self._count}H", *registers[: self._count])
            except struct.error:
                return [TagValue(f[0], 0.0, _BAD_DECODE) for f in self._fields]
            if self._whole is not None:
                return self._decode_whole(self._whole, buf)
        out: list[TagValue] = []
        append = out.append
        isfinite = math.isfinite
        new, cls = _tuple_new, TagValue
        for tag, kind, start, unpack, scale, offset, low, high, bit in self._fields:
            try:
                if kind == _STRUCT:
                    raw = unpack(buf, start * 2)[0]
                elif kind == _BOOL:
                    raw = 1 if registers[start] else 0
                else:
                    raw = (int(registers[start]) >> bit) & 1
            except (struct.error, IndexError):
                append(TagValue(tag, 0.0, _BAD_DECODE))
                continue
            value = raw * scale + offset
            if not isfinite(value):
                append(TagValue(tag, 0.0, _BAD_DECODE))
                continue
            if low is None and high is None:
                append(new(cls, (tag, float(value), _GOOD, None)))
            else:
                value, clamped = clamp(float(value), low, high)
                append(new(cls, (tag, value, _BAD_RANGE if clamped else _GOOD, None)))
        return out

    def _decode_whole(self, whole: _Whole, buf: bytes) -> list[TagValue]:
        """The fast path: every tag unpacked by one precompiled struct, then scaled in one pass.

        Same values and qualities as the per-tag loop (``raw * scale + offset``; a
        non-finite result is ``BAD_DECODE``); only for blocks :func:`_whole_block` accepts.
        """
        unpack, tags, scales, offsets = whole
        values = [r * s + o for r, s, o in zip(unpack(buf), scales, offsets, strict=True)]
        new, cls, isfinite = _tuple_new, TagValue, math.isfinite
        return [
            new(cls, (t, v, _GOOD, None)) if isfinite(v) else new(cls, (t, 0.0, _BAD_DECODE, None))
            for t, v in zip(tags, values, strict=True)
        ]


def _whole_block(address: int, count: int, tags: Sequence[Tag]) -> _Whole | None:
    """One struct for a whole read when every tag allows it, else None (the per-tag loop then).

    Profiling ``bench/gateway.py`` at 100k points/s put the per-tag loop first (20% of the
    gateway's CPU, ~1 µs a tag). A typical read — numeric tags in one byte order, in address
    order, not overlapping, without ``min``/``max`` — is unpacked by a single
    :class:`struct.Struct` whose format skips the gaps (``x`` pad bytes): ``ABCD`` is
    big-endian throughout, ``DCBA`` little-endian throughout (each field's bytes reversed).
    Bits, bools, strings, ``BADC``/``CDAB``, mixed orders, overlaps and clamps keep the loop.
    """
    orders = {t.word_order for t in tags}
    if not tags or len(orders) != 1 or not orders <= {"ABCD", "DCBA"}:
        return None
    fmt = [">" if "ABCD" in orders else "<"]
    at = 0  # first register (relative to ``address``) not yet covered
    for tag in tags:
        start = tag.address - address
        if tag.data_type not in _FORMATS or tag.min is not None or tag.max is not None or start < at:
            return None
        code, n = _FORMATS[tag.data_type]
        fmt.append("x" * (2 * (start - at)) + code[1:])
        at = start + n
    if at > count:
        return None
    return (
        struct.Struct("".join(fmt)).unpack_from,
        tuple(tags),
        tuple(float(t.scale) for t in tags),
        tuple(float(t.offset) for t in tags),
    )
