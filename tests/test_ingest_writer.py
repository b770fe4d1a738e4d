"""TelemetryWriter and RegistryCache against a real PostgreSQL database."""

from __future__ import annotations

import threading

import psycopg
import pytest

from fwcore.contract import Point
from ingest.errors import DatabaseUnavailable
from ingest.registry import RegistryCache
from ingest.validate import AcceptedPoint
from ingest.writer import BatchWrite, DeadLetter, StatusWrite, TelemetryWriter, rows_of
from tests.support.clocks import FakeClock
from tests.support.db import scalar
from tests.support.registry import NOW_MS, add_device, register


def bw(reg, seq: int, points: list[tuple[str, str, int, float]], historical: bool = False) -> BatchWrite:
    return BatchWrite(
        reg.site,
        reg.gateway,
        reg.gateway_id,
        seq,
        historical,
        rows_of([AcceptedPoint(reg.devices[d], Point(d, tag, ts, v)) for d, tag, ts, v in points]),
    )


@pytest.fixture
def writer(db_url: str):
    w = TelemetryWriter(db_url)
    yield w
    w.close()


def test_points_are_stored_once_and_series_created_on_first_sight(db_url: str, uid: str, writer) -> None:
    """Writing the same batch twice stores each point once; series rows appear for new (device, tag) pairs."""
    reg = register(db_url, uid)
    b = bw(reg, 1, [("pump-1", "temp", NOW_MS, 20.5), ("pump-1", "flow", NOW_MS, 3.0), ("pump-2", "temp", NOW_MS, 1)])
    first = writer.write([b])
    again = writer.write([b])
    assert (first.inserted, first.duplicates) == (3, 0)
    assert (again.inserted, again.duplicates) == (0, 3)
    assert scalar(db_url, "SELECT count(*) FROM telemetry") == 3
    assert scalar(db_url, "SELECT count(*) FROM series") == 3
    stored = scalar(
        db_url,
        "SELECT t.value FROM telemetry t JOIN series s ON s.id = t.series_id WHERE s.tag = 'temp' AND s.device_id = %s"
        " AND t.time = to_timestamp(%s / 1000.0)",
        (reg.devices["pump-1"], NOW_MS),
    )
    assert stored == 20.5


def test_conflicting_points_of_several_batches_are_filed_under_their_own_batch(db_url: str, uid: str, writer) -> None:
    """In one write of several batches, each batch's points that clash with stored values become one dead letter
    carrying that batch's seq and just those points; the stored values stay."""
    from fwcore.contract import decode_batch

    reg = register(db_url, uid)
    writer.write([bw(reg, 1, [("pump-1", "temp", NOW_MS, 1.0), ("pump-2", "temp", NOW_MS, 2.0)])])
    res = writer.write(
        [
            bw(reg, 2, [("pump-1", "temp", NOW_MS + 5, 9.0), ("pump-2", "temp", NOW_MS, 2.5)]),
            bw(reg, 3, [("pump-1", "temp", NOW_MS, 1.5), ("pump-1", "temp", NOW_MS, 1.0)]),
        ],
        want_points=True,
    )
    assert (res.inserted, res.duplicates, res.conflicts) == (1, 1, 2)
    assert [c.ts_ms for c in res.committed] == [NOW_MS + 5]
    with psycopg.connect(db_url) as conn:
        letters = conn.execute("SELECT reason, payload FROM dead_letters ORDER BY id").fetchall()
    assert [r for r, _ in letters] == ["conflicting_value", "conflicting_value"]
    kept = [decode_batch(p) for _, p in letters]
    assert [(b.seq, [(p.device, p.value) for p in b.points]) for b in kept] == [
        (2, [("pump-2", 2.5)]),
        (3, [("pump-1", 1.5)]),
    ]
    assert scalar(db_url, "SELECT sum(value) FROM telemetry") == 12.0


def test_committed_points_only_for_new_rows(db_url: str, uid: str, writer) -> None:
    """Asked for points, the writer returns what it newly stored, with ids and the historical flag."""
    reg = register(db_url, uid)
    b1 = bw(reg, 1, [("pump-1", "temp", NOW_MS, 1.0)], historical=True)
    [cp] = writer.write([b1], want_points=True).committed
    assert (cp.device_id, cp.device_key, cp.gateway_id, cp.tag, cp.ts_ms, cp.value, cp.historical) == (
        reg.devices["pump-1"],
        "pump-1",
        reg.gateway_id,
        "temp",
        NOW_MS,
        1.0,
        True,
    )
    b2 = bw(reg, 2, [("pump-1", "temp", NOW_MS, 1.0), ("pump-1", "temp", NOW_MS + 1, 2.0)])
    assert [c.ts_ms for c in writer.write([b2], want_points=True).committed] == [NOW_MS + 1]


