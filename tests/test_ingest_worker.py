"""IngestWorker end to end: real Mosquitto in, real PostgreSQL out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import psycopg
import pytest

from fwcore.contract import Point, decode_ack, encode_batch, encode_status
from ingest import CommittedPoint, IngestWorker
from ingest.hold import HoldLimits
from tests.support.db import scalar
from tests.support.mqtt import forget_session, listener, publisher
from tests.support.registry import NOW_MS, Registered, add_device, pts, register
from tests.support.waits import wait_until

SESSION_S = 60  # long enough for a restart within a test, short enough not to pile up in the broker


@contextmanager
def running(db_url: str, mqtt_url: str, client_id: str, site: str, **kw) -> Iterator[IngestWorker]:
    """A started worker that only hears ``site`` (the broker is shared with other tests)."""
    kw.setdefault("batch_max_wait_ms", 20)
    kw.setdefault("site_filter", site)
    worker = IngestWorker(db_url, mqtt_url, client_id=client_id, session_expiry_s=SESSION_S, **kw)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        forget_session(mqtt_url, client_id, kw.get("protocol", "5"))


def telemetry_count(db_url: str, reg: Registered) -> int:
    return scalar(  # type: ignore[return-value]
        db_url,
        "SELECT count(*) FROM telemetry t JOIN series s ON s.id = t.series_id JOIN devices d ON d.id = s.device_id"
        " WHERE d.gateway_id = %s",
        (reg.gateway_id,),
    )


def dead_reasons(db_url: str, uid: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT reason FROM dead_letters WHERE topic LIKE %s ORDER BY id", (f"%{uid}%",))
        return [r[0] for r in rows]


def test_valid_batches_land_exactly_once(db_url: str, mqtt_url: str, uid: str) -> None:
    """Points published twice under the same sequence are stored once; the redelivery is counted as duplicates."""
    reg = register(db_url, uid)
    batch = reg.batch(1, pts("pump-1", "temp", 5) + pts("pump-2", "temp", 5))
    with running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        publish(reg.topic(), batch)
        publish(reg.topic(), batch)
        wait_until(lambda: w.stats.messages >= 2)
        stats = w.stats
    assert telemetry_count(db_url, reg) == 10
    assert (stats.points, stats.duplicates, stats.dead_letters) == (10, 10, 0)
    assert scalar(db_url, "SELECT last_seq FROM gateways WHERE id = %s", (reg.gateway_id,)) == 1


def test_a_different_value_for_a_stored_timestamp_is_kept_aside_not_dropped(
    db_url: str, mqtt_url: str, uid: str
) -> None:
    """The first value of a (device, tag, time) stays; a different one later, or later in the same batch, is counted
    and dead-lettered as ``conflicting_value`` with a replayable batch of just those points; the same value again is
    a silent redelivery."""
    from prometheus_client import REGISTRY

    from fwcore.contract import decode_batch

    reg = register(db_url, uid)
    t = NOW_MS - 30_000
    first = reg.batch(1, [Point("pump-1", "temp", t, 20.0), Point("pump-2", "temp", t, 5.0)])
    # seq 2: pump-1 again with another value (conflict), pump-2 with the same value (redelivery), one new point,
    # and a point given twice in the batch itself with two values (the first of them is stored).
    second = reg.batch(
        2,
        [
            Point("pump-1", "temp", t, 21.5),
            Point("pump-2", "temp", t, 5.0),
            Point("pump-1", "temp", t + 1000, 7.0),
            Point("pump-2", "flow", t, 1.0),
            Point("pump-2", "flow", t, 1.25, quality=1),
        ],
    )
    client = f"ing-{uid}"
    with running(db_url, mqtt_url, client, reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        publish(reg.topic(), first)
        wait_until(lambda: w.stats.messages >= 1)
        publish(reg.topic(), second)
        wait_until(lambda: w.stats.messages >= 2)
        stats = w.stats
    assert (stats.points, stats.duplicates, stats.conflicts, stats.dead_letters) == (4, 1, 2, 1)
    assert REGISTRY.get_sample_value("fieldwatch_ingest_conflicting_points_total", {"worker": client}) == 2
    assert (
        REGISTRY.get_sample_value(
            "fieldwatch_ingest_dead_letters_total", {"worker": client, "reason": "conflicting_value"}
        )
        == 1
    )
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            """SELECT d.key, s.tag, t.value, t.quality FROM telemetry t JOIN series s ON s.id = t.series_id
               JOIN devices d ON d.id = s.device_id WHERE d.gateway_id = %s AND t.time = to_timestamp(%s / 1000.0)
               ORDER BY 1, 2""",
            (reg.gateway_id, t),
        ).fetchall()
        assert stored == [("pump-1", "temp", 20.0, 0), ("pump-2", "flow", 1.0, 0), ("pump-2", "temp", 5.0, 0)]
        [(topic_, payload, detail)] = conn.execute(
            "SELECT topic, payload, detail FROM dead_letters WHERE reason = 'conflicting_value'"
        ).fetchall()
    assert topic_ == reg.topic()
    kept = decode_batch(payload)
    assert (kept.gateway, kept.site, kept.seq) == (reg.gateway, reg.site, 2)
    assert [(p.device, p.tag, p.ts, p.value, p.quality) for p in kept.points] == [
        ("pump-1", "temp", t, 21.5, 0),
        ("pump-2", "flow", t, 1.25, 1),
    ]
    assert "pump-1/temp" in detail and "20" in detail and "21.5" in detail


def _payload(reg: Registered, **over: object) -> bytes:
    obj = orjson.loads(encode_batch(reg.batch(1, pts("pump-1", "temp", 1))))
    obj.update(over)
    return orjson.dumps(obj)


def test_every_invalid_class_is_dead_lettered_and_ingest_keeps_going(db_url: str, mqtt_url: str, uid: str) -> None:
    """Broken payloads become dead letters with the contract's reason, each acked, and valid data still flows."""
    reg = register(db_url, uid)
    point = {"device": "pump-1", "tag": "t", "ts": NOW_MS, "value": 1.0}
    cases = [
        (b"{not json", "invalid_json"),
        (_payload(reg).replace(b'"value":1.0', b'"value":NaN'), "non_finite"),
        (_payload(reg).replace(b'"value":1.0', b'"value":1e400'), "non_finite"),
        (b"\xff\xfe\xfd", "invalid_utf8"),
        (b"[1, 2]", "wrong_type"),
        (_payload(reg, points=[{**point, "value": "hot"}]), "wrong_type"),
        (_payload(reg, seq=None).replace(b'"seq":null,', b""), "missing_field"),
        (_payload(reg, v=2), "unsupported_version"),
        (b" " * 1_048_577, "oversized"),
        (_payload(reg, gateway="gw-other"), "topic_mismatch"),
    ]
    unknown = Registered(f"site-{uid}", f"gw-unknown-{uid}", 0, {})
    with running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        for payload, _ in cases:
            publish(reg.topic(), payload)
        publish(unknown.topic(), encode_batch(unknown.batch(1, [Point("pump-1", "t", NOW_MS, 1.0)])))
        publish(reg.topic(), reg.batch(2, pts("pump-1", "temp", 3)))
        wait_until(lambda: w.stats.messages >= len(cases) + 2)
        assert w.running
    assert sorted(dead_reasons(db_url, uid)) == sorted([r for _, r in cases] + ["unknown_gateway"])
    assert telemetry_count(db_url, reg) == 3


