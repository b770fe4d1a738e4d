"""The fast path accepts exactly what the full decode + validate path accepts, with the same rows, and nothing else."""

from __future__ import annotations

import orjson
import pytest

from fwcore.contract import Batch, ContractError, decode_batch, encode_batch
from ingest.fastpath import fast_accept
from ingest.validate import validate_batch
from ingest.writer import rows_of
from tests.support.validation import DAY, LIMITS, NOW, REG, batch, p


def full_path(payload: bytes, site: str, gateway: str):
    """The rows the full path stores, or None when it dead-letters anything."""
    try:
        b = decode_batch(payload)
    except ContractError:
        return None
    v = validate_batch(b, site=site, gateway=gateway, registry=REG, now_ms=NOW, limits=LIMITS)
    return None if v.rejections else rows_of(v.accepted)


def fast(payload: bytes, site: str = "site-a", gateway: str = "gw-a"):
    got = fast_accept(payload, site=site, gateway=gateway, registry=REG, now_ms=NOW, limits=LIMITS)
    return None if got is None else got.rows


def raw(**fields) -> bytes:
    obj = orjson.loads(encode_batch(batch([p(), p(device="pump-2")])))
    obj.update(fields)
    return orjson.dumps(obj)


def raw_point(**fields) -> bytes:
    obj = orjson.loads(encode_batch(batch([p()])))
    obj["points"][0].update(fields)
    return orjson.dumps(obj)


GOOD = [
    encode_batch(batch([p(), p(device="pump-2"), p(ts=NOW + 300_000), p(ts=NOW - 90 * DAY)])),
    raw_point(value=3),  # an integer value is stored as float
    raw_point(quality=192),
    encode_batch(Batch(gateway="gw-a", site="site-a", seq=5, points=[p()], historical=True)),
]
BAD = [
    b"\xff\xfe",  # invalid UTF-8
    b"{not json",
    b"[]",
    b"x" * 1_048_577,  # oversized
    raw(v=2),
    raw(v=True),
    raw(seq=-1),
    raw(seq=2**63),
    raw(seq="1"),
    raw(points={}),
    raw(gateway="gw-b"),
    encode_batch(batch([p()], gateway="gw-x")),
    raw_point(value="1"),
    raw_point(value=True),
    raw_point(ts=1.5),
    raw_point(quality=-1),
    raw_point(quality=40_000),
    raw_point(device="pump-3"),
    raw_point(device="pump-9"),  # registered on another gateway
    raw_point(tag=""),
    raw_point(device="pu\x00mp"),
    raw_point(ts=NOW + 300_001),
    raw_point(ts=NOW - 90 * DAY - 1),
    orjson.dumps({**orjson.loads(raw()), "points": [1]}),
]


@pytest.mark.parametrize("payload", GOOD)
def test_valid_messages_give_the_same_rows_as_the_full_path(payload: bytes) -> None:
    """An ordinary message is accepted by the fast path with the rows the full path would store."""
    expected = full_path(payload, "site-a", "gw-a")
    assert expected is not None and fast(payload) == expected


@pytest.mark.parametrize("payload", BAD)
def test_anything_unusual_falls_back_to_the_full_path(payload: bytes) -> None:
    """Whatever the full path would dead-letter, the fast path declines, so the reason comes from the full path."""
    assert full_path(payload, "site-a", "gw-a") is None
    assert fast(payload) is None


def test_historical_flag_and_sequence_are_kept() -> None:
    """The fast result carries the gateway id, seq and historical flag the writer needs."""
    got = fast_accept(GOOD[3], site="site-a", gateway="gw-a", registry=REG, now_ms=NOW, limits=LIMITS)
    assert got is not None and (got.gateway_id, got.seq, got.historical) == (7, 5, True)