def test_dead_letters_sequences_and_status_commit_together(db_url: str, uid: str, writer) -> None:
    """Dead letters, last_seq/seq_gaps and gateway status are written in the same call as the points."""
    reg = register(db_url, uid)
    res = writer.write(
        [bw(reg, 10, []), bw(reg, 13, [("pump-1", "temp", NOW_MS, 1.0)])],
        [DeadLetter("fw/v1/x/y/telemetry", b"\x00raw", "invalid_json", "bad \x00 detail")],
        [StatusWrite(reg.gateway_id, "online", NOW_MS)],
    )
    assert res.gaps == 2 and res.dead_letters == {"invalid_json": 1}
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT last_seq, seq_gaps, status FROM gateways WHERE id = %s", (reg.gateway_id,)
        ).fetchone() == (
            13,
            2,
            "online",
        )
        assert conn.execute("SELECT payload, reason FROM dead_letters").fetchall() == [(b"\x00raw", "invalid_json")]
    # Redelivering 10 and 13 changes nothing; a late 11 fills one of the two missing sequences.
    res = writer.write([bw(reg, 10, []), bw(reg, 11, []), bw(reg, 13, [])])
    assert (res.gaps, res.filled) == (0, 1)
    assert scalar(db_url, "SELECT array[last_seq, seq_gaps] FROM gateways WHERE id = %s", (reg.gateway_id,)) == [13, 1]


def test_an_older_status_does_not_overwrite_a_newer_one(db_url: str, uid: str, writer) -> None:
    """A retained birth replayed after a newer death leaves the gateway offline."""
    reg = register(db_url, uid)
    writer.write([], [], [StatusWrite(reg.gateway_id, "offline", NOW_MS)])
    writer.write([], [], [StatusWrite(reg.gateway_id, "online", NOW_MS - 1000)])
    assert scalar(db_url, "SELECT status FROM gateways WHERE id = %s", (reg.gateway_id,)) == "offline"


def test_a_failed_transaction_leaves_nothing_and_caches_nothing(db_url: str, uid: str, writer) -> None:
    """If the database refuses the batch, no point, series or dead letter is kept, and the series cache stays clean."""
    reg = register(db_url, uid)
    bad = bw(reg, 1, [("pump-1", "temp", NOW_MS, 1.0)])
    bad.accepted.append((999_999, "ghost", "temp", NOW_MS, 1.0, 0))  # no such device: FK fails
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        writer.write([bad], [DeadLetter("t", b"x", "r")])
    assert scalar(db_url, "SELECT count(*) FROM series") == 0
    assert scalar(db_url, "SELECT count(*) FROM dead_letters") == 0
    assert writer.write([bw(reg, 1, [("pump-1", "temp", NOW_MS, 1.0)])]).inserted == 1


def test_points_on_several_days_get_their_partitions(db_url: str, uid: str, writer) -> None:
    """Points of different UTC days land in one write; each day's partition is ensured first."""
    reg = register(db_url, uid)
    days = [NOW_MS - d * 86_400_000 for d in range(3)]
    res = writer.write([bw(reg, 1, [("pump-1", "temp", ts, 1.0) for ts in days])])
    assert res.inserted == 3


def test_unreachable_database_is_reported_as_ours(writer) -> None:
    """A database that cannot be reached raises DatabaseUnavailable, not a psycopg error."""
    w = TelemetryWriter("postgresql://postgres@127.0.0.1:1/nope", connect_timeout=1)
    with pytest.raises(DatabaseUnavailable):
        w.write([])


def test_registry_finds_new_devices_but_asks_about_unknown_ones_at_most_once_a_second(db_url: str, uid: str) -> None:
    """A miss is looked up (so a device registered a second ago is found); a repeated miss waits retry_s."""
    reg = register(db_url, uid)
    clock = FakeClock(100.0)
    cache = RegistryCache(retry_s=1.0, clock=clock)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert cache.lookup(conn, {reg.gateway}, set())
        assert cache.gateway(reg.gateway).id == reg.gateway_id  # type: ignore[union-attr]
        assert not cache.lookup(conn, (), {(reg.gateway_id, "pump-7")})
        add_device(conn, None, reg.gateway_id, "pump-7")
        clock.advance(0.5)
        assert not cache.lookup(conn, (), {(reg.gateway_id, "pump-7")})  # asked too recently
        clock.advance(0.6)
        assert cache.lookup(conn, (), {(reg.gateway_id, "pump-7")})
        assert cache.device(reg.gateway_id, "pump-7") is not None


