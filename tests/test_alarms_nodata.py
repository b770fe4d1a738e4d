"""No-data, device-offline and gateway-offline rules, scored by the scheduled job against the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from rules.model import RuleSpec
from rules.nodata import check_no_data, silence_score
from rules.store import save_rule
from rules.workbench import BacktestError, run_backtest

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(
    ("now_s", "last_s", "cadence", "floor", "score"),
    [(100, 70, 10, 1, 3.0), (100, 100, 10, 1, 0.0), (100, 110, 10, 1, 0.0), (100, 99, 0.01, 1, 1.0)],
)
def test_silence_score_is_missed_readings(now_s: int, last_s: int, cadence: float, floor: float, score: float) -> None:
    """The score is silence in multiples of the cadence, floored cadence, never negative."""
    assert silence_score(now_s * 1000, last_s * 1000, cadence, floor) == pytest.approx(score)


def seed(url: str) -> dict[str, int]:
    """Two pumps on one gateway: pump-1 reports temp every 10 s, pump-2 flow every 60 s; three no-data rules."""
    with psycopg.connect(url, autocommit=True) as conn:
        client = conn.execute("INSERT INTO clients (name, segment) VALUES ('A', 'gold') RETURNING id").fetchone()[0]
        site = conn.execute(
            "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, 'p', 'P', 1, 1) RETURNING id",
            (client,),
        ).fetchone()[0]
        gw = conn.execute(
            "INSERT INTO gateways (site_id, slug, status, status_at) VALUES (%s, 'gw', 'online', %s) RETURNING id",
            (site, NOW - timedelta(hours=1)),
        ).fetchone()[0]
        ids = {"gw": gw}
        for key, tag, step in (("pump-1", "temp", 10), ("pump-2", "flow", 60)):
            dev = conn.execute(
                "INSERT INTO devices (site_id, gateway_id, key, equipment_model) VALUES (%s, %s, %s, 'P') RETURNING id",
                (site, gw, key),
            ).fetchone()[0]
            ids[key] = dev
            sid = conn.execute(
                "INSERT INTO series (device_id, tag) VALUES (%s, %s) RETURNING id", (dev, tag)
            ).fetchone()[0]
            ids[f"{key}:series"] = sid
            # 20 readings ending 5 minutes before NOW
            last = NOW - timedelta(minutes=5)
            if conn.execute("SELECT to_regproc('fw_ensure_telemetry_partition') IS NOT NULL").fetchone()[0]:
                for day in {(last - timedelta(minutes=20)).date(), (NOW + timedelta(minutes=10)).date()}:
                    conn.execute("SELECT fw_ensure_telemetry_partition(%s::date)", (day,))
            conn.execute(
                "INSERT INTO telemetry (series_id, time, value) SELECT %s, %s - make_interval(secs => g * %s), 1.0"
                " FROM generate_series(0, 19) g",
                (sid, last, step),
            )
        specs = [
            {"name": "temp silent", "tag": "temp", "condition": {"kind": "no_data", "threshold": 5}},
            {
                "name": "device offline",
                "tag": "*",
                "condition": {"kind": "no_data", "target": "device", "threshold": 10},
            },
            {
                "name": "gateway offline",
                "tag": "*",
                "condition": {"kind": "no_data", "target": "gateway", "threshold": 2, "clear": 0.5},
            },
        ]
        for s in specs:
            ids[s["name"]] = save_rule(conn, RuleSpec.model_validate({**s, "problem_code": "NO_DATA"}), author="t")[
                0
            ].id
    return ids


def open_alarms(url: str) -> set[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        return set(conn.execute("SELECT rule_id, device_id FROM alarms WHERE cleared_at IS NULL").fetchall())


def test_stale_series_and_offline_device_relative_to_their_own_cadence(db_url: str) -> None:
    """5 min of silence is 30 missed readings for a 10 s series (alarm) but 5 for a 60 s series (device still ok)."""
    ids = seed(db_url)
    events = check_no_data(db_url, now_ms=NOW_MS)
    assert {(e.rule_id, e.device_id, e.type) for e in events} == {
        (ids["temp silent"], ids["pump-1"], "alarm_opened"),
        (ids["device offline"], ids["pump-1"], "alarm_opened"),
    }
    # pump-2 stays quiet for 11 minutes in all: 11 missed readings → offline
    later = check_no_data(db_url, now_ms=NOW_MS + 6 * 60_000)
    assert {(e.rule_id, e.device_id) for e in later} == {(ids["device offline"], ids["pump-2"])}
    # pump-1 reports again: its alarms clear through the same path
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO telemetry (series_id, time, value) VALUES (%s, %s, 2.0)",
            (ids["pump-1:series"], NOW + timedelta(minutes=6, seconds=50)),
        )
    cleared = check_no_data(db_url, now_ms=NOW_MS + 7 * 60_000)
    assert {(e.rule_id, e.device_id, e.type) for e in cleared} == {
        (ids["temp silent"], ids["pump-1"], "alarm_cleared"),
        (ids["device offline"], ids["pump-1"], "alarm_cleared"),
    }
    assert open_alarms(db_url) == {(ids["device offline"], ids["pump-2"])}


def test_gateway_offline_alarms_its_devices_and_clears_on_birth(db_url: str) -> None:
    """A gateway offline for more than 2 min alarms each of its devices; back online, the alarms clear."""
    ids = seed(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE gateways SET status = 'offline', status_at = %s", (NOW - timedelta(minutes=1),))
        conn.execute("DELETE FROM rules WHERE name <> 'gateway offline'")
    assert check_no_data(db_url, now_ms=NOW_MS) == []  # 1 min: not yet
    opened = check_no_data(db_url, now_ms=NOW_MS + 2 * 60_000)
    assert sorted(e.device_id for e in opened if e.type == "alarm_opened") == sorted([ids["pump-1"], ids["pump-2"]])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE gateways SET status = 'online', status_at = %s", (NOW + timedelta(minutes=2),))
    cleared = check_no_data(db_url, now_ms=NOW_MS + 3 * 60_000)
    assert sorted(e.type for e in cleared) == ["alarm_cleared", "alarm_cleared"]


def test_no_data_rules_are_not_fed_readings_nor_backtested(db_url: str) -> None:
    """Live readings do not drive a no-data rule, and backtesting one explains why it cannot."""
    from rules import RuleEvaluator

    ids = seed(db_url)

    class P:
        device_id, tag, ts_ms, value, quality = ids["pump-1"], "temp", NOW_MS, 99.0, 0

    with RuleEvaluator(db_url) as ev:
        assert ev.process([P()]) == []
    with psycopg.connect(db_url) as conn, pytest.raises(BacktestError, match="no-data rule"):
        run_backtest(conn, "temp silent", ids["pump-1"], NOW_MS - 3_600_000, NOW_MS)
