"""Planned maintenance generates tickets ahead of time (calendar and run-hours); KPIs come out right
from a known status history, through the API and as CSV/XLSX from `fieldwatch report kpis`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tests.support.api import BASE, api_client, auth, token, write_points
from ticketing.kpis import compute_kpis
from ticketing.maintenance import generate_maintenance

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _device(conn: psycopg.Connection, model: str = "P100", segment: str = "gold") -> tuple[int, datetime]:
    client = conn.execute(
        "INSERT INTO clients (name, segment) VALUES (%s, %s) RETURNING id", (f"c-{model}-{segment}", segment)
    ).fetchone()[0]
    site = conn.execute(
        "INSERT INTO sites (client_id, slug, name, latitude, longitude) VALUES (%s, %s, 's', 48, 11) RETURNING id",
        (client, f"s-{model}-{segment}"),
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO devices (site_id, key, equipment_model) VALUES (%s, 'p', %s) RETURNING id, created_at",
        (site, model),
    ).fetchone()


def test_calendar_plan_opens_one_ticket_within_the_lead_and_counts_from_the_last_visit(db_url: str) -> None:
    """Every 30 days with 7 days lead: nothing at day 20, one ticket at day 25 (due day 30), none twice,
    and the next one at day 55 after the first is resolved."""
    with psycopg.connect(db_url) as conn:
        dev, created = _device(conn)
        conn.execute(
            "INSERT INTO maintenance_plans (name, equipment_model, every_days, lead_days) "
            "VALUES ('quarterly-seal', 'P100', 30, 7)"
        )
    assert generate_maintenance(db_url, now=created + timedelta(days=20)) == []
    [g] = generate_maintenance(db_url, now=created + timedelta(days=25))
    assert g.device_id == dev and g.due_at == created + timedelta(days=30)
    assert generate_maintenance(db_url, now=created + timedelta(days=26)) == []
    with psycopg.connect(db_url) as conn:
        src, due, status, pc = conn.execute(
            "SELECT source, due_at, status, problem_code FROM tickets WHERE id = %s", (g.ticket_id,)
        ).fetchone()
        assert (src, due, status, pc) == ("planned", created + timedelta(days=30), "new", "PM:quarterly-seal")
        conn.execute("UPDATE tickets SET status = 'resolved' WHERE id = %s", (g.ticket_id,))
    assert generate_maintenance(db_url, now=created + timedelta(days=50)) == []
    [g2] = generate_maintenance(db_url, now=created + timedelta(days=55))
    assert g2.due_at == created + timedelta(days=60)


def test_run_hours_plan_reads_the_latest_telemetry(db_url: str) -> None:
    """Every 500 run-hours with 20 h lead: 470 h opens nothing, 485 h opens a ticket due at 500 h."""
    with psycopg.connect(db_url) as conn:
        dev, _ = _device(conn)
        conn.execute(
            "INSERT INTO maintenance_plans (name, equipment_model, every_run_hours, lead_run_hours) "
            "VALUES ('bearing-500h', 'P100', 500, 20)"
        )
        series = conn.execute(
            "INSERT INTO series (device_id, tag) VALUES (%s, 'run_hours') RETURNING id", (dev,)
        ).fetchone()[0]
        write_points(conn, series, [(T0, 470.0, 0)])
    assert generate_maintenance(db_url, now=T0) == []
    with psycopg.connect(db_url) as conn:
        write_points(conn, series, [(T0 + timedelta(hours=15), 485.0, 0)])
    [g] = generate_maintenance(db_url, now=T0 + timedelta(hours=15))
    assert g.due_run_hours == 500 and g.device_id == dev


def _history(conn: psycopg.Connection, ticket: int, steps: list[tuple[int, str]]) -> None:
    """Replace the ticket's status history with (minutes after T0, status) steps."""
    conn.execute("DELETE FROM ticket_status_history WHERE ticket_id = %s", (ticket,))
    for minutes, status in steps:
        conn.execute(
            "INSERT INTO ticket_status_history (ticket_id, status, at) VALUES (%s, %s, %s)",
            (ticket, status, T0 + timedelta(minutes=minutes)),
        )
    conn.execute("UPDATE tickets SET created_at = %s WHERE id = %s", (T0 + timedelta(minutes=steps[0][0]), ticket))


