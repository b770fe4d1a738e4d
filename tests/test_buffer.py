"""The disk buffer and the forwarder on a real SQLite file: bounds, drops, reopen, live-first replay."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from fwcore.contract import Batch, Point, decode_batch, encode_batch
from gateway.buffer import DiskBuffer
from gateway.config import BufferConfig
from gateway.errors import DiskBufferError
from gateway.forward import Forwarder
from tests.support.clocks import FakeClock


def row(seq: int, n: int = 3) -> tuple[int, int, bytes]:
    batch = Batch("gw", "site", seq, [Point("d", f"t{i}", 1000 * seq, float(i)) for i in range(n)], sent_at=5)
    return seq, n, encode_batch(batch)


@dataclass
class FakeDelivery:
    published: bool = False

    def is_published(self) -> bool:
        return self.published


class Sent:
    """Records what the forwarder hands to MQTT."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.deliveries: list[FakeDelivery] = []

    def __call__(self, payload: bytes) -> FakeDelivery:
        self.payloads.append(payload)
        self.deliveries.append(FakeDelivery())
        return self.deliveries[-1]

    def batches(self) -> list[Batch]:
        return [decode_batch(p) for p in self.payloads]


def test_put_ack_and_reopen_keep_exactly_the_unacked_batches(tmp_path: Path) -> None:
    """Batches survive closing and reopening the file; acked ones are gone; unknown acks count zero."""
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path)
    assert buf.put_many([row(1), row(2), row(3)]) == []
    assert buf.ack([2, 99]) == 1
    buf.close()
    buf.close()
    again = DiskBuffer(path)
    assert again.seqs() == [1, 3]
    assert again.depth == 2 and again.bytes == len(row(1)[2]) + len(row(3)[2])
    stored = again.get(3)
    assert stored is not None and decode_batch(stored.payload).seq == 3
    assert again.get(2) is None
    assert again.max_seq() == 3
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