def test_unknown_device_points_are_dead_lettered_next_to_stored_known_ones(
    db_url: str, mqtt_url: str, uid: str
) -> None:
    """With holding off, points of an unregistered device go to dead letters; a device registered later is found
    without a restart (with holding on they are held: tests/test_ingest_discovery.py)."""
    reg = register(db_url, uid)
    no_hold = HoldLimits(max_points=0)
    with (
        running(db_url, mqtt_url, f"ing-{uid}", reg.site, hold=no_hold) as w,
        publisher(mqtt_url, f"pub-{uid}") as publish,
    ):
        publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 4) + pts("pump-new", "temp", 2)))
        wait_until(lambda: w.stats.messages >= 1)
        assert telemetry_count(db_url, reg) == 4
        assert dead_reasons(db_url, uid) == ["unknown_device"]
        with psycopg.connect(db_url, autocommit=True) as conn:
            add_device(conn, None, reg.gateway_id, "pump-new")
        # The worker asked about pump-new just now; within about a second it asks again and finds it.
        for seq in range(2, 40):
            publish(reg.topic(), reg.batch(seq, pts("pump-new", "temp", 1, start_ms=NOW_MS - seq)))
            wait_until(lambda s=seq: w.stats.messages >= s, what=f"batch {seq} consumed")
            if telemetry_count(db_url, reg) > 4:
                break
        assert telemetry_count(db_url, reg) == 5