def _kpi_world(db_url: str) -> None:
    """Two resolved tickets by Ana: one fixed in one visit (2 h), one needing a second visit (4 h);
    30 min of travel each; one response breach for the gold segment."""
    with psycopg.connect(db_url) as conn:
        dev, _ = _device(conn)
        conn.execute("UPDATE devices SET created_at = %s WHERE id = %s", (T0 - timedelta(days=1), dev))
        ana = conn.execute(
            "INSERT INTO technicians (name, email, home_lat, home_lon) VALUES ('Ana', 'a@x', 48, 11) RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO technician_shifts (technician_id, starts_at, ends_at) VALUES (%s, %s, %s)",
            (ana, T0, T0 + timedelta(hours=10)),
        )
        ids = [
            conn.execute(
                "INSERT INTO tickets (device_id, problem_code, title, source, due_at, status) "
                "VALUES (%s, %s, 't', 'alarm', %s, 'resolved') RETURNING id",
                (dev, f"X{i}", T0 + timedelta(hours=1)),
            ).fetchone()[0]
            for i in range(2)
        ]
        for t in ids:
            conn.execute("INSERT INTO assignments (ticket_id, technician_id, active) VALUES (%s, %s, false)", (t, ana))
        _history(conn, ids[0], [(0, "new"), (5, "assigned"), (30, "en_route"), (60, "on_site"), (120, "resolved")])
        _history(
            conn,
            ids[1],
            [
                (0, "new"),
                (5, "assigned"),
                (30, "en_route"),
                (60, "on_site"),
                (120, "resolved"),
                (180, "on_site"),
                (200, "resolved"),
            ],
        )
        conn.execute(
            "INSERT INTO sla_breaches (ticket_id, kind, segment, priority, due_at) "
            "VALUES (%s, 'response', 'gold', 3, %s)",
            (ids[1], T0),
        )


def test_kpis_from_a_known_history(db_url: str) -> None:
    """MTTR, first-time fix, SLA compliance, utilization and travel share match the hand-computed values."""
    _kpi_world(db_url)
    with psycopg.connect(db_url) as conn:
        rows = {(r.kpi, r.dimension): r for r in compute_kpis(conn, T0 - timedelta(hours=1), T0 + timedelta(days=1))}
    assert rows[("mttr_hours", "all")].value == (2 + 2) / 2  # first 'resolved' counts: 2 h each
    assert rows[("first_time_fix", "all")].value == 0.5
    assert rows[("sla_compliance", "gold")].value == 0.5
    assert rows[("mtbf_hours", "P100")].value == 25 / 2  # one device, 25 h period, two failures
    # Ana: travel 0.5 h × 2, on site 1 h + 1 h + 20 min; shift 10 h
    assert abs(rows[("utilization", "Ana")].value - (1 + 2 + 1 / 3) / 10) < 1e-9
    assert abs(rows[("travel_share", "Ana")].value - 1 / (1 + 2 + 1 / 3)) < 1e-9


def test_kpis_over_the_api_and_as_csv_and_xlsx(db_url: str, tmp_path: Path) -> None:
    """GET /kpis returns the rows; `fieldwatch report kpis` writes the same as CSV and a readable XLSX."""
    _kpi_world(db_url)
    since, until = (T0 - timedelta(hours=1)).isoformat(), (T0 + timedelta(days=1)).isoformat()
    with api_client(db_url) as api:
        r = api.get(f"{BASE}/kpis", params={"since": since, "until": until}, headers=auth(token(db_url, "dispatcher")))
    assert r.status_code == 200
    assert {"kpi": "first_time_fix", "dimension": "all", "value": 0.5, "unit": "ratio", "n": 2} in r.json()
    env = {**os.environ, "FIELDWATCH_DATABASE_URL": db_url}
    cli = [sys.executable, "-m", "fieldwatch.cli", "report", "kpis", "--since", since, "--until", until]
    out = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    assert out.splitlines()[0] == "kpi,dimension,value,unit,n" and "first_time_fix,all,0.5,ratio,2" in out
    xlsx = tmp_path / "kpis.xlsx"
    subprocess.run([*cli, "--format", "xlsx", "-o", str(xlsx)], capture_output=True, env=env, timeout=60, check=True)
    from openpyxl import load_workbook

    ws = load_workbook(io.BytesIO(xlsx.read_bytes())).active
    values = list(ws.iter_rows(values_only=True))
    assert values[0] == ("kpi", "dimension", "value", "unit", "n")
    assert ("first_time_fix", "all", 0.5, "ratio", 2) in values
