"""Is a gateway alive? The order of its births and deaths, and the heartbeat backstop (pure).

Two signals, and what each can get wrong:

**Birth and death** (the retained ``…/status`` topic). A gateway publishes ``online`` after every
connect; the broker publishes its Last Will ``offline`` when the connection dies. The Will is
composed *before* connecting, so its ``ts`` is older than the birth that follows it: ordered by
time, a killed gateway stayed online forever. Statuses carry a **session** instead (one per MQTT
connection, growing, the same in a connection's Will and birth; ``gateway.publisher``), and
:func:`status_applies` orders them by it::

    session newer than the stored one      applies (a new connection, or the death of one whose birth was missed)
    session older                          ignored (a Will delivered after the gateway reconnected)
    same session, stored online            applies (republished status, or this connection's death)
    same session, stored offline           ignored (a death ends its session), unless ingest only
                                           guessed it from silence and the gateway speaks: online
    no session (a gateway from before)     the newer ``ts`` wins, as before sessions

**Silence** (the backstop). A death can fail to arrive: the broker crashed with the Will, or an old
gateway's Will loses on ``ts``. Every gateway publishes ``…/health`` every ``interval_s`` (default
10 s); :func:`heartbeat_verdict` declares a gateway that ingest has not heard for
:func:`silence_timeout` (the larger of the configured floor and three health intervals) offline,
with reason :data:`NO_HEARTBEAT`, and online again when it is heard from again in the same (or a
newer) session. Only a worker that has been listening for the whole timeout judges: a silence
ingest did not listen to is not the gateway's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: ``gateways.status_reason`` when ingest declared a gateway offline because its heartbeat stopped.
NO_HEARTBEAT = "no heartbeat"
#: ``gateways.status_reason`` when such a gateway was heard from again.
HEARD_AGAIN = "heartbeat resumed"
#: Health intervals of silence that make a gateway dead (at least the configured floor).
MISSED_HEARTBEATS = 3


@dataclass(frozen=True, slots=True)
class StoredStatus:
    """A gateway's status as stored: ``state`` is unknown, online or offline."""

    state: str
    session: int | None = None
    at_ms: int | None = None
    reason: str = ""


def status_applies(stored: StoredStatus, state: str, ts_ms: int, session: int | None) -> bool:
    """Whether a received birth/death (``state``, ``ts_ms``, ``session``) replaces ``stored`` (module docstring)."""
    if session is None:
        return stored.at_ms is None or ts_ms >= stored.at_ms
    if stored.session is None or session > stored.session:
        return True
    if session < stored.session:
        return False
    if stored.state == "online":
        return state == "offline" or stored.at_ms is None or ts_ms >= stored.at_ms
    return stored.state != "offline" or (state == "online" and stored.reason == NO_HEARTBEAT)


@dataclass(frozen=True, slots=True)
class Heard:
    """The last sign of life ingest received from a gateway (a health message or a live birth)."""

    at: float  # monotonic seconds, on the receiving worker
    wall_ms: int  # the same moment, epoch milliseconds
    session: int | None = None
    interval_s: float | None = None  # the gateway's health interval, from its last health message
    buffer: tuple[int, float] | None = None  # disk buffer (depth, oldest unacked age s) of its last health message


def silence_timeout(heard: Heard | None, floor_s: float) -> float:
    """Seconds without a sign of life after which a gateway is dead: ``floor_s``, or three health intervals."""
    if heard is None or heard.interval_s is None:
        return floor_s
    return max(floor_s, MISSED_HEARTBEATS * heard.interval_s)


def heartbeat_verdict(
    stored: StoredStatus, heard: Heard | None, *, now: float, listening_since: float, floor_s: float
) -> Literal["offline", "online"] | None:
    """What the heartbeat says about a gateway: ``offline`` (silent too long), ``online`` (heard again), or nothing.

    ``now`` and ``listening_since`` (when this worker's broker connection began) are monotonic
    seconds. Silence is counted from the later of the last sign of life and ``listening_since``.
    """
    timeout = silence_timeout(heard, floor_s)
    if stored.state == "online":
        last = max(heard.at, listening_since) if heard is not None else listening_since
        return "offline" if now - last >= timeout else None
    if stored.state != "offline" or stored.reason != NO_HEARTBEAT or heard is None:
        return None
    fresh = heard.at >= listening_since and now - heard.at < timeout
    same_or_newer = stored.session is None or heard.session is None or heard.session >= stored.session
    return "online" if fresh and same_or_newer else None
