"""Shared fixtures: a real PostgreSQL database per test and a real MQTT broker.

Each test gets its own database cloned from a migrated template (fast, isolated,
dropped afterwards) and a unique id for MQTT topic slugs. If PostgreSQL or the
broker is unreachable the run fails with a message saying how to start it; it
never skips silently.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from fwcore.settings import DEFAULT_DATABASE_URL, DEFAULT_MQTT_URL, mqtt_parts

ADMIN_URL = os.environ.get("FIELDWATCH_DATABASE_URL", DEFAULT_DATABASE_URL)
MQTT_URL = os.environ.get("FIELDWATCH_MQTT_URL", DEFAULT_MQTT_URL)


@pytest.fixture(scope="session")
def admin_db_url() -> str:
    """URL of the server's maintenance database; tests create their own databases through it."""
    try:
        from fwcore.db import wait_for_db
    except ImportError as exc:  # server extra missing
        pytest.fail(f"psycopg is not installed ({exc}); install with: pip install -e '.[dev]'")
    try:
        wait_for_db(ADMIN_URL, timeout=10)
    except ConnectionError as exc:
        pytest.fail(str(exc))
    return ADMIN_URL


@pytest.fixture(scope="session")
def template_db(admin_db_url: str) -> Iterator[str]:
    """A migrated database used as the template for each test's database."""
    from fwcore.db import create_database, drop_database
    from ingest.schema import migrate

    name = f"fwtpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = create_database(admin_db_url, name)
    migrate(url)
    yield name
    drop_database(admin_db_url, name)


@pytest.fixture
def db_url(admin_db_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test only; dropped afterwards."""
    from fwcore.db import create_database, drop_database

    name = f"fwt_{uuid.uuid4().hex[:12]}"
    url = create_database(admin_db_url, name, template=template_db)
    yield url
    drop_database(admin_db_url, name)


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """URL of the real MQTT broker; fails (never skips) with advice when it is down."""
    parts = mqtt_parts(MQTT_URL)
    try:
        with socket.create_connection((parts["host"], parts["port"]), timeout=3):
            pass
    except OSError as exc:
        pytest.fail(
            f"MQTT broker at {MQTT_URL} is not reachable ({exc}). Start Mosquitto: "
            "`mkdir -p /run/mosquitto && chown mosquitto /run/mosquitto && "
            "mosquitto -d -c /etc/mosquitto/mosquitto.conf`, or set FIELDWATCH_MQTT_URL."
        )
    return MQTT_URL


@pytest.fixture
def uid() -> str:
    """A short unique id for topic slugs, client ids and names in this test."""
    return uuid.uuid4().hex[:8]


# Test gateways publish retained birth/death messages; left on a shared broker they would be
# dead-lettered as "unknown_gateway" by every later worker that subscribes to all sites (the demo
# on a real broker, say). Clear the ones whose site slug has the tests' random-suffix shape.
_TEST_SITE = re.compile(r"^fw/v1/(site|s)-[0-9a-f]{8}/[^/]+/status$")


def _clear_test_retained(url: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    parts = mqtt_parts(url)
    topics: set[str] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fw-test-cleaner-{uuid.uuid4().hex[:6]}")
    if parts["username"]:
        client.username_pw_set(parts["username"], parts["password"])
    client.on_message = lambda c, u, m: topics.add(m.topic) if m.retain and _TEST_SITE.match(m.topic) else None
    try:
        client.connect(parts["host"], parts["port"])
    except OSError:
        return
    client.loop_start()
    client.subscribe("fw/v1/+/+/status", qos=0)
    time.sleep(0.5)
    for t in topics:
        client.publish(t, b"", qos=1, retain=True).wait_for_publish(2)
    client.loop_stop()
    client.disconnect()


@pytest.fixture(scope="session", autouse=True)
def _retained_status_hygiene() -> Iterator[None]:
    _clear_test_retained(MQTT_URL)
    yield
    _clear_test_retained(MQTT_URL)
