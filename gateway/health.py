"""Gateway health: per-device poll statistics, the ``health`` payload and Prometheus metrics.

The poll loop only adds numbers to :class:`DeviceHealth` (no locks, no metric
objects on the hot path). Two readers turn them into something useful:

* :func:`health_payload` — a pure function building the JSON object published
  every ``health_interval`` seconds on ``fw/v1/{site}/{gateway}/health`` (QoS 0);
* :class:`GatewayCollector` — a Prometheus collector that reads the same numbers
  at scrape time, registered in the gateway's own :class:`CollectorRegistry`
  (``fieldwatch gateway run --metrics-port 9108`` serves it over HTTP).

Health payload (``v`` 1)::

    {"v": 1, "gateway": "gw-01", "site": "plant-north", "ts": 1767225600000,
     "session": 1767222000123, "interval_s": 10.0,
     "uptime_s": 3600.0, "mqtt": {"connected": true, "reconnects": 1},
     "points": {"buffered": 36000, "published": 35800, "suppressed": 1200},
     "buffer": {"depth": 0, "bytes": 0, "oldest_unacked_age_s": 0.0,
                "dropped_batches": 0, "dropped_points": 0},
     "devices": {"pump-1": {"online": true, "error": "", "polls": 3600,
                            "poll_latency_ms": 4.1, "poll_latency_avg_ms": 3.9,
                            "overruns": 0, "reconnects": 0}}}

The health message is also the gateway's heartbeat: ``session`` is the status session of its
MQTT connection (``gateway.publisher``; absent in Sparkplug B mode) and ``interval_s`` how often
it comes, so ingest can tell a silent gateway from a live one (``ingest.liveness``).

``points.buffered`` counts the readings written to the disk buffer (every reading that
is to be sent, once, in fieldwatch mode; in Sparkplug B mode only those stored while the
broker was unreachable); ``points.published`` counts those of them handed to MQTT at once,
while connected. The difference waited on disk and was replayed (or still waits).

An *overrun* is a poll that took longer than the device's poll interval (the
device cannot keep up: lengthen the interval, raise pacing, or split the tags).
A *reconnect* is a successful connect after the first one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

HEALTH_VERSION = 1


@dataclass(slots=True)
class DeviceHealth:
    """Counters of one device's poll task."""

    online: bool = False
    error: str = ""
    polls: int = 0
    failures: int = 0
    overruns: int = 0
    connects: int = 0
    poll_seconds_total: float = 0.0
    last_latency: float = 0.0

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def record_poll(self, latency: float, interval: float) -> None:
        """A poll finished in ``latency`` seconds; it overran if it took longer than ``interval``."""
        self.polls += 1
        self.poll_seconds_total += latency
        self.last_latency = latency
        if latency > interval:
            self.overruns += 1


@dataclass(slots=True)
class BufferHealth:
    """What the disk buffer looks like right now (filled in by the agent)."""

    depth: int = 0
    bytes: int = 0
    oldest_unacked_age_s: float = 0.0
    dropped_batches: int = 0
    dropped_points: int = 0


@dataclass(slots=True)
class HealthSnapshot:
    """Everything one health message or one scrape reports."""

    gateway: str
    site: str
    ts_ms: int
    uptime_s: float
    mqtt_connected: bool
    mqtt_reconnects: int
    points_published: int
    points_suppressed: int
    buffer: BufferHealth
    devices: dict[str, DeviceHealth] = field(default_factory=dict)
    points_buffered: int = 0
    session: int | None = None
    interval_s: float | None = None


