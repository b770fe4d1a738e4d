"""Register decoding and read planning: pure functions pinned by tables."""

from __future__ import annotations

import math

import pytest

from gateway.config import Tag
from gateway.decode import decode, encode, register_count
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
        ([0x0001, 0x0000], "uint32", "BADC"),  # unknown word order
    ],
)
def test_undecodable_registers_raise_decode_error(registers, data_type, order) -> None:
    """Anything that cannot yield one finite value raises DecodeError, never a wrong number."""
    with pytest.raises(DecodeError):
        decode(registers, data_type, order)


@pytest.mark.parametrize("data_type", ["int16", "uint16", "int32", "uint32", "float32", "int64", "float64"])
@pytest.mark.parametrize("order", ["ABCD", "CDAB"])
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
