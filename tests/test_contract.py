"""The wire contract's decoder: every broken payload gets a precise reason."""

from __future__ import annotations

import pytest

from fwcore.contract import Batch, ContractError, Point, decode_batch, encode_batch

GOOD = encode_batch(Batch("gw-a", "site-a", 7, [Point("p-1", "temp", 1_767_225_600_000, 21.5)]))


def test_round_trip() -> None:
    """An encoded batch decodes to the same points."""
    b = decode_batch(GOOD)
    expected = ("gw-a", "site-a", 7, [Point("p-1", "temp", 1_767_225_600_000, 21.5)])
    assert (b.gateway, b.site, b.seq, b.points) == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (GOOD.replace(b"21.5", b"NaN"), "non_finite"),
        (GOOD.replace(b"21.5", b"-Infinity"), "non_finite"),
        (GOOD.replace(b"21.5", b"1e400"), "non_finite"),
        (GOOD.replace(b"21.5", b"NaNx"), "invalid_json"),
        (b"{nope", "invalid_json"),
        (b"\xff", "invalid_utf8"),
        (GOOD.replace(b"21.5", b'"hot"'), "wrong_type"),
        (GOOD.replace(b'"seq":7', b'"seq":true'), "wrong_type"),
        (GOOD.replace(b'"v":1', b'"v":2'), "unsupported_version"),
        (GOOD.replace(b'"seq":7,', b""), "missing_field"),
        (b" " * 1_048_577, "oversized"),
    ],
)
def test_bad_payloads_get_their_reason(payload: bytes, reason: str) -> None:
    """Each class of broken payload is refused with its own reason code."""
    assert payload != GOOD
    with pytest.raises(ContractError) as err:
        decode_batch(payload)
    assert err.value.reason == reason
