"""/healthz, /readyz and /metrics of a standalone ingest worker, over real HTTP; the storage's job health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ingest.health import HealthServer, database_check, storage_check
from ingest.storage_health import JobState, judge_jobs
from tests.support.mqtt import forget_session
from tests.support.ports import closed_port, free_port
from tests.support.waits import wait_until


def test_readyz_names_the_failing_check_and_healthz_stays_ok() -> None:
    """An unreachable database makes /readyz 503 naming it, while /healthz is 200 and /metrics serves text."""
    dead = f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing"
    server = HealthServer({"database": database_check(dead, 1), "writer": lambda: None}, 0, "127.0.0.1").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        r = httpx.get(f"{base}/readyz", timeout=10)
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False and body["checks"]["writer"] == "ok"
        assert body["checks"]["database"].startswith("database unreachable")
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{base}/nope", timeout=5).status_code == 404
        assert "# HELP" in httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        server.stop()
        server.stop()


def test_ingest_run_serves_ready_health_and_metrics(db_url: str, mqtt_url: str, uid: str) -> None:
    """`fieldwatch ingest run --metrics-port` answers /readyz 200 once broker, database and writer are up."""
    port = free_port()
    client_id = f"ing-health-{uid}"
    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "FIELDWATCH_DATABASE_URL": db_url,
        "FIELDWATCH_MQTT_URL": mqtt_url,
        "FIELDWATCH_INGEST_CLIENT_ID": client_id,
        "FIELDWATCH_INGEST_SHARE_GROUP": f"grp-{uid}",
    }
    args = ["run", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    child = subprocess.Popen(
        [sys.executable, "-c", "from ingest.cli import app; app()", *args],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def readyz() -> httpx.Response:
            assert child.poll() is None, f"ingest run exited with {child.returncode}"
            return httpx.get(f"{base}/readyz", timeout=5)

        ready = wait_until(
            readyz, 20, done=lambda r: r.status_code == 200, what="/readyz 200", ignore=(httpx.TransportError,)
        )
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert ready.json()["checks"] == {"broker": "ok", "database": "ok", "writer": "ok"}
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert f'fieldwatch_ingest_queue_depth{{worker="{client_id}"}}' in metrics
        child.send_signal(signal.SIGTERM)
        assert child.wait(20) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        forget_session(mqtt_url, client_id)


NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def job(**kw: object) -> JobState:
    base: dict[str, object] = {
        "job_id": 1000,
        "proc": "policy_refresh_continuous_aggregate",
        "target": "telemetry_1m",
        "scheduled": True,
        "schedule_interval": MIN,
        "last_run_status": "Success",
        "last_run_started_at": NOW - MIN,
        "next_start": NOW + MIN,
    }
    return JobState(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("jobs", "problems"),
    [
        ([], []),
        ([job()], []),
        ([job(last_run_status=None, last_run_started_at=None, next_start=None)], []),  # never ran yet
        ([job(next_start=NOW - 3 * MIN)], []),  # a little late: within the grace
        (
            [job(last_run_status="Failed", consecutive_failures=1, last_error="out of memory")],
            ["job 1000 (refresh telemetry_1m) failed its last run at 2026-03-02 11:59:00+0000: out of memory"],
        ),
        (
            [
                job(
                    job_id=7,
                    proc="policy_compression",
                    target="telemetry",
                    last_run_status="Failed",
                    consecutive_failures=4,
                    last_run_started_at=None,
                )
            ],
            ["job 7 (compression telemetry) failed its last run, 4 times in a row"],
        ),
        (
            [job(scheduled=False)],
            ["job 1000 (refresh telemetry_1m) is paused (scheduled = false): alter_job(1000, scheduled => true)"],
        ),
        (
            [job(next_start=NOW - timedelta(hours=1)), job(job_id=1001, target="telemetry_1h")],
            [
                "job 1000 (refresh telemetry_1m) is overdue since 2026-03-02 11:00:00+0000: are TimescaleDB's "
                "background workers running (timescaledb.max_background_workers)?"
            ],
        ),
    ],
)
def test_storage_is_degraded_by_failing_paused_or_overdue_jobs(jobs: list[JobState], problems: list[str]) -> None:
    """Every failing, paused or overdue background job is one problem and makes the storage degraded; else ok."""
    health = judge_jobs(jobs, NOW)
    assert (health.status, health.problems) == ("degraded" if problems else "ok", problems)
    assert health.summary() == ("degraded: " + "; ".join(problems) if problems else "ok")


def test_readyz_reports_degraded_storage_but_stays_ready() -> None:
    """A failing storage job is shown in /readyz beside the checks, and the worker stays ready (200)."""
    problem = "degraded: job 1000 (refresh telemetry_1m) failed its last run"
    server = HealthServer({"writer": lambda: None}, 0, "127.0.0.1", storage=lambda: problem).start()
    try:
        r = httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=10)
    finally:
        server.stop()
    assert r.status_code == 200
    assert r.json() == {"ready": True, "checks": {"writer": "ok"}, "storage": problem}


def test_storage_without_timescaledb_is_ok(db_url: str) -> None:
    """On plain PostgreSQL there are no background jobs to fail: the storage check says nothing is wrong."""
    assert storage_check(db_url)() is None