def test_application_ack_follows_the_commit(db_url: str, mqtt_url: str, uid: str) -> None:
    """The gateway's ack topic receives the committed sequences, and the rows are in the database by then."""
    reg = register(db_url, uid)
    seen_rows: list[int] = []
    with (
        listener(mqtt_url, f"lis-{uid}", reg.topic("ack")) as acks,
        running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w,
        publisher(mqtt_url, f"pub-{uid}") as publish,
    ):
        for seq in (1, 2, 3):
            publish(reg.topic(), reg.batch(seq, pts("pump-1", "temp", 2, start_ms=NOW_MS - seq * 10_000)))
        wait_until(lambda: {s for a in acks for s in decode_ack(a)} == {1, 2, 3})
        seen_rows.append(telemetry_count(db_url, reg))
        assert w.stats.messages == 3
    assert seen_rows == [6]


def test_sequence_gap_is_counted(db_url: str, mqtt_url: str, uid: str) -> None:
    """Sequences 1, 2, 5 (and 2 again) count two missing batches; the redelivered 2 counts none."""
    reg = register(db_url, uid)
    with running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        for seq in (1, 2, 5, 2):
            publish(reg.topic(), reg.batch(seq, []))
            wait_until(lambda n=w.stats.messages: w.stats.messages > n)
        assert w.stats.gaps == 2
    row = scalar(db_url, "SELECT array[last_seq, seq_gaps] FROM gateways WHERE id = %s", (reg.gateway_id,))
    assert row == [5, 2]


def test_on_commit_hooks_get_new_points_and_a_failing_hook_is_harmless(db_url: str, mqtt_url: str, uid: str) -> None:
    """Hooks see each committed point once (not redeliveries); a hook that raises does not stop ingest."""
    reg = register(db_url, uid)
    got: list[CommittedPoint] = []

    def broken(points: list[CommittedPoint]) -> None:
        raise RuntimeError("hook bug")

    batch = reg.batch(1, pts("pump-1", "temp", 3), historical=True)
    with (
        running(db_url, mqtt_url, f"ing-{uid}", reg.site, on_commit=[broken, got.extend]) as w,
        publisher(mqtt_url, f"pub-{uid}") as publish,
    ):
        publish(reg.topic(), batch)
        publish(reg.topic(), batch)
        publish(reg.topic(), reg.batch(2, pts("pump-2", "flow", 1)))
        wait_until(lambda: w.stats.messages >= 3)
    assert sorted((p.device_key, p.tag, p.ts_ms, p.historical) for p in got) == sorted(
        [("pump-1", "temp", p.ts, True) for p in batch.points] + [("pump-2", "flow", NOW_MS - 60_000, False)]
    )
    assert {p.device_id for p in got} == {reg.devices["pump-1"], reg.devices["pump-2"]}
    assert all(p.gateway_id == reg.gateway_id and p.series_id > 0 for p in got)


