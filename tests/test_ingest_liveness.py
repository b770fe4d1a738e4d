"""Which birth or death wins, and what silence means: the pure rules of ingest.liveness, as tables."""

from __future__ import annotations

import pytest

from ingest.liveness import NO_HEARTBEAT, Heard, StoredStatus, heartbeat_verdict, silence_timeout, status_applies
from ingest.validate import parse_status

ONLINE_S5 = StoredStatus("online", 5, 1_000, "connected")
OFFLINE_S5 = StoredStatus("offline", 5, 2_000, "connection lost")
SILENT_S5 = StoredStatus("offline", 5, 2_000, NO_HEARTBEAT)
OLD_ONLINE = StoredStatus("online", None, 1_000, "connected")


@pytest.mark.parametrize(
    ("stored", "state", "ts", "session", "applies"),
    [
        (StoredStatus("unknown"), "online", 1, 5, True),  # first birth ever
        (ONLINE_S5, "offline", 500, 5, True),  # its own Will: older ts, same session, wins
        (ONLINE_S5, "offline", 9_000, 4, False),  # a Will of an earlier connection, however new its ts
        (ONLINE_S5, "online", 2_000, 5, True),  # republished status of the session
        (ONLINE_S5, "online", 500, 5, False),  # an older republish of the session, delivered late
        (ONLINE_S5, "online", 1, 6, True),  # the birth of the next connection (a Will of 5 was missed)
        (ONLINE_S5, "offline", 1, 6, True),  # the death of a connection whose birth was missed
        (OFFLINE_S5, "online", 9_000, 5, False),  # nothing revives a session after its death
        (OFFLINE_S5, "offline", 9_000, 5, False),  # a retained Will seen again: not a new death
        (OFFLINE_S5, "online", 1, 6, True),  # the next connection's birth
        (SILENT_S5, "online", 3_000, 5, True),  # silence was a guess: the session speaks again
        (SILENT_S5, "offline", 3_000, 5, False),  # ...its Will adds nothing
        (OLD_ONLINE, "offline", 2_000, None, True),  # gateways without sessions: the newer ts wins
        (OLD_ONLINE, "offline", 500, None, False),
        (OLD_ONLINE, "online", 1, 3, True),  # a gateway upgraded to sessions
    ],
)
def test_status_order_is_by_session_then_death_wins(
    stored: StoredStatus, state: str, ts: int, session: int | None, applies: bool
) -> None:
    """A newer session wins, an older one never does, and within a session a death ends it."""
    assert status_applies(stored, state, ts, session) is applies


@pytest.mark.parametrize(
    ("stored", "heard", "now", "verdict"),
    [
        (ONLINE_S5, Heard(100.0, 0, 5, 10.0), 129.0, None),  # 29 s quiet < 30 s (3 x 10 s intervals)
        (ONLINE_S5, Heard(100.0, 0, 5, 10.0), 130.0, "offline"),
        (ONLINE_S5, Heard(100.0, 0, 5, 1.0), 119.0, None),  # the floor (20 s) beats 3 x 1 s
        (ONLINE_S5, None, 119.0, None),  # never heard: silence counts from when ingest began listening
        (ONLINE_S5, None, 120.0, "offline"),
        (ONLINE_S5, Heard(50.0, 0, 5, 10.0), 129.0, None),  # heard before ingest listened: counts from then
        (SILENT_S5, Heard(125.0, 0, 5, 10.0), 130.0, "online"),  # heard again in the same session
        (SILENT_S5, Heard(125.0, 0, 6, 10.0), 130.0, "online"),  # or a newer one
        (SILENT_S5, Heard(125.0, 0, 4, 10.0), 130.0, None),  # a stale session is no sign of life
        (SILENT_S5, Heard(90.0, 0, 5, 10.0), 130.0, None),  # heard before listening: not fresh
        (OFFLINE_S5, Heard(125.0, 0, 5, 10.0), 130.0, None),  # a real death is not revived by silence rules
    ],
)
def test_heartbeat_verdict_after_silence_and_when_heard_again(
    stored: StoredStatus, heard: Heard | None, now: float, verdict: str | None
) -> None:
    """Silence for max(floor, three health intervals) turns a gateway offline; a fresh heartbeat undoes only that."""
    assert heartbeat_verdict(stored, heard, now=now, listening_since=100.0, floor_s=20.0) == verdict


def test_silence_timeout_is_the_floor_or_three_health_intervals() -> None:
    """Three missed health messages, never less than the configured floor."""
    assert silence_timeout(None, 60.0) == 60.0
    assert silence_timeout(Heard(0.0, 0, None, 30.0), 60.0) == 90.0
    assert silence_timeout(Heard(0.0, 0, None, None), 60.0) == 60.0


def test_status_session_is_optional_and_checked() -> None:
    """A status without a session parses (older gateways); a session that is not a non-negative integer is refused."""
    assert parse_status(b'{"gateway":"g","state":"online","ts":1}', gateway="g").session is None
    assert parse_status(b'{"gateway":"g","state":"online","ts":1,"session":7}', gateway="g").session == 7
    for bad in (b'"7"', b"-1", b"true", b"1.5"):
        with pytest.raises(ValueError, match="session"):
            parse_status(b'{"gateway":"g","state":"online","ts":1,"session":' + bad + b"}", gateway="g")