def health_payload(s: HealthSnapshot) -> dict[str, Any]:
    """The JSON object published on the health topic (see the module docstring)."""
    return {
        "v": HEALTH_VERSION,
        "gateway": s.gateway,
        "site": s.site,
        "ts": s.ts_ms,
        **({"session": s.session} if s.session is not None else {}),
        **({"interval_s": s.interval_s} if s.interval_s is not None else {}),
        "uptime_s": round(s.uptime_s, 3),
        "mqtt": {"connected": s.mqtt_connected, "reconnects": s.mqtt_reconnects},
        "points": {"buffered": s.points_buffered, "published": s.points_published, "suppressed": s.points_suppressed},
        "buffer": {
            "depth": s.buffer.depth,
            "bytes": s.buffer.bytes,
            "oldest_unacked_age_s": round(s.buffer.oldest_unacked_age_s, 3),
            "dropped_batches": s.buffer.dropped_batches,
            "dropped_points": s.buffer.dropped_points,
        },
        "devices": {
            name: {
                "online": d.online,
                "error": d.error,
                "polls": d.polls,
                "poll_latency_ms": round(d.last_latency * 1000, 3),
                "poll_latency_avg_ms": round(d.poll_seconds_total / d.polls * 1000, 3) if d.polls else 0.0,
                "overruns": d.overruns,
                "reconnects": d.reconnects,
            }
            for name, d in s.devices.items()
        },
    }


class GatewayCollector(Collector):
    """Prometheus view of a :class:`HealthSnapshot`, read at scrape time (``fieldwatch_gateway_*``)."""

    def __init__(self, snapshot: Callable[[], HealthSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self._snapshot()
        gw = [s.site, s.gateway]
        labels = ["site", "gateway"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"fieldwatch_gateway_{name}", doc, labels=labels)
            g.add_metric(gw, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"fieldwatch_gateway_{name}", doc, labels=labels)
            c.add_metric(gw, value)
            return c

        yield gauge("up_seconds", "Seconds since the gateway started.", s.uptime_s)
        yield gauge("mqtt_connected", "1 while the broker connection is up.", float(s.mqtt_connected))
        yield counter("mqtt_reconnects", "Broker reconnects after the first connect.", s.mqtt_reconnects)
        yield counter(
            "points_buffered",
            "Readings written to the disk buffer to be sent (Sparkplug B: only while the broker is unreachable).",
            s.points_buffered,
        )
        yield counter(
            "points_published",
            "Readings handed to MQTT as soon as they were buffered (broker connected); not replays of the backlog.",
            s.points_published,
        )
        yield counter(
            "points_suppressed", "Readings not sent because they stayed in their deadband.", s.points_suppressed
        )
        yield gauge("buffer_batches", "Batches on disk waiting for ingest's ack.", s.buffer.depth)
        yield gauge("buffer_bytes", "Payload bytes on disk waiting for ingest's ack.", s.buffer.bytes)
        yield gauge(
            "buffer_oldest_age_seconds",
            "Age of the oldest batch not yet acked by ingest.",
            s.buffer.oldest_unacked_age_s,
        )
        yield counter(
            "buffer_dropped_batches", "Batches dropped by the buffer's size/age policy.", s.buffer.dropped_batches
        )
        yield counter(
            "buffer_dropped_points", "Points dropped by the buffer's size/age policy.", s.buffer.dropped_points
        )

        dl = [*labels, "device"]
        online = GaugeMetricFamily("fieldwatch_gateway_device_online", "1 while the device answers.", labels=dl)
        latency = SummaryMetricFamily(
            "fieldwatch_gateway_poll_seconds", "Time to poll every tag of a device.", labels=dl
        )
        overruns = CounterMetricFamily(
            "fieldwatch_gateway_poll_overruns", "Polls that took longer than the poll interval.", labels=dl
        )
        reconnects = CounterMetricFamily(
            "fieldwatch_gateway_device_reconnects", "Device reconnects after the first connect.", labels=dl
        )
        failures = CounterMetricFamily("fieldwatch_gateway_poll_failures", "Polls that failed as a whole.", labels=dl)
        for name, d in s.devices.items():
            lv = [*gw, name]
            online.add_metric(lv, float(d.online))
            latency.add_metric(lv, count_value=d.polls, sum_value=d.poll_seconds_total)
            overruns.add_metric(lv, d.overruns)
            reconnects.add_metric(lv, d.reconnects)
            failures.add_metric(lv, d.failures)
        yield from (online, latency, overruns, reconnects, failures)
