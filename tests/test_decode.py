"""Register decoding and read planning: pure functions pinned by tables."""

from __future__ import annotations

import math

import pytest

from gateway.config import Tag
from gateway.decode import (
    DATA_TYPES,
    NUMERIC_TYPES,
    WORD_ORDERS,
    clamp,
    decode,
    decode_string,
    encode,
    encode_string,
    register_count,
)
from gateway.errors import DecodeError
from gateway.planner import plan_reads


@pytest.mark.parametrize(
    ("registers", "data_type", "order", "scale", "offset", "expected"),
    [
        ([0x0001], "uint16", "ABCD", 1, 0, 1),
        ([0xFFFF], "uint16", "ABCD", 1, 0, 65535),
        ([0xFFFF], "int16", "ABCD", 1, 0, -1),
        ([0x8000], "int16", "ABCD", 1, 0, -32768),
        ([0x0000, 0x0001], "uint32", "ABCD", 1, 0, 1),
        ([0x0001, 0x0000], "uint32", "CDAB", 1, 0, 1),
        ([0x0001, 0x0000], "uint32", "ABCD", 1, 0, 65536),
        ([0xFFFF, 0xFFFE], "int32", "ABCD", 1, 0, -2),
        ([0xFFFE, 0xFFFF], "int32", "CDAB", 1, 0, -2),
        ([0x42F0, 0x0000], "float32", "ABCD", 1, 0, 120.0),
        ([0x0000, 0x42F0], "float32", "CDAB", 1, 0, 120.0),
        ([0xC0A0, 0x0000], "float32", "ABCD", 1, 0, -5.0),
        ([0x0000, 0x0000, 0x0000, 0x0007], "uint64", "ABCD", 1, 0, 7),
        ([0x4028, 0x0000, 0x0000, 0x0000], "float64", "ABCD", 1, 0, 12.0),
        ([0x04D2], "uint16", "ABCD", 0.1, 0, 123.4),
        ([0x04D2], "uint16", "ABCD", 0.1, -273.15, 123.4 - 273.15),
        ([0x0012, 0xD687], "uint32", "ABCD", 0.01, 0, 12345.67),
    ],
)
def test_registers_decode_to_scaled_values(registers, data_type, order, scale, offset, expected) -> None:
    """Swap, unpack, then scale and offset give the engineering value."""
    assert decode(registers, data_type, order, scale, offset) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("registers", "data_type", "order"),
    [
        ([0x0001], "float32", "ABCD"),  # too few registers
        ([0x0001, 0x0002, 0x0003], "int32", "ABCD"),  # too many
        ([0x7FC0, 0x0000], "float32", "ABCD"),  # NaN
        ([0x7F80, 0x0000], "float32", "ABCD"),  # +inf
        ([0x10000], "uint16", "ABCD"),  # not a register
        ([0x0001], "bcd16", "ABCD"),  # unknown type
        ([0x0001, 0x0000], "uint32", "XYZW"),  # unknown word order
        ([0x0001], "string", "ABCD"),  # not a number
    ],
)
def test_undecodable_registers_raise_decode_error(registers, data_type, order) -> None:
    """Anything that cannot yield one finite value raises DecodeError, never a wrong number."""
    with pytest.raises(DecodeError):
        decode(registers, data_type, order)


# Every numeric type x every order: the wire registers written out by hand from the value's
# big-endian bytes (A = most significant), so the table, not the code, defines the orders.
WIRE = {
    ("int16", -2): {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]},
    ("uint16", 0x0102): {"ABCD": [0x0102], "CDAB": [0x0102], "BADC": [0x0201], "DCBA": [0x0201]},
    ("int32", -2): {
        "ABCD": [0xFFFF, 0xFFFE],
        "CDAB": [0xFFFE, 0xFFFF],
        "BADC": [0xFFFF, 0xFEFF],
        "DCBA": [0xFEFF, 0xFFFF],
    },
    ("uint32", 0x01020304): {
        "ABCD": [0x0102, 0x0304],
        "CDAB": [0x0304, 0x0102],
        "BADC": [0x0201, 0x0403],
        "DCBA": [0x0403, 0x0201],
    },
    ("float32", 120.0): {
        "ABCD": [0x42F0, 0x0000],
        "CDAB": [0x0000, 0x42F0],
        "BADC": [0xF042, 0x0000],
        "DCBA": [0x0000, 0xF042],
    },
    ("int64", -2): {
        "ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE],
        "CDAB": [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
        "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF],
        "DCBA": [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF],
    },
    ("uint64", 0x0102030405060708): {
        "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
        "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
        "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
        "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
    },
    ("float64", 12.0): {
        "ABCD": [0x4028, 0, 0, 0],
        "CDAB": [0, 0, 0, 0x4028],
        "BADC": [0x2840, 0, 0, 0],
        "DCBA": [0, 0, 0, 0x2840],
    },
}
WIRE_CASES = [(t, v, o, regs) for (t, v), orders in WIRE.items() for o, regs in orders.items()]


def test_the_wire_table_covers_every_numeric_type_and_order() -> None:
    """The hand-written table has a row for each numeric type x byte order."""
    assert {(t, o) for t, _, o, _ in WIRE_CASES} == {(t, o) for t in NUMERIC_TYPES for o in WORD_ORDERS}


@pytest.mark.parametrize(("data_type", "value", "order", "registers"), WIRE_CASES)
def test_every_type_and_byte_order_decodes_and_encodes_per_the_table(data_type, value, order, registers) -> None:
    """Wire registers decode to the value and the value encodes back to the same registers."""
    assert decode(registers, data_type, order) == float(value)  # published values are float64
    assert encode(value, data_type, order) == registers


