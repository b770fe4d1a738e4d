"""The block decoder (hot path) gives exactly what the reference ``decode`` gives, for every type and byte order."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from fwcore.contract import Batch, Point, Quality, encode_batch
from gateway.blockdecode import BlockDecoder, TagValue, to_points
from gateway.config import Tag
from gateway.decode import NUMERIC_TYPES, WORD_ORDERS, decode, encode, register_count

SAMPLES = {
    "int16": -1234,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3_000_000_000,
    "float32": 12.5,
    "int64": -(2**40) - 7,
    "uint64": 2**63 + 5,
    "float64": -1.0e-3,
}


@pytest.mark.parametrize(("data_type", "order"), list(itertools.product(NUMERIC_TYPES, WORD_ORDERS)))
def test_block_matches_reference_decode(data_type: str, order: str) -> None:
    """Two tags packed at an offset in one read decode like ``decode`` on their own registers."""
    regs = encode(SAMPLES[data_type], data_type, order)
    n = register_count(data_type)
    a = Tag(name="a", address=10 + 1, data_type=data_type, word_order=order, scale=2.0, offset=1.0)
    b = Tag(name="b", address=10 + 1 + n, data_type=data_type, word_order=order)
    block = [7, *regs, *regs]
    values = BlockDecoder(10, len(block), "holding", [a, b])(block)
    assert values[0].value == decode(regs, data_type, order, 2.0, 1.0)
    assert values[1].value == decode(regs, data_type, order)
    assert [v.quality for v in values] == [Quality.GOOD, Quality.GOOD]


def test_bits_bools_clamp_and_bad_values() -> None:
    """bit/bool tags, clamping and a NaN float each get the reference value and quality, independently."""
    tags = [
        Tag(name="b3", address=0, data_type="bit", bit=3),
        Tag(name="on", address=0, data_type="bool"),
        Tag(name="clamped", address=1, data_type="uint16", max=100),
        Tag(name="nan", address=2, data_type="float32"),
        Tag(name="ok", address=4, data_type="int16"),
    ]
    nan = encode(math.nan, "float32")
    values = BlockDecoder(0, 5, "holding", tags)([0b1000, 500, *nan, 65535])
    assert [(v.value, v.quality) for v in values] == [
        (1.0, Quality.GOOD),
        (1.0, Quality.GOOD),
        (100.0, Quality.BAD_OUT_OF_RANGE),
        (0.0, Quality.BAD_DECODE),
        (-1.0, Quality.GOOD),
    ]


def test_coils_decode_as_bools() -> None:
    """Bits from a coil read map to 0.0/1.0 by position."""
    tags = [Tag(name=f"c{i}", register="coil", address=i, data_type="bool") for i in (0, 2)]
    assert [v.value for v in BlockDecoder(0, 3, "coil", tags)([True, False, False])] == [1.0, 0.0]


def test_short_answer_is_bad_decode_not_a_crash() -> None:
    """An answer shorter than the read (a broken device) marks the read's register tags BAD_DECODE."""
    tags = [Tag(name="x", address=0), Tag(name="y", address=1, data_type="float32")]
    values = BlockDecoder(0, 3, "holding", tags)([1, 2])
    assert [v.quality for v in values] == [Quality.BAD_DECODE, Quality.BAD_DECODE]