def test_mqtt_311_works_too(db_url: str, mqtt_url: str, uid: str) -> None:
    """With MQTT 3.1.1 (no shared subscriptions, clean_session=False) points land the same way."""
    reg = register(db_url, uid)
    with (
        running(db_url, mqtt_url, f"ing-{uid}", reg.site, protocol="3.1.1", share_group="ignored") as w,
        publisher(mqtt_url, f"pub-{uid}") as publish,
    ):
        publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 7)))
        wait_until(lambda: w.stats.messages >= 1)
    assert telemetry_count(db_url, reg) == 7


def test_shared_subscription_on_mqtt5(db_url: str, mqtt_url: str, uid: str) -> None:
    """Two workers in one share group split the messages; together they store each point once."""
    reg = register(db_url, uid)
    group = f"grp-{uid}"
    with (
        running(db_url, mqtt_url, f"ing-a-{uid}", reg.site, share_group=group) as a,
        running(db_url, mqtt_url, f"ing-b-{uid}", reg.site, share_group=group) as b,
        publisher(mqtt_url, f"pub-{uid}") as publish,
    ):
        for seq in range(1, 21):
            publish(reg.topic(), reg.batch(seq, pts("pump-1", "temp", 1, start_ms=NOW_MS - seq * 1000)))
        wait_until(lambda: a.stats.messages + b.stats.messages >= 20)
    assert telemetry_count(db_url, reg) == 20
    assert a.stats.messages + b.stats.messages == 20
    assert a.stats.points > 0 and b.stats.points > 0  # both members got a share


def test_stop_flushes_what_it_holds(db_url: str, mqtt_url: str, uid: str) -> None:
    """stop() commits and acks the batch it is still collecting instead of waiting out batch_max_wait_ms."""
    reg = register(db_url, uid)
    w = IngestWorker(
        db_url,
        mqtt_url,
        client_id=f"ing-{uid}",
        batch_max_wait_ms=60_000,
        session_expiry_s=SESSION_S,
        site_filter=reg.site,
    )
    w.start()
    try:
        with listener(mqtt_url, f"lis-{uid}", reg.topic("ack")) as acks:
            with publisher(mqtt_url, f"pub-{uid}") as publish:
                publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 5)))
                wait_until(lambda: w.stats.queue_depth == 1)
                assert telemetry_count(db_url, reg) == 0
                w.stop()
                w.stop()  # safe twice
            assert telemetry_count(db_url, reg) == 5
            wait_until(lambda: len(acks) == 1)
    finally:
        w.stop()
        forget_session(mqtt_url, f"ing-{uid}", reg.site)


def test_gateway_status_from_retained_birth_and_unknown_gateways_dead_lettered(
    db_url: str, mqtt_url: str, uid: str
) -> None:
    """A retained birth sets the gateway online; a status from an unregistered gateway is a dead letter."""
    reg = register(db_url, uid)
    stranger = Registered(f"site-{uid}", f"gw-stranger-{uid}", 0, {})
    with publisher(mqtt_url, f"pub-{uid}") as publish:
        publish(reg.topic("status"), encode_status("online", gateway=reg.gateway, ts=NOW_MS), retain=True)
        publish(stranger.topic("status"), encode_status("online", gateway=stranger.gateway, ts=NOW_MS), retain=True)
        try:
            with running(db_url, mqtt_url, f"ing-{uid}", reg.site):
                wait_until(
                    lambda: scalar(db_url, "SELECT status FROM gateways WHERE id = %s", (reg.gateway_id,)) == "online"
                )
                publish(reg.topic("status"), encode_status("offline", gateway=reg.gateway, ts=NOW_MS + 1), retain=True)
                wait_until(
                    lambda: scalar(db_url, "SELECT status FROM gateways WHERE id = %s", (reg.gateway_id,)) == "offline"
                )
                wait_until(lambda: dead_reasons(db_url, uid) == ["unknown_gateway"])
        finally:  # clear the retained messages so later tests do not receive them
            publish(reg.topic("status"), b"", retain=True)
            publish(stranger.topic("status"), b"", retain=True)