def seq_state(db_url: str, gateway_id: int) -> tuple:
    """(last_seq, seq_gaps, skipped total, filled total, missing ranges) of a gateway."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT last_seq, seq_gaps, seq_skipped_total, seq_filled_total FROM gateways WHERE id = %s",
            (gateway_id,),
        ).fetchone()
        ranges = conn.execute(
            "SELECT seq_from, seq_to FROM gateway_seq_missing WHERE gateway_id = %s ORDER BY 1", (gateway_id,)
        ).fetchall()
    return (*row, ranges)


def test_out_of_order_commits_leave_nothing_missing(db_url: str, uid: str, writer) -> None:
    """Seq 1, 3, 2 in separate commits: 2 is missing for a moment, then nothing is."""
    reg = register(db_url, uid)
    for seq in (1, 3):
        writer.write([bw(reg, seq, [])])
    assert seq_state(db_url, reg.gateway_id) == (3, 1, 1, 0, [(2, 2)])
    res = writer.write([bw(reg, 2, [])])
    assert (res.gaps, res.filled, res.missing) == (0, 1, {reg.gateway: (2, 0)})
    assert seq_state(db_url, reg.gateway_id) == (3, 0, 1, 1, [])


def test_a_real_gap_stays_missing_until_resent(db_url: str, uid: str, writer) -> None:
    """Seq 1, 2, 5 leave 3 and 4 missing; 4 then 3 arriving late (a resend) bring it back to zero."""
    reg = register(db_url, uid)
    writer.write([bw(reg, 1, []), bw(reg, 2, [])])
    writer.write([bw(reg, 5, [])])
    assert seq_state(db_url, reg.gateway_id) == (5, 2, 2, 0, [(3, 4)])
    writer.write([bw(reg, 4, []), bw(reg, 5, [])])  # 5 redelivered alongside: changes nothing
    assert seq_state(db_url, reg.gateway_id) == (5, 1, 2, 1, [(3, 3)])
    writer.write([bw(reg, 3, [])])
    assert seq_state(db_url, reg.gateway_id) == (5, 0, 2, 2, [])
    writer.write([bw(reg, 3, [])])  # and again: a replay
    assert seq_state(db_url, reg.gateway_id) == (5, 0, 2, 2, [])


def test_a_late_batch_splits_a_missing_range(db_url: str, uid: str, writer) -> None:
    """1 then 10 leave 2..9 missing; 5 arriving splits that into 2..4 and 6..9."""
    reg = register(db_url, uid)
    writer.write([bw(reg, 1, [])])
    writer.write([bw(reg, 10, [])])
    writer.write([bw(reg, 5, [])])
    assert seq_state(db_url, reg.gateway_id) == (10, 7, 8, 1, [(2, 4), (6, 9)])


def test_two_writers_committing_interleaved_sequences_agree(db_url: str, uid: str) -> None:
    """Two writers on separate connections commit odd and even sequences of two gateways at once: nothing missing."""
    first = register(db_url, uid)
    second = register(db_url, uid[::-1])
    errors: list[BaseException] = []

    def run(parity: int) -> None:
        w = TelemetryWriter(db_url)
        try:
            for seq in range(1 + parity, 81, 2):
                # Both gateways in every transaction, in opposite orders: lock ordering must hold.
                regs = (first, second) if parity else (second, first)
                for attempt in range(20):
                    try:
                        w.write([bw(r, seq, [("pump-1", "temp", NOW_MS + seq, 1.0)]) for r in regs])
                        break
                    except DatabaseUnavailable:
                        if attempt == 19:
                            raise
        except BaseException as exc:
            errors.append(exc)
        finally:
            w.close()

    threads = [threading.Thread(target=run, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for r in (first, second):
        last, gaps, skipped, filled, ranges = seq_state(db_url, r.gateway_id)
        assert (last, gaps, ranges) == (80, 0, [])
        assert skipped == filled
    assert scalar(db_url, "SELECT count(*) FROM telemetry") == 160
