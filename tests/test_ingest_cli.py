"""``ingest run``: a worker from settings that stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from typer.testing import CliRunner

from ingest.cli import app
from tests.support.db import scalar
from tests.support.mqtt import forget_session, publisher
from tests.support.registry import pts, register
from tests.support.waits import wait_until


def test_help_lists_run() -> None:
    """The sub-app offers a ``run`` command."""
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "run" in result.output


def test_run_ingests_until_sigterm_then_exits_cleanly(db_url: str, mqtt_url: str, uid: str) -> None:
    """Started from FIELDWATCH_* settings, ``run`` stores published points and exits 0 on SIGTERM."""
    reg = register(db_url, uid)
    client_id = f"ing-cli-{uid}"
    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "FIELDWATCH_DATABASE_URL": db_url,
        "FIELDWATCH_MQTT_URL": mqtt_url,
        "FIELDWATCH_INGEST_CLIENT_ID": client_id,
        "FIELDWATCH_INGEST_SHARE_GROUP": f"grp-{uid}",
        "FIELDWATCH_INGEST_BATCH_MAX_WAIT_MS": "20",
        "FIELDWATCH_LOG_LEVEL": "INFO",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", "from ingest.cli import app; app()", "run"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stderr is not None
        for line in child.stderr:
            if "running" in line:
                break
        with publisher(mqtt_url, f"pub-{uid}") as publish:
            publish(reg.topic(), reg.batch(1, pts("pump-1", "temp", 4)))
        wait_until(lambda: scalar(db_url, "SELECT count(*) FROM telemetry") == 4)
        child.send_signal(signal.SIGTERM)
        assert child.wait(20) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr is not None:
            child.stderr.close()
        forget_session(mqtt_url, client_id)
