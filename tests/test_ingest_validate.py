"""Pure ingest logic: validation of decoded batches, status parsing, gap counting, backoff."""

from __future__ import annotations

import pytest

from fwcore.contract import Batch, ContractError, Point, encode_status
from fwcore.retry import backoff_delays
from ingest.validate import parse_status, validate_batch
from ingest.worker import DB_RETRY
from ingest.writer import rejection_dead_letters
from tests.support.validation import DAY, LIMITS, NOW, REG, batch, p


def check(batch: Batch, site: str = "site-a", gateway: str = "gw-a"):
    return validate_batch(batch, site=site, gateway=gateway, registry=REG, now_ms=NOW, limits=LIMITS)


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (p(), None),
        (p(ts=NOW + 300_000), None),  # exactly at the future limit
        (p(ts=NOW + 300_001), "future_timestamp"),
        (p(ts=NOW - 90 * DAY), None),  # exactly at the retention limit
        (p(ts=NOW - 90 * DAY - 1), "too_old"),
        (p(device="pump-3"), "unknown_device"),
        (p(device="pump-9"), "unknown_device"),  # registered, but on another gateway
        (p(device="pump-3", ts=NOW + DAY), "unknown_device"),  # the device is the first thing wrong
        (p(tag=""), "invalid_name"),
        (p(device="pu\x00mp"), "invalid_name"),
    ],
)
def test_each_point_is_accepted_or_refused_with_its_reason(point: Point, reason: str | None) -> None:
    """A point is stored only if its device is registered on the gateway and its time is plausible."""
    v = check(batch([point]))
    assert v.gateway_id == 7
    if reason is None:
        assert [a.point for a in v.accepted] == [point] and v.rejections == []
        assert v.accepted[0].device_id == 101
    else:
        assert v.accepted == []
        assert [(r.reason, r.points) for r in v.rejections] == [(reason, (point,))]


@pytest.mark.parametrize(
    ("b", "site", "gateway", "reason"),
    [
        (batch([p()], gateway="gw-b"), "site-a", "gw-a", "topic_mismatch"),
        (batch([p()], site="site-b"), "site-a", "gw-a", "topic_mismatch"),
        (batch([p()], gateway="gw-x"), "site-a", "gw-x", "unknown_gateway"),
        (batch([p()], gateway="gw-b"), "site-a", "gw-b", "unknown_gateway"),  # registered at another site
        (batch([p()], seq=2**63), "site-a", "gw-a", "invalid_seq"),
    ],
)
def test_whole_message_refusals(b: Batch, site: str, gateway: str, reason: str) -> None:
    """A message whose sender does not match its topic or the registry is refused whole, points and all."""
    v = check(b, site, gateway)
    assert v.rejected_whole and v.gateway_id is None and v.accepted == []
    assert [r.reason for r in v.rejections] == [reason]
    assert v.rejections[0].points == ()


def test_known_points_survive_next_to_unknown_ones() -> None:
    """Refusals are per point: good points of a message are kept, bad ones grouped by reason."""
    good = [p("pump-1"), p("pump-2", tag="flow")]
    unknown = [p("pump-3"), p("pump-4"), p("pump-3", ts=NOW - 1)]
    future = [p("pump-1", ts=NOW + DAY)]
    v = check(batch(good + unknown + future))
    assert [(a.device_id, a.point) for a in v.accepted] == [(101, good[0]), (102, good[1])]
    by_reason = {r.reason: r for r in v.rejections}
    assert by_reason["unknown_device"].points == tuple(unknown)
    assert "'pump-3' (x2)" in by_reason["unknown_device"].detail
    assert by_reason["future_timestamp"].points == tuple(future)
    assert v.missing_devices == {(7, "pump-3"), (7, "pump-4")}


def test_misses_are_reported_for_a_registry_refresh() -> None:
    """An unknown gateway is named so the caller can look it up and validate again."""
    v = check(batch([p()], gateway="gw-new"), gateway="gw-new")
    assert v.missing_gateway == "gw-new"
    assert check(batch([p()])).missing_gateway is None


def test_point_dead_letters_keep_only_the_refused_points() -> None:
    """A point-level dead letter is a replayable batch of just the refused points; a whole refusal keeps the bytes."""
    b = batch([p("pump-1"), p("pump-3")], seq=5)
    v = check(b)
    [dl] = rejection_dead_letters("t", b"raw", b, v.rejections)
    assert dl.reason == "unknown_device"
    from fwcore.contract import decode_batch

    replay = decode_batch(dl.payload)
    assert (replay.seq, replay.gateway, [x.device for x in replay.points]) == (5, "gw-a", ["pump-3"])
    whole = check(batch([p()], gateway="gw-x"), gateway="gw-x")
    assert rejection_dead_letters("t", b"raw", b, whole.rejections)[0].payload == b"raw"


def test_status_payload_is_parsed() -> None:
    """A birth/death message yields state and time."""
    s = parse_status(encode_status("offline", gateway="gw-a", ts=NOW, reason="lwt"), gateway="gw-a")
    assert (s.state, s.ts_ms, s.reason) == ("offline", NOW, "lwt")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{nope", "invalid_json"),
        (b"\xff\xfe", "invalid_utf8"),
        (b"[]", "wrong_type"),
        (b'{"gateway": "gw-a", "state": "online"}', "missing_field"),
        (b'{"gateway": "gw-a", "state": "asleep", "ts": 1}', "wrong_type"),
        (b'{"gateway": "gw-a", "state": "online", "ts": true}', "wrong_type"),
        (b'{"gateway": "gw-b", "state": "online", "ts": 1}', "topic_mismatch"),
    ],
)
def test_bad_status_payloads(payload: bytes, reason: str) -> None:
    """A status payload that breaks the contract is refused with a reason code."""
    with pytest.raises(ContractError) as info:
        parse_status(payload, gateway="gw-a")
    assert info.value.reason == reason


def test_backoff_grows_to_a_cap_with_jitter() -> None:
    """Retry delays double up to the cap and stay within [delay/2, delay]."""
    top = iter([1.0] * 10)
    low = iter([0.0] * 10)
    gen_hi = backoff_delays(**{**DB_RETRY, "cap": 1.0}, rand=lambda: next(top))
    gen_lo = backoff_delays(**{**DB_RETRY, "cap": 1.0}, rand=lambda: next(low))
    assert [round(next(gen_hi), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert [round(next(gen_lo), 3) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