@pytest.mark.parametrize(
    ("registers", "data_type", "bit", "scale", "expected"),
    [
        ([True], "bool", 0, 1, 1.0),
        ([False], "bool", 0, 1, 0.0),
        ([0x0000], "bool", 0, 1, 0.0),
        ([0x0100], "bool", 0, 1, 1.0),  # any non-zero register is true
        ([0b0000_0000_0000_0100], "bit", 2, 1, 1.0),
        ([0b0000_0000_0000_0100], "bit", 1, 1, 0.0),
        ([0x8000], "bit", 15, 1, 1.0),
        ([1], "bool", 0, 100, 100.0),
    ],
)
def test_bits_and_booleans_decode_to_zero_or_one(registers, data_type, bit, scale, expected) -> None:
    """A coil/discrete bit or a non-zero register is 1.0 as bool; bit N of a register is 1.0 if set."""
    assert decode(registers, data_type, bit=bit, scale=scale) == expected


def test_a_bit_outside_the_register_is_refused() -> None:
    """Bit 16 of a 16-bit register is a decode error."""
    with pytest.raises(DecodeError, match=r"0\.\.15"):
        decode([1], "bit", bit=16)


@pytest.mark.parametrize(
    ("registers", "order", "expected"),
    [
        ([0x5031, 0x3030, 0x0000], "ABCD", "P100"),
        ([0x3150, 0x3030, 0x0000], "BADC", "P100"),
        ([0x3150, 0x3030, 0x2020], "DCBA", "P100"),
        ([0x4142, 0x4300], "CDAB", "ABC"),
    ],
)
def test_strings_decode_two_characters_per_register(registers, order, expected) -> None:
    """ASCII text, high byte first (ABCD/CDAB) or low byte first (BADC/DCBA), padding stripped."""
    assert decode_string(registers, order) == expected
    assert decode_string(encode_string(expected, len(registers), order), order) == expected


def test_non_ascii_string_registers_are_a_decode_error() -> None:
    """Bytes that are not ASCII raise DecodeError rather than producing mojibake."""
    with pytest.raises(DecodeError, match="not ASCII"):
        decode_string([0xC3A9])


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        (5.0, 0.0, 10.0, (5.0, False)),
        (-1.0, 0.0, 10.0, (0.0, True)),
        (11.0, 0.0, 10.0, (10.0, True)),
        (11.0, None, None, (11.0, False)),
        (-5.0, None, 0.0, (-5.0, False)),
    ],
)
def test_clamp_limits_and_reports_it(value, low, high, expected) -> None:
    """clamp() keeps values within [min, max] and says when it had to."""
    assert clamp(value, low, high) == expected


def test_every_data_type_has_a_register_count() -> None:
    """register_count knows each declared type (string: its length)."""
    assert [register_count(t, 5) for t in DATA_TYPES] == [1, 1, 1, 1, 2, 2, 2, 4, 4, 4, 5]


@pytest.mark.parametrize("data_type", ["int16", "uint16", "int32", "uint32", "float32", "int64", "float64"])
@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_encode_is_the_inverse_of_decode(data_type: str, order: str) -> None:
    """encode() then decode() returns the value, for every type and word order."""
    value = 1234.5 if data_type.startswith("float") else 1234
    regs = encode(value, data_type, order)
    assert len(regs) == register_count(data_type)
    assert math.isclose(decode(regs, data_type, order), value)


def tag(name: str, address: int, data_type: str = "uint16", register: str = "holding") -> Tag:
    return Tag(name=name, address=address, data_type=data_type, register=register)


def spans(tags, **kw) -> list[tuple[str, int, int, list[str]]]:
    return [(r.register_type, r.address, r.count, [t.name for t in r.tags]) for r in plan_reads(tags, **kw)]


@pytest.mark.parametrize(
    ("tags", "kw", "expected"),
    [
        ([tag("a", 0), tag("b", 1)], {}, [("holding", 0, 2, ["a", "b"])]),
        ([tag("b", 10), tag("a", 0, "float32")], {"max_gap": 7}, [("holding", 0, 2, ["a"]), ("holding", 10, 1, ["b"])]),
        ([tag("b", 10), tag("a", 0, "float32")], {"max_gap": 8}, [("holding", 0, 11, ["a", "b"])]),
        (
            [tag("a", 0, register="input"), tag("b", 1)],
            {},
            [("holding", 1, 1, ["b"]), ("input", 0, 1, ["a"])],
        ),
        (
            [tag("a", 0), tag("b", 124), tag("c", 125)],
            {"max_gap": 200},
            [("holding", 0, 125, ["a", "b"]), ("holding", 125, 1, ["c"])],
        ),
        ([tag("a", 0, "float32"), tag("a_hi", 0)], {}, [("holding", 0, 2, ["a_hi", "a"])]),
        (
            [tag("a", 0), tag("b", 2)],
            {"max_registers": 2, "max_gap": 5},
            [("holding", 0, 1, ["a"]), ("holding", 2, 1, ["b"])],
        ),
    ],
    ids=["adjacent", "gap-too-big", "gap-ok", "by-register-type", "125-limit", "overlap", "max-registers"],
)
def test_tags_are_merged_into_contiguous_reads(tags, kw, expected) -> None:
    """Tags of one register type merge while the gap and the read size allow it."""
    assert spans(tags, **kw) == expected


def test_each_tag_gets_its_own_slice_of_a_merged_read() -> None:
    """A merged read's answer is cut back into each tag's registers."""
    (request,) = plan_reads([tag("a", 3), tag("f", 5, "float32")])
    answer = [10, 11, 0x42F0, 0x0000]
    assert request.slice_for(request.tags[0], answer) == [10]
    assert request.slice_for(request.tags[1], answer) == [0x42F0, 0x0000]
