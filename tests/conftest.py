"""Shared fixtures: a real PostgreSQL database per test and a real MQTT broker.

Each test gets its own database cloned from a migrated template (fast, isolated,
dropped afterwards) and a unique id for MQTT topic slugs. If PostgreSQL or the
broker is unreachable the run fails with a message saying how to start it; it
never skips silently. The logic lives in :mod:`tests.support`; these only adapt it to pytest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import db, mqtt, names, secrets

# The web console (NiceGUI) mounts once per process; servers started inside the test process run
# without it. Its tests start `fieldwatch serve` as a process of its own (tests/test_console_browser.py).
os.environ.setdefault("FIELDWATCH_CONSOLE_ENABLED", "false")
# The refusal tarpit (fieldwatch/api/tarpit.py) would hold the thousands of 401s and 403s the policy,
# limit and fuzz tests ask for on purpose, from one address, for seconds each: off for the suite
# (servers started as processes inherit it), on with its defaults in tests/test_api_tarpit.py.
os.environ.setdefault("FIELDWATCH_API_REFUSAL_DELAY_MAX_S", "0")


@pytest.fixture(scope="session")
def admin_db_url() -> str:
    """URL of the server's maintenance database; tests create their own databases through it."""
    try:
        return db.reachable_admin_url()
    except db.DatabaseSetupError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def template_db(admin_db_url: str) -> Iterator[str]:
    """A migrated database used as the template for each test's database."""
    with db.template_database(admin_db_url) as name:
        yield name


@pytest.fixture(scope="session")
def storage(admin_db_url: str, template_db: str) -> str:
    """The telemetry storage of the server under test: ``plain``, or ``timescale`` on a TimescaleDB server."""
    return db.storage_of_template(admin_db_url, template_db)


@pytest.fixture(autouse=True)
def _storage_marker(request: pytest.FixtureRequest) -> None:
    """Skip a test marked ``plain_storage`` on a TimescaleDB server (it checks partitions or rollup tables)."""
    if request.node.get_closest_marker("plain_storage") and request.getfixturevalue("storage") != "plain":
        pytest.skip("checks plain PostgreSQL storage (partitions, rollup tables); this server has TimescaleDB")


@pytest.fixture
def db_url(admin_db_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test only; dropped afterwards."""
    with db.fresh_database(admin_db_url, template_db) as url:
        yield url


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    """URL of the real MQTT broker; fails (never skips) with advice when it is down."""
    try:
        return mqtt.reachable_broker()
    except mqtt.BrokerUnreachable as exc:
        pytest.fail(str(exc))


@pytest.fixture
def uid() -> str:
    """A short unique id for topic slugs, client ids and names in this test."""
    return names.new_uid()


@pytest.fixture(scope="session", autouse=True)
def _retained_status_hygiene() -> Iterator[None]:
    """Clear retained statuses of test gateways from the shared broker before and after the session."""
    mqtt.clear_test_retained()
    yield
    mqtt.clear_test_retained()


@pytest.fixture(autouse=True)
def _no_secrets_in_logs() -> Iterator[None]:
    """Fail a test whose log records carry a known test secret (a token it minted, a test password)."""
    import logging

    secrets.reset()
    catcher = secrets.LeakCatcher()
    root = logging.getLogger()
    root.addHandler(catcher)
    try:
        yield
    finally:
        root.removeHandler(catcher)
    if catcher.leaks:
        pytest.fail("secrets in the logs:\n" + "\n".join(catcher.leaks))
