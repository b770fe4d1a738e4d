"""`fieldwatch demo`: the newcomer's command works unattended, on embedded and on real services,
and leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from fieldwatch.demo import DEMO_MARK
from fwcore.db import create_database, database_comment, drop_database

FIELDWATCH = str(Path(sys.executable).with_name("fieldwatch"))


def _processes_under(path: Path) -> list[str]:
    """Live processes whose command line mentions ``path``: the run's embedded PostgreSQL would show here.

    Each demo run gets its own TMPDIR, so other runs on the machine (other test sessions) never match.
    """
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmd:
            left.append(cmd)
    return left


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private TMPDIR for one demo run (the embedded PostgreSQL's socket path must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="fwd", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_unattended(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[dict, str]:
    env = {**env, "TMPDIR": str(tmp_path)}
    res = subprocess.run(
        [FIELDWATCH, "demo", "--exit-after-dispatch", "--json", "--api-port", "0", "--timeout", "150", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["outcome"] == "dispatched"
    assert summary["points_ingested"] > 0
    assert summary["alarms_opened"] >= 1 and summary["tickets_opened"] >= 1 and summary["tickets_assigned"] >= 1
    assert 0 < summary["seconds_to_dispatch"] < 180
    # Ben lives nearer to Evanston but has no pump skill: the bearing job must go to Ana.
    assert summary["technician"] == "Ana Ruiz"
    assert _processes_under(tmp_path) == []
    return summary, res.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_on_embedded_services(run_dir: Path) -> None:
    """With no service URLs set, the demo brings its own PostgreSQL and broker and dispatches a ticket."""
    env = {k: v for k, v in os.environ.items() if k not in ("FIELDWATCH_DATABASE_URL", "FIELDWATCH_MQTT_URL")}
    _run_unattended(env, run_dir)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_on_real_services(admin_db_url: str, mqtt_url: str, run_dir: Path, uid: str) -> None:
    """With both URLs set, the demo uses the real PostgreSQL and Mosquitto, in a database it marks, dispatches a
    ticket, and prints the console's address with a sign-in for every role."""
    name = f"fwdemo_{uid}"
    env = {
        **os.environ,
        "FIELDWATCH_DATABASE_URL": admin_db_url,
        "FIELDWATCH_MQTT_URL": mqtt_url,
        "FIELDWATCH_CONSOLE_ENABLED": "true",
    }
    try:
        _, printed = _run_unattended(env, run_dir, "--database", name)
        assert database_comment(admin_db_url, name) == (True, DEMO_MARK)
        assert "Console: http://127.0.0.1:" in printed
        for role in ("admin", "dispatcher", "reliability_engineer", "field_engineer", "technician", "viewer"):
            assert f"demo-{role.replace('_', '-')} ({role})" in printed
    finally:
        drop_database(admin_db_url, name)


def test_demo_refuses_to_drop_a_database_it_did_not_create(admin_db_url: str, uid: str) -> None:
    """A database of the demo's name that the demo did not create and mark is left alone: one line, exit 1."""
    name = f"fwdemo_{uid}"
    url = create_database(admin_db_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE precious (x int)")
        res = subprocess.run(
            [FIELDWATCH, "demo", "--database", name, "--exit-after-dispatch", "--timeout", "5"],
            env={**os.environ, "FIELDWATCH_DATABASE_URL": admin_db_url, "COLUMNS": "80"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 1, res.stderr
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert "refusing to drop it" in lines[-1] and "Traceback" not in res.stderr
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('precious')").fetchone() == ("precious",)
    finally:
        drop_database(admin_db_url, name)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_stops_everything(run_dir: Path) -> None:
    """SIGINT during the demo stops every part cleanly, exits 0 and leaves no process behind."""
    env = {k: v for k, v in os.environ.items() if k not in ("FIELDWATCH_DATABASE_URL", "FIELDWATCH_MQTT_URL")}
    env["TMPDIR"] = str(run_dir)
    proc = subprocess.Popen(
        [FIELDWATCH, "demo", "--api-port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if "Readings flowing" in line:
            break
    else:
        proc.kill()
        pytest.fail("demo did not start: " + "".join(seen)[-2000:])
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("demo did not stop within 40 s of Ctrl-C")
    assert proc.returncode == 0, err[-2000:]
    assert "Stopped cleanly" in err
    assert _processes_under(run_dir) == []


def test_live_screen_renders_every_state() -> None:
    """The terminal screen renders before data arrives, with a hot bearing, an alarm and an assigned ticket."""
    from datetime import UTC, datetime

    from rich.console import Console

    from fieldwatch.demo import DemoState, _render

    console = Console(record=True, width=140, force_terminal=True)
    console.print(_render(DemoState(), "http://127.0.0.1:8000", time.monotonic()))
    now = datetime.now(UTC)
    state = DemoState(
        points=1234,
        latest={
            "P-101": {"flow": 120.0, "discharge_pressure": 6.0, "bearing_temp": 91.5, "vibration": 9.0},
            "P-102": {"bearing_temp": 60.2},
        },
        alarms=[
            {
                "id": 1,
                "device": "P-101",
                "rule": "Bearing overheating",
                "severity": "major",
                "state": "active",
                "opened_at": now,
            }
        ],
        tickets=[
            {
                "id": 1,
                "device": "P-101",
                "title": "Bearing overheating on Pump P-101",
                "priority": 1,
                "status": "assigned",
                "technician": "Ana Ruiz",
                "distance_km": 8.5,
                "eta_minutes": 10.2,
                "reason": "nearest qualified",
                "created_at": now,
                "assigned_at": now,
                "alarm_opened_at": now,
            },
            {
                "id": 2,
                "device": "P-102",
                "title": "t",
                "priority": 3,
                "status": "new",
                "technician": None,
                "distance_km": None,
                "eta_minutes": None,
                "reason": "",
                "created_at": now,
                "assigned_at": None,
                "alarm_opened_at": None,
            },
        ],
        fault_at=time.monotonic(),
    )
    console.print(_render(state, "http://127.0.0.1:8000", time.monotonic()))
    text = console.export_text()
    for expected in (
        "1,234 points",
        "91.5",
        "60.2",
        "Bearing overheating",
        "Ana Ruiz",
        "10 min (8.5 km)",
        "unassigned",
        "fault injected",
    ):
        assert expected in text


def test_the_eta_counts_down_to_the_planned_arrival() -> None:
    """The screen's ETA is the time left until the planned arrival at each refresh, not the number frozen
    when the ticket was placed."""
    from datetime import UTC, datetime, timedelta

    from fieldwatch.demo import eta_text

    placed = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    ticket = {"status": "assigned", "distance_km": 8.5, "eta_minutes": 12.0, "assigned_at": placed}
    planned = {**ticket, "eta_at": placed + timedelta(minutes=20)}  # re-planned: another stop comes first
    assert eta_text(planned, placed) == "20 min (8.5 km)"
    assert eta_text(planned, placed + timedelta(minutes=15)) == "5 min (8.5 km)"
    assert eta_text(planned, placed + timedelta(minutes=25)) == "arriving (8.5 km)"
    assert eta_text(ticket, placed + timedelta(minutes=4)) == "8 min (8.5 km)"  # unplanned: travel time placed
    assert eta_text({**planned, "status": "on_site"}, placed) == "on site"