def test_byte_bound_drops_the_oldest_and_counts_and_logs_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Over max_bytes the oldest batches are deleted, counted by reason with their points, and logged."""
    size = len(row(1)[2])
    buf = DiskBuffer(tmp_path / "b.sqlite", max_bytes=size * 3)
    buf.put_many([row(1), row(2), row(3)])
    with caplog.at_level(logging.WARNING, logger="gateway.buffer"):
        dropped = buf.put_many([row(4), row(5)])
    assert dropped == [1, 2]
    assert buf.seqs() == [3, 4, 5]
    assert buf.drops.batches == {"max_bytes": 2} and buf.drops.points == {"max_bytes": 6}
    assert "dropped 2 unacknowledged batches (seq 1..2, 6 points)" in caplog.text
    buf.close()


def test_age_bound_expires_old_batches(tmp_path: Path) -> None:
    """Batches older than max_age are expired (counted); younger ones stay."""
    clock = FakeClock(1_000_000.0)
    buf = DiskBuffer(tmp_path / "b.sqlite", max_age=60, clock=clock)
    buf.put_many([row(1)])
    clock.advance(50)
    buf.put_many([row(2)])
    clock.advance(20)
    assert buf.expire() == [1]
    assert buf.seqs() == [2]
    assert buf.dropped_batches == 1 and buf.drops.batches == {"max_age": 1}
    assert buf.oldest_created_ms() == int((clock.t - 20) * 1000)
    buf.close()


def test_unusable_file_raises_our_error_naming_it(tmp_path: Path) -> None:
    """A buffer path that is not a database raises DiskBufferError with the path and advice."""
    path = tmp_path / "b.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DiskBufferError, match=r"b\.sqlite.*move the file aside"):
        DiskBuffer(path)


def test_forwarder_sends_live_when_connected_and_buffers_while_offline(tmp_path: Path) -> None:
    """Offline batches wait on disk; after connecting, live goes out at once and the backlog as historical."""
    buf = DiskBuffer(tmp_path / "b.sqlite")
    sent = Sent()
    clock = FakeClock()
    fw = Forwarder(buf, sent, BufferConfig(replay_rate=2.0), clock=clock, wall_ms=lambda: 777)
    fw.store([row(1), row(2), row(3)])
    assert sent.payloads == [] and fw.backlog == 3
    fw.on_connected()
    assert fw.store([row(4)]) == 3
    assert [b.seq for b in sent.batches()] == [4]
    clock.advance(1.0)
    fw.tick()  # 2 tokens per second
    replays = sent.batches()[1:]
    assert [(b.seq, b.historical, b.sent_at) for b in replays] == [(1, True, 777), (2, True, 777)]
    clock.advance(1.0)
    fw.tick()
    assert [b.seq for b in sent.batches()] == [4, 1, 2, 3]
    assert buf.depth == 4  # nothing leaves the disk before ingest acks
    assert fw.on_ack([1, 2, 3, 4]) == 4 and buf.depth == 0
    buf.close()


def test_forwarder_replays_a_previous_runs_batches_and_skips_acked_ones(tmp_path: Path) -> None:
    """Batches left on disk by an earlier process are replayed; one acked before its turn is skipped."""
    path = tmp_path / "b.sqlite"
    first = DiskBuffer(path)
    first.put_many([row(1), row(2), row(3)])
    first.close()
    buf = DiskBuffer(path)
    sent = Sent()
    clock = FakeClock()
    fw = Forwarder(buf, sent, BufferConfig(replay_rate=100.0), clock=clock)
    fw.on_connected()
    fw.on_ack([2])
    clock.advance(1.0)
    fw.tick()
    assert [b.seq for b in sent.batches()] == [1, 3]
    buf.close()


def test_pubacked_but_unacked_batches_are_resent_after_grace_and_in_flight_ones_are_left_to_paho(
    tmp_path: Path,
) -> None:
    """After a reconnect a PUBACKed batch without ingest's ack is replayed after the grace; one
    paho still retransmits is not; one acked during the grace is not."""
    buf = DiskBuffer(tmp_path / "b.sqlite")
    sent = Sent()
    clock = FakeClock()
    fw = Forwarder(buf, sent, BufferConfig(replay_grace=2.0, replay_rate=100.0), clock=clock)
    fw.on_connected()
    fw.store([row(1), row(2), row(3)])
    sent.deliveries[0].published = True  # broker had seq 1
    sent.deliveries[2].published = True  # and seq 3
    fw.on_disconnected()
    fw.on_connected()
    fw.on_ack([3])  # a late ack from our session
    clock.advance(1.0)
    fw.tick()
    assert len(sent.payloads) == 3  # still within the grace
    clock.advance(1.5)
    fw.tick()
    resent = sent.batches()[3:]
    assert [(b.seq, b.historical) for b in resent] == [(1, True)]
    buf.close()


def test_ack_timeout_resends_a_batch_ingest_never_acknowledged(tmp_path: Path) -> None:
    """A PUBACKed batch with no ack for ack_timeout seconds is resent as historical, once per timeout."""
    buf = DiskBuffer(tmp_path / "b.sqlite")
    sent = Sent()
    clock = FakeClock()
    fw = Forwarder(buf, sent, BufferConfig(ack_timeout=10.0, replay_rate=100.0), clock=clock)
    fw.on_connected()
    fw.store([row(1)])
    sent.deliveries[0].published = True
    clock.advance(9.0)
    fw.tick()
    assert len(sent.payloads) == 1
    clock.advance(2.0)
    fw.tick()
    clock.advance(0.5)
    fw.tick()
    assert [(b.seq, b.historical) for b in sent.batches()] == [(1, False), (1, True)]
    assert orjson.loads(sent.payloads[1])["points"] == orjson.loads(sent.payloads[0])["points"]
    buf.close()
