"""``Acker``: plays ingest for a gateway under test, on any broker (a private one the test may kill).

It records each telemetry batch and acks its seq on the ack topic, as ingest does after commit,
and resubscribes after every reconnect. Its session is clean: what is published while it is
disconnected is lost to it, as it would be to an ingest whose broker forgot its session.
"""

from __future__ import annotations

import queue
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fwcore.contract import Batch, decode_batch, encode_ack, subscription, topic


class Acker:
    """Records every telemetry batch of one gateway, then acks its seq (``ack=False``: ingest is down)."""

    def __init__(self, port: int, site: str, gateway: str, *, ack: bool = True) -> None:
        self.batches: queue.Queue[Batch] = queue.Queue()
        self.seen: list[Batch] = []
        self.ack_topic = topic(site, gateway, "ack")
        self.filter = subscription("telemetry", site, gateway)
        self.ack = ack
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"acker-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(self.filter, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        batch = decode_batch(bytes(message.payload))
        self.batches.put(batch)
        if self.ack:
            client.publish(self.ack_topic, encode_ack([batch.seq], ts=0), qos=1)

    def drain(self) -> list[Batch]:
        """Every batch received so far (in arrival order, repeats included)."""
        while True:
            try:
                self.seen.append(self.batches.get_nowait())
            except queue.Empty:
                return self.seen

    def seqs(self) -> set[int]:
        return {b.seq for b in self.drain()}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