@pytest.mark.parametrize("order", ["ABCD", "DCBA"])
def test_whole_block_fast_path_matches_reference(order: str) -> None:
    """A read of numeric tags in one byte order, with gaps, scales, NaN and inf, decodes like ``decode`` per tag."""
    layout = [  # (address, type, value, scale, offset)
        (3, "float32", 1.5, 1.0, 0.0),
        (5, "int16", -7, 0.5, 10.0),
        (9, "float32", math.nan, 1.0, 0.0),  # gap of 3 registers before it
        (11, "uint32", 4_000_000_000, 1.0, 0.0),
        (13, "float64", math.inf, 1.0, 0.0),
        (17, "float32", -0.0, 1.0, 0.0),
        (19, "uint64", 2**63 + 5, 0.001, -2.0),
    ]
    regs = [0] * 25
    tags = []
    for i, (addr, dtype, value, scale, offset) in enumerate(layout):
        words = encode(value, dtype, order)
        regs[addr : addr + len(words)] = words
        tags.append(Tag(name=f"t{i}", address=addr, data_type=dtype, word_order=order, scale=scale, offset=offset))
    block = BlockDecoder(1, 24, "holding", tags)
    assert block._whole is not None  # the fast path is the one under test
    got = block(regs[1:25])
    for (addr, dtype, _, scale, offset), v in zip(layout, got, strict=True):
        words = regs[addr : addr + register_count(dtype)]
        try:
            want = (decode(words, dtype, order, scale, offset), Quality.GOOD)
        except ValueError:
            want = (0.0, Quality.BAD_DECODE)
        assert (v.value, v.quality) == want, v.tag.name
        assert math.copysign(1, v.value) == math.copysign(1, want[0])  # -0.0 stays -0.0 when the reference keeps it


def test_whole_block_not_used_where_the_loop_is_needed() -> None:
    """Mixed byte orders, swapped orders, clamps, overlaps and bits keep the per-tag loop."""
    f = Tag(name="f", address=0, data_type="float32")
    cases = [
        [f, Tag(name="g", address=2, data_type="float32", word_order="DCBA")],
        [Tag(name="s", address=0, data_type="float32", word_order="CDAB")],
        [f, Tag(name="c", address=2, data_type="uint16", max=5)],
        [f, Tag(name="lo", address=1, data_type="uint16")],
        [f, Tag(name="b", address=2, data_type="bit", bit=1)],
    ]
    for tags in cases:
        assert BlockDecoder(0, 4, "holding", tags)._whole is None, [t.name for t in tags]


def test_to_points_equals_building_points() -> None:
    """The fast Point builder gives equal (and equally hashable) Points, honouring a value's own timestamp."""
    tags = [Tag(name=f"t{i}", address=i) for i in range(4)]
    values = [
        TagValue(t, float(i), Quality.GOOD if i % 2 else Quality.BAD_DECODE, 99 if i == 3 else None)
        for i, t in enumerate(tags)
    ]
    want = [Point("dev", v.tag.name, v.ts or 7, v.value, v.quality) for v in values]
    got = to_points("dev", 7, values)
    assert got == want
    assert [hash(p) for p in got] == [hash(p) for p in want]
    assert got[3].ts == 99
    assert all(type(p) is Point for p in got)
    assert [repr(p) for p in got] == [repr(p) for p in want]
    batch = Batch("gw", "site", 1, got, sent_at=5)
    assert encode_batch(batch) == encode_batch(Batch("gw", "site", 1, want, sent_at=5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].value = 1.0  # type: ignore[misc]
    assert dataclasses.replace(got[1], value=2.0) == Point("dev", "t1", 7, 2.0, Quality.GOOD)


@pytest.mark.parametrize("order", WORD_ORDERS)
def test_raw_reply_bytes_decode_like_the_register_list(order: str) -> None:
    """The lean client's data bytes give exactly what the list of registers gives (fast path and per-tag loop)."""
    regs = [*encode(-3.25, "float32", order), 0b1000_0000_0000_0010, *encode(-7, "int16", order)]
    blocks = [
        [Tag(name="f", address=0, data_type="float32", word_order=order), Tag(name="i", address=3, word_order=order)],
        [Tag(name="f", address=0, data_type="float32", word_order=order),
         Tag(name="b1", address=2, data_type="bit", bit=1), Tag(name="b15", address=2, data_type="bit", bit=15),
         Tag(name="b2", address=2, data_type="bit", bit=2)],
    ]  # fmt: skip
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    for tags in blocks:
        decoder = BlockDecoder(0, len(regs), "holding", tags)
        assert decoder(raw) == decoder(regs)
        assert [v.quality for v in decoder(raw)] == [Quality.GOOD] * len(tags)
    short = BlockDecoder(0, len(regs), "holding", blocks[0])(raw[:-2])
    assert short == BlockDecoder(0, len(regs), "holding", blocks[0])(regs[:-1])
    assert short[0].quality == Quality.BAD_DECODE
