"""What to send when: live batches first, the disk backlog at a bounded rate, resends after silence.

Every batch is in the :class:`~gateway.buffer.DiskBuffer` before it is handed
to MQTT and leaves it only on ingest's ack. Between those two moments a batch
is in one of three places::

    in flight   handed to paho on this run; paho itself retransmits it after a
                reconnect until the broker PUBACKs it (so we must not resend it) —
                also when paho answered "not connected" (the broker died a moment
                before): paho keeps such a message for its next connection
    backlog     never sent on this run (stored while disconnected, or left by a
                previous run of the process), or PUBACKed but never acked by ingest
                within ``ack_timeout`` (or within ``replay_grace`` of a reconnect:
                the broker may have restarted and lost it)
    suspect     PUBACKed before a reconnect; becomes backlog after ``replay_grace``
                unless the ack arrives first (acks queued in our session usually do)

Live batches are published as soon as they are made; the backlog is replayed
oldest first, at most ``replay_rate`` batches per second, each marked
``historical: true`` with a fresh ``sent_at``. A resend can duplicate a batch
ingest already has: that is the price of at-least-once, and ingest's unique
``(series, time)`` key makes it a no-op.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from typing import Protocol

import orjson
from paho.mqtt.client import MQTT_ERR_QUEUE_SIZE

from gateway.buffer import DiskBuffer
from gateway.config import BufferConfig

log = logging.getLogger(__name__)


class Delivery(Protocol):
    """One publish handed to MQTT: has the broker PUBACKed it? (:class:`gateway.publisher.Sent`)"""

    def is_published(self) -> bool: ...


def _refused(delivery: Delivery) -> bool:
    """paho did not even queue it (its outgoing queue is full): the batch must be sent again later."""
    return getattr(delivery, "rc", 0) == MQTT_ERR_QUEUE_SIZE


def _published(delivery: Delivery) -> bool:
    """Whether the broker has the batch; a delivery that cannot say counts as published.

    paho's own ``MQTTMessageInfo.is_published()`` raises ``RuntimeError`` for a message
    published while its socket was gone, even after the broker acknowledged it. Counting such
    a batch as published makes it a suspect (resent after ``replay_grace`` or ``ack_timeout``
    unless ingest acks it): at worst one duplicate, which ingest's unique key absorbs, never a
    loss and never an exception in the forwarder's callers.
    """
    try:
        return delivery.is_published()
    except (RuntimeError, ValueError) as exc:
        log.debug("delivery state unknown (%s); treating the batch as sent and resending it unless acked", exc)
        return True


def mark_historical(payload: bytes, sent_at: int) -> bytes:
    """The stored live payload rewritten as a replay (``historical: true``, new ``sent_at``)."""
    obj = orjson.loads(payload)
    obj["historical"] = True
    obj["sent_at"] = sent_at
    return orjson.dumps(obj)


class Forwarder:
    """Owns the backlog bookkeeping around one :class:`DiskBuffer`; ``send`` publishes bytes at QoS 1."""

    def __init__(
        self,
        buffer: DiskBuffer,
        send: Callable[[bytes], Delivery],
        config: BufferConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.buffer = buffer
        self.config = config
        self._send = send
        self._clock = clock
        self._wall_ms = wall_ms
        self.connected = False
        self.sent_live = 0
        self.replayed = 0
        self.acked = 0
        #: Publishes paho refused because its outgoing queue was full (the batches stayed on disk).
        self.refused = 0
        self._in_flight: dict[int, tuple[float, Delivery]] = {}
        self._suspect: dict[int, float] = {}
        self._backlog: list[int] = []
        self._in_backlog: set[int] = set()
        self._tokens = 0.0
        self._last_tick = clock()
        self._last_scan = 0.0
        for seq in buffer.seqs():  # left by a previous run: replay all of it
            self._push(seq)

    # --- state ------------------------------------------------------------------------
    @property
    def backlog(self) -> int:
        """Batches waiting to be replayed (may include a few already acked, skipped when reached)."""
        return len(self._backlog)

    def _push(self, seq: int) -> None:
        if seq not in self._in_backlog:
            self._in_backlog.add(seq)
            heapq.heappush(self._backlog, seq)

    # --- events ----------------------------------------------------------------------
    def store(self, batches: list[tuple[int, int, bytes]]) -> int:
        """Write ``(seq, points, payload)`` batches to disk, then publish them live if connected.

        Returns the number of points published live.
        """
        live_points = 0
        dropped = set(self.buffer.put_many(batches))
        for seq in dropped:
            self._forget(seq)
        for seq, points, payload in batches:
            if seq in dropped:
                continue
            if self.connected:
                delivery = self._send(payload)
                if _refused(delivery):  # overload: it stays on disk and is replayed at the bounded rate
                    self.refused += 1
                    self._push(seq)
                    continue
                self._in_flight[seq] = (self._clock(), delivery)
                self.sent_live += 1
                live_points += points
            else:
                self._push(seq)
        return live_points

    def on_connected(self) -> None:
        """PUBACKed-but-unacked batches become suspects: replay them if no ack comes within the grace."""
        self.connected = True
        deadline = self._clock() + self.config.replay_grace
        for seq, (_, delivery) in list(self._in_flight.items()):
            if _published(delivery):
                del self._in_flight[seq]
                self._suspect[seq] = deadline
        n = self.buffer.depth
        if n:
            log.info("broker connected; %d unacknowledged batches on disk, replaying as historical", n)

    def on_disconnected(self) -> None:
        self.connected = False

    def on_ack(self, seqs: list[int]) -> int:
        """Delete acknowledged batches from disk; return how many were held."""
        held = self.buffer.ack(seqs)
        self.acked += held
        for seq in seqs:
            self._forget(seq)
        return held

    def _forget(self, seq: int) -> None:
        self._in_flight.pop(seq, None)
        self._suspect.pop(seq, None)
        # a seq left in the heap is skipped when popped (buffer.get returns None)

    # --- periodic work ---------------------------------------------------------------
    def tick(self) -> int:
        """Expire old batches, promote overdue ones to the backlog, replay within the rate; return replays sent."""
        now = self._clock()
        rate = self.config.replay_rate
        self._tokens = min(rate, self._tokens + (now - self._last_tick) * rate)
        self._last_tick = now
        if now - self._last_scan >= 1.0:
            self._last_scan = now
            for seq in self.buffer.expire():
                self._forget(seq)
            for seq, deadline in list(self._suspect.items()):
                if deadline <= now:
                    del self._suspect[seq]
                    self._push(seq)
            timeout = self.config.ack_timeout
            for seq, (sent, delivery) in list(self._in_flight.items()):
                if now - sent >= timeout and _published(delivery):
                    del self._in_flight[seq]
                    self._push(seq)
        if not self.connected:
            return 0
        sent = 0
        while self._backlog and self._tokens >= 1.0:
            seq = heapq.heappop(self._backlog)
            self._in_backlog.discard(seq)
            if seq in self._in_flight:
                continue
            stored = self.buffer.get(seq)
            if stored is None:  # acked or dropped meanwhile
                continue
            delivery = self._send(mark_historical(stored.payload, self._wall_ms()))
            if _refused(delivery):  # paho's queue is full: try again on a later tick
                self.refused += 1
                self._push(seq)
                break
            self._in_flight[seq] = (now, delivery)
            self._tokens -= 1.0
            sent += 1
        self.replayed += sent
        return sent
