"""/healthz, /readyz and /metrics of a standalone ingest worker, over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from ingest.health import HealthServer, database_check
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
