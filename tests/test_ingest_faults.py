"""Faults under load: broker restart, PostgreSQL restart, two workers sharing a subscription.

Each test uses its OWN Mosquitto (``tests.support.brokers``) and, where the database
is restarted, its OWN PostgreSQL cluster: the shared services are never touched.
A publisher thread keeps sending while the fault happens; afterwards every
expected ``(series, time)`` is stored exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from fwcore.db import create_database
from ingest import IngestWorker
from ingest.schema import migrate
from tests.support.brokers import PrivateMosquitto
from tests.support.db import PrivatePostgres, scalar
from tests.support.mqtt import ResendingPublisher
from tests.support.registry import NOW_MS, Registered, pts, register
from tests.support.waits import wait_until

BATCHES = 120
POINTS = 25  # per batch; 3,000 points per test


@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    """A private Mosquitto with persistence, so persistent sessions survive its restart."""
    with PrivateMosquitto(persistence=True) as b:
        yield b


def publish_load(url: str, reg: Registered, uid: str, started: threading.Event, pace_s: float = 0.01):
    """A thread publishing BATCHES batches (distinct timestamps) for pump-1; returns (thread, publisher, errors)."""
    pub = ResendingPublisher(url, f"pub-{uid}")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for seq in range(1, BATCHES + 1):
                start = NOW_MS - 3_600_000 + seq * POINTS * 1000
                pub.publish(reg.topic(), reg.batch(seq, pts("pump-1", "temp", POINTS, start_ms=start)))
                if seq == BATCHES // 4:
                    started.set()
                time.sleep(pace_s)  # time must pass: the load is a stream that spans the fault, not one burst
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
            started.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, pub, errors


def assert_exact(db_url: str, reg: Registered) -> None:
    """Every published point is stored once, sequences complete, no gap counted."""
    expected = BATCHES * POINTS
    stored = lambda: scalar(db_url, "SELECT count(*) FROM telemetry")  # noqa: E731
    wait_until(
        lambda: stored() == expected,
        timeout=20,
        what=f"all {expected} points stored",
        observe=lambda: (
            stored(),
            scalar(db_url, "SELECT array[last_seq, seq_gaps] FROM gateways WHERE id = %s", (reg.gateway_id,)),
        ),
    )
    assert scalar(db_url, "SELECT count(DISTINCT (series_id, time)) FROM telemetry") == expected
    assert scalar(db_url, "SELECT array[last_seq, seq_gaps] FROM gateways WHERE id = %s", (reg.gateway_id,)) == [
        BATCHES,
        0,
    ]
    assert scalar(db_url, "SELECT count(*) FROM dead_letters") == 0


def worker(db_url: str, url: str, client_id: str, site: str, **kw) -> IngestWorker:
    kw.setdefault("batch_max_wait_ms", 20)
    return IngestWorker(db_url, url, client_id=client_id, session_expiry_s=300, site_filter=site, **kw)


def test_broker_restart_during_load_loses_and_doubles_nothing(db_url: str, broker: PrivateMosquitto, uid: str) -> None:
    """Mosquitto restarted mid-stream: the worker reconnects to its persistent session and every point lands once."""
    reg = register(db_url, uid)
    w = worker(db_url, broker.url, f"ing-{uid}", reg.site)
    w.start()
    try:
        started = threading.Event()
        t, pub, errors = publish_load(broker.url, reg, uid, started)
        assert started.wait(30)
        broker.restart(down_s=0.5)
        t.join(60)
        assert not errors and not t.is_alive()
        assert_exact(db_url, reg)
        pub.close()
    finally:
        w.stop()


def test_postgres_restart_during_load_loses_and_doubles_nothing(broker: PrivateMosquitto, uid: str) -> None:
    """PostgreSQL stopped (immediate mode) and started mid-stream: workers wait, retry and store every point once."""
    pg = PrivatePostgres()
    pg.start()
    try:
        db_url = create_database(pg.url, f"fw_{uuid.uuid4().hex[:8]}")
        migrate(db_url)
        reg = register(db_url, uid)
        w = worker(db_url, broker.url, f"ing-{uid}", reg.site)
        w.start()
        try:
            started = threading.Event()
            t, pub, errors = publish_load(broker.url, reg, uid, started)
            assert started.wait(30)
            pg.stop(mode="immediate")
            wait_until(lambda: w.stats.db_errors >= 1, timeout=15)
            pg.start()
            t.join(60)
            assert not errors and not t.is_alive()
            assert_exact(db_url, reg)
            assert w.running
            pub.close()
        finally:
            w.stop()
    finally:
        pg.close()


def test_two_workers_sharing_a_subscription_count_exactly_under_load(
    db_url: str, broker: PrivateMosquitto, uid: str
) -> None:
    """Two workers in one MQTT 5 share group store each point exactly once and end with no sequence missing."""
    reg = register(db_url, uid)
    a = worker(db_url, broker.url, f"ing-a-{uid}", reg.site, share_group=f"g-{uid}")
    b = worker(db_url, broker.url, f"ing-b-{uid}", reg.site, share_group=f"g-{uid}")
    a.start()
    b.start()
    try:
        started = threading.Event()
        t, pub, errors = publish_load(broker.url, reg, uid, started, pace_s=0.002)
        t.join(60)
        assert not errors
        expected = BATCHES * POINTS
        wait_until(lambda: a.stats.points + b.stats.points == expected, timeout=30)
        assert scalar(db_url, "SELECT count(*) FROM telemetry") == expected
        assert scalar(db_url, "SELECT count(DISTINCT (series_id, time)) FROM telemetry") == expected
        assert a.stats.messages + b.stats.messages == BATCHES
        assert a.stats.messages > 0 and b.stats.messages > 0
        # Round-robin dispatch commits some batches out of order; each gap so opened was filled again.
        assert scalar(db_url, "SELECT array[last_seq, seq_gaps] FROM gateways WHERE id = %s", (reg.gateway_id,)) == [
            BATCHES,
            0,
        ]
        assert scalar(db_url, "SELECT count(*) FROM gateway_seq_missing") == 0
        skipped = a.stats.gaps + b.stats.gaps
        assert skipped == a.stats.gaps_filled + b.stats.gaps_filled
        pub.close()
    finally:
        a.stop()
        b.stop()
