"""API tests: seed a small fleet with plain SQL, mint tokens, open a client.

The rows are written directly (not through ingest, rules or ticketing) so these
tests depend only on the schema, and every expected value is visible here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from fieldwatch.api import create_app
from fwcore.auth import create_token
from fwcore.settings import Settings, load_settings
from tests.support.db import fresh_database
from tests.support.secrets import register

with warnings.catch_warnings():
    # Starlette wants the `httpx2` package for its TestClient and warns (an error under our
    # pytest settings) when it falls back to `httpx`; the behaviour is the same.
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

BASE = "/api/v1"


@dataclass
class Fleet:
    """Ids of the seeded rows and the timestamps of the telemetry written."""

    now: datetime
    client: int = 0
    sites: dict[str, int] = field(default_factory=dict)
    gateways: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)  # "pump-1/bearing_temp" -> id
    rules: dict[str, int] = field(default_factory=dict)
    alarms: dict[str, int] = field(default_factory=dict)  # active, acknowledged, cleared
    technicians: dict[str, int] = field(default_factory=dict)
    tickets: dict[str, int] = field(default_factory=dict)  # assigned, unassigned


def _one(conn: psycopg.Connection, query: str, params: tuple = ()) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def write_points(conn: psycopg.Connection, series_id: int, points: list[tuple[datetime, float, int]]) -> None:
    """Insert telemetry rows, creating the daily partitions they need first."""
    for day in sorted({t.astimezone(UTC).date() for t, _, _ in points}):
        conn.execute("SELECT fw_ensure_telemetry_partition(%s)", (day,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO telemetry (series_id, time, value, quality) VALUES (%s, %s, %s, %s)",
            [(series_id, t, v, q) for t, v, q in points],
        )


def seed(db_url: str) -> Fleet:
    """Two sites, two gateways, two pumps with series and points, alarms, technicians and tickets."""
    now = datetime.now(UTC).replace(microsecond=0)
    f = Fleet(now=now)
    with psycopg.connect(db_url, autocommit=True) as conn:
        f.client = _one(conn, "INSERT INTO clients (name, segment) VALUES ('Acme Water', 'gold') RETURNING id")
        for slug, lat, lon in (("plant-a", 48.14, 11.58), ("plant-b", 48.37, 10.90)):
            f.sites[slug] = _one(
                conn,
                "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, %s, %s, %s) "
                "RETURNING id",
                (f.client, slug, slug.title(), lat, lon),
            )
        f.gateways["gw-a"] = _one(
            conn,
            "INSERT INTO gateways (site_id, slug, name, status, status_at, last_seq, seq_gaps) "
            "VALUES (%s, 'gw-a', 'Gateway A', 'online', %s, 42, 1) RETURNING id",
            (f.sites["plant-a"], now - timedelta(minutes=30)),
        )
        f.gateways["gw-b"] = _one(
            conn,
            "INSERT INTO gateways (site_id, slug, status) VALUES (%s, 'gw-b', 'offline') RETURNING id",
            (f.sites["plant-b"],),
        )
        for key, site, gw, serial in (("pump-1", "plant-a", "gw-a", "SN-001"), ("pump-2", "plant-b", "gw-b", "")):
            f.devices[key] = _one(
                conn,
                "INSERT INTO devices (site_id, gateway_id, key, name, equipment_model, serial, attributes) "
                "VALUES (%s, %s, %s, %s, 'P100', %s, '{\"power_kw\": 15}') RETURNING id",
                (f.sites[site], f.gateways[gw], key, "Pump 1" if key == "pump-1" else "", serial),
            )
        for key, tag, unit in (
            ("pump-1", "bearing_temp", "degC"),
            ("pump-1", "flow", "m3/h"),
            ("pump-1", "vibration", "mm/s"),  # never reported
            ("pump-2", "bearing_temp", "degC"),
        ):
            f.series[f"{key}/{tag}"] = _one(
                conn,
                "INSERT INTO series (device_id, tag, unit) VALUES (%s, %s, %s) RETURNING id",
                (f.devices[key], tag, unit),
            )
        m = timedelta(minutes=1)
        write_points(
            conn, f.series["pump-1/bearing_temp"], [(now - 3 * m, 70.0, 0), (now - m, 72.5, 0), (now - 2 * m, 71.0, 0)]
        )
        write_points(conn, f.series["pump-1/flow"], [(now - 10 * m, 5.0, 0), (now - 5 * m, 6.5, 1)])
        write_points(conn, f.series["pump-2/bearing_temp"], [(now - 2 * timedelta(hours=2), 60.0, 0)])

        for code in ("pump_mech", "electrical"):
            conn.execute("INSERT INTO skills (code, name) VALUES (%s, %s)", (code, code.replace("_", " ")))
        for name, tag, problem, skill in (
            ("bearing hot", "bearing_temp", "BEARING_HOT", "pump_mech"),
            ("low flow", "flow", "LOW_FLOW", "electrical"),
        ):
            f.rules[name] = _one(
                conn,
                "INSERT INTO rules (name, tag, operator, threshold, problem_code, required_skill) "
                "VALUES (%s, %s, '>', 80, %s, %s) RETURNING id",
                (name, tag, problem, skill),
            )
        alarm_sql = (
            "INSERT INTO alarms (rule_id, device_id, severity, state, message, trigger_value, triggered_at, "
            "opened_at, acknowledged_at, acknowledged_by, cleared_at) "
            "VALUES (%s, %s, 'major', %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
        )
        hot, low = f.rules["bearing hot"], f.rules["low flow"]
        p1, p2 = f.devices["pump-1"], f.devices["pump-2"]
        f.alarms["cleared"] = _one(
            conn, alarm_sql, (hot, p1, "cleared", "old", 85.0, now - 60 * m, now - 60 * m, None, None, now - 50 * m)
        )
        f.alarms["acknowledged"] = _one(
            conn,
            alarm_sql,
            (low, p2, "acknowledged", "flow", 1.0, now - 20 * m, now - 20 * m, now - 19 * m, "night shift", None),
        )
        f.alarms["active"] = _one(
            conn, alarm_sql, (hot, p1, "active", "bearing 86 degC", 86.0, now - 2 * m, now - 2 * m, None, None, None)
        )

        for name, email, skills in (
            ("Ana Ortiz", "ana@example.com", {"pump_mech": 4}),
            ("Ben Bauer", "ben@example.com", {"electrical": 2, "pump_mech": 1}),
        ):
            tid = _one(
                conn,
                "INSERT INTO technicians (name, email, home_lat, home_lon) VALUES (%s, %s, 48.1, 11.5) RETURNING id",
                (name, email),
            )
            f.technicians[name.split()[0].lower()] = tid
            for code, level in skills.items():
                conn.execute(
                    "INSERT INTO technician_skills (technician_id, skill_id, level) "
                    "SELECT %s, id, %s FROM skills WHERE code = %s",
                    (tid, level, code),
                )
        f.tickets["assigned"] = _one(
            conn,
            "INSERT INTO tickets (device_id, problem_code, title, priority, status, required_skill, alarm_id, "
            "created_at, due_at) VALUES (%s, 'BEARING_HOT', 'Bearing hot on Pump 1', 2, 'assigned', 'pump_mech', "
            "%s, %s, %s) RETURNING id",
            (p1, f.alarms["active"], now - m, now + 4 * 60 * m),
        )
        conn.execute(  # an earlier, superseded assignment must not show
            "INSERT INTO assignments (ticket_id, technician_id, distance_km, eta_minutes, reason, active) "
            "VALUES (%s, %s, 40, 55, 'first pick', false)",
            (f.tickets["assigned"], f.technicians["ben"]),
        )
        conn.execute(
            "INSERT INTO assignments (ticket_id, technician_id, distance_km, eta_minutes, reason) "
            "VALUES (%s, %s, 12.5, 18, 'nearest qualified technician')",
            (f.tickets["assigned"], f.technicians["ana"]),
        )
        f.tickets["unassigned"] = _one(
            conn,
            "INSERT INTO tickets (device_id, problem_code, title, status, required_skill, unassigned_reason, "
            "created_at) VALUES (%s, 'LOW_FLOW', 'Low flow on pump-2', 'new', 'electrical', "
            "'no available technician has skill electrical', %s) RETURNING id",
            (p2, now - 30 * m),
        )
    return f


def token(db_url: str, role: str, name: str | None = None, *, technician: int | None = None) -> str:
    """A fresh API token with ``role`` (named after the role unless ``name`` is given), bound to
    ``technician`` when given (a ``technician`` token must be)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return register(create_token(conn, name or f"{role}-token", role, technician_id=technician))


def auth(tok: str) -> dict[str, str]:
    """The Authorization header for a bearer token."""
    return {"Authorization": f"Bearer {tok}"}


def settings_for(db_url: str, **overrides: object) -> Settings:
    """Settings on ``db_url`` (environment and defaults for the rest)."""
    return load_settings(database_url=db_url, **overrides)


@contextmanager
def api_client(db_url: str) -> Iterator[TestClient]:
    """A TestClient for an app on ``db_url``, started (pool open) and stopped around the block."""
    with TestClient(create_app(settings_for(db_url))) as client:
        yield client


@dataclass
class Seeded:
    """A seeded database shared by read-only tests, a started client on it and a reader's headers."""

    url: str
    fleet: Fleet
    api: TestClient
    headers: dict[str, str]


@contextmanager
def seeded_api(admin_db_url: str, template_db: str, role: str = "field_engineer") -> Iterator[Seeded]:
    """One seeded database and client for a whole test module (only for tests that do not write)."""
    with fresh_database(admin_db_url, template_db, prefix="fwt_api_") as url:
        fleet = seed(url)
        headers = auth(token(url, role))
        with api_client(url) as api:
            yield Seeded(url=url, fleet=fleet, api=api, headers=headers)