def test_database_outage_loses_nothing(db_url: str, admin_db_url: str, mqtt_url: str, uid: str) -> None:
    """While the database refuses connections the worker keeps its batch, retries, and stores everything after."""
    reg = register(db_url, uid)
    name = db_url.rsplit("/", 1)[1]
    with running(db_url, mqtt_url, f"ing-{uid}", reg.site) as w, publisher(mqtt_url, f"pub-{uid}") as publish:
        publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 1)))
        wait_until(lambda: w.stats.messages == 1)
        with psycopg.connect(admin_db_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            try:
                for seq in range(2, 6):
                    publish(reg.topic(), reg.batch(seq, pts("pump-1", "temp", 1, start_ms=NOW_MS - seq * 1000)))
                wait_until(lambda: w.stats.db_errors >= 2)
                assert w.stats.messages == 1
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        wait_until(lambda: w.stats.messages == 5, timeout=15)
    assert telemetry_count(db_url, reg) == 5


_CHILD = textwrap.dedent(
    """
    import sys, time
    from ingest import IngestWorker
    w = IngestWorker(sys.argv[1], sys.argv[2], client_id=sys.argv[3], batch_max_wait_ms=50, session_expiry_s=60,
                     site_filter=sys.argv[4])
    w.start()
    print("ready", flush=True)
    time.sleep(120)  # stay alive until the test SIGKILLs it (at most 2 min if the test dies first)
    """
)


def test_killed_worker_loses_nothing_and_doubles_nothing(db_url: str, mqtt_url: str, uid: str) -> None:
    """A worker SIGKILLed in the middle of a transaction acked nothing; its successor with the same id gets it all."""
    reg = register(db_url, uid)
    client_id = f"ing-{uid}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db_url, mqtt_url, client_id, reg.site],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        name = db_url.rsplit("/", 1)[1]
        with psycopg.connect(db_url) as blocker:
            # Hold the gateway row: the child's transaction stalls at its last_seq update, rows already inserted.
            blocker.execute("SELECT 1 FROM gateways WHERE id = %s FOR UPDATE", (reg.gateway_id,))
            with publisher(mqtt_url, f"pub-{uid}") as publish:
                for seq in range(1, 11):
                    publish(reg.topic(), reg.batch(seq, pts("pump-1", "temp", 10, start_ms=NOW_MS - seq * 100_000)))
            wait_until(
                lambda: (
                    scalar(
                        db_url,
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        (name,),
                    )
                    == 1
                )
            )
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            blocker.rollback()
        assert telemetry_count(db_url, reg) == 0
        with running(db_url, mqtt_url, client_id, reg.site) as w:
            wait_until(lambda: telemetry_count(db_url, reg) == 100, timeout=15)
            wait_until(lambda: w.stats.messages >= 10)
        assert telemetry_count(db_url, reg) == 100
        assert scalar(db_url, "SELECT array[last_seq, seq_gaps] FROM gateways WHERE id = %s", (reg.gateway_id,)) == [
            10,
            0,
        ]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.parametrize("protocol", ["7", "mqtt"])
def test_unknown_protocol_is_refused_at_construction(db_url: str, mqtt_url: str, protocol: str) -> None:
    """A protocol other than "5" or "3.1.1" fails when the worker is built, naming the accepted values."""
    with pytest.raises(ValueError, match=r"3\.1\.1"):
        IngestWorker(db_url, mqtt_url, client_id="x", protocol=protocol)


def test_unreachable_broker_fails_start_with_our_error(db_url: str, uid: str) -> None:
    """start() against a dead broker raises BrokerUnavailable naming the URL, and stop() afterwards is harmless."""
    from ingest import BrokerUnavailable

    w = IngestWorker(db_url, "mqtt://127.0.0.1:1", client_id=f"ing-{uid}")
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1\b"):
        w.start(timeout=2)
    w.stop()
    assert not w.running
