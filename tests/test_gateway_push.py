"""What the Gateways page stands on, without a browser: reading a gateway's report and buffer out of its
messages, checking a config before it is pushed, ingest storing the report and announcing a new outcome,
and the API's push (validated, recorded, published retained) — against PostgreSQL and Mosquitto."""

from __future__ import annotations

import os
import time

import orjson
import psycopg
import pytest
import yaml

from fieldwatch.console import gateway_config
from fieldwatch.console.gateway_config import PUSH
from fieldwatch.console.session import CSRF_HEADER
from fwcore import policy
from fwcore.auth import ROLES
from fwcore.events import EventListener, GatewayBufferEvent, GatewayConfigEvent, GatewayStatusEvent, parse
from gateway.remote_config import RemoteConfigRejected, check_push
from ingest.gateway_fleet import gateway_views
from ingest.gateway_report import buffer_of, config_outcome, parse_report
from ingest.liveness import NO_HEARTBEAT, StoredStatus
from ingest.writer import StatusWrite, TelemetryWriter
from tests.support.api import BASE, api_client, auth, seed, token
from tests.support.mqtt import listener, publisher
from tests.support.names import new_uid
from tests.support.waits import wait_until
from tests.test_console_actions import TestClient
from tests.test_console_actions import _app as console_app
from tests.test_console_actions import _signed_in as console_signed_in
from tests.test_console_actions import _users as console_users

MQTT_URL = os.environ.get("FIELDWATCH_MQTT_URL", "mqtt://127.0.0.1:1883")


def _doc(version: object, **kw: object) -> str:
    data = {
        "site": "plant-a",
        "gateway": "gw-a",
        "config_version": version,
        "devices": [{"name": "pump-1", "host": "127.0.0.1", "port": 5020, "profile": "pump-p100"}],
        **kw,
    }
    return yaml.safe_dump(data)


# --- pure -----------------------------------------------------------------------------------------


def test_a_full_status_gives_devices_profiles_and_the_config_outcome() -> None:
    """The report keeps devices, profiles and config.last; a bare birth has none; bad entries are left out."""
    status = {
        "v": 1,
        "gateway": "gw-a",
        "state": "online",
        "ts": 1,
        "devices": {"pump-1": "online", "pump-9": 7},
        "profiles": {"pump-1": "pump-p100@1"},
        "config": {
            "version": 8,
            "last": {"version": "8", "outcome": "rolled_back", "error": "pump-9 silent", "ts": 5, "added": ["pump-9"]},
        },
    }
    report = parse_report(orjson.dumps(status))
    assert report == {
        "devices": {"pump-1": "online"},
        "profiles": {"pump-1": "pump-p100@1"},
        "config": {
            "version": "8",
            "last": {
                "version": "8",
                "outcome": "rolled_back",
                "error": "pump-9 silent",
                "ts": 5,
                "added": ["pump-9"],
                "removed": [],
                "changed": [],
            },
        },
    }
    assert config_outcome(report) == ("8", "rolled_back", 5)
    assert parse_report(b'{"v": 1, "gateway": "gw-a", "state": "online", "ts": 1}') is None
    assert parse_report(b"not json") is None


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ({"buffer": {"depth": 3, "oldest_unacked_age_s": 12.5}}, (3, 12.5)),
        ({"buffer": {"depth": 0}}, (0, 0.0)),
        ({"buffer": {"depth": "3"}}, None),
        ({"buffer": {"depth": True}}, None),
        ({}, None),
    ],
)
def test_the_disk_buffer_is_read_from_a_health_message(health: dict, expected: object) -> None:
    """Depth and oldest age when well-formed; None otherwise (nothing stored)."""
    assert buffer_of(health) == expected


@pytest.mark.parametrize(
    ("document", "previous", "says"),
    [
        ("devices: [", None, "neither JSON nor YAML"),
        ("- a list", None, "must be a mapping"),
        (_doc(None), None, "no config_version"),
        (_doc(2).replace("gw-a", "gw-b"), None, "not this gateway plant-a/gw-a"),
        (_doc(2, devices=[{"name": "pump-1", "host": "127.0.0.1"}]), None, "pump-1"),
        (_doc(2, poll_interval=5), _doc(1), "changes poll_interval"),
        (_doc(1), _doc(1), "was pushed already"),
    ],
)
def test_a_config_that_does_not_validate_says_what_to_fix(document: str, previous: str | None, says: str) -> None:
    """Each refusal names the problem: syntax, shape, version, identity, the bad device, a restart field, a repeat."""
    with pytest.raises(RemoteConfigRejected, match=says):
        check_push(document, site="plant-a", gateway="gw-a", previous=previous)


def test_a_valid_config_passes_the_check() -> None:
    """A config for this gateway with a new version and a valid device is accepted, with or without a previous one."""
    assert check_push(_doc("2"), site="plant-a", gateway="gw-a", previous=None).config_version == "2"
    assert check_push(_doc("3"), site="plant-a", gateway="gw-a", previous=_doc("2")).config_version == "3"


# --- ingest ---------------------------------------------------------------------------------------


def test_ingest_stores_disk_buffers_and_announces_them_once_committed(db_url: str) -> None:
    """New buffer figures are stored with gateway_buffer naming the gateways, so the Gateways page redraws them."""
    fleet = seed(db_url)
    gw_a, gw_b = fleet.gateways["gw-a"], fleet.gateways["gw-b"]
    writer = TelemetryWriter(db_url)
    with psycopg.connect(db_url, autocommit=True) as listening:
        EventListener().listen(listening)
        writer.set_buffers([(gw_b, 4, 30.5), (gw_a, 0, 0.0)])
        writer.set_buffers([])  # nothing changed: nothing sent
        got = [parse(n.payload) for n in listening.notifies(timeout=1, stop_after=2)]
    writer.close()
    assert got == [GatewayBufferEvent(gateway_ids=sorted([gw_a, gw_b]))]
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "SELECT buffer_depth, buffer_oldest_age_s FROM gateways WHERE id = %s", (gw_b,)
        ).fetchone()
    assert stored == (4, 30.5)


def test_ingest_stores_a_report_and_announces_status_and_a_new_outcome(db_url: str) -> None:
    """A full status stores the report (devices' states, profiles, outcome); gateway_status is sent for each
    applied status and heartbeat verdict, gateway_config only when the outcome is new."""
    fleet = seed(db_url)
    gw = fleet.gateways["gw-a"]
    report = parse_report(
        orjson.dumps(
            {
                "devices": {"pump-1": "offline"},
                "profiles": {"pump-1": "pump-p100@2"},
                "config": {"version": "4", "last": {"version": "4", "outcome": "applied", "ts": 9}},
            }
        )
    )
    now = int(time.time() * 1000)
    writer = TelemetryWriter(db_url)
    with psycopg.connect(db_url, autocommit=True) as listening:
        EventListener().listen(listening)
        writer.write([], [], [StatusWrite(gw, "online", now, 7, "connected", report)])
        writer.write([], [], [StatusWrite(gw, "online", now + 1, 7, "connected", report)])  # same outcome again
        got = [parse(n.payload) for n in listening.notifies(timeout=2, stop_after=3)]
    assert got == [
        GatewayStatusEvent(gateway_id=gw, status="online"),
        GatewayConfigEvent(gateway_id=gw, version="4", outcome="applied"),
        GatewayStatusEvent(gateway_id=gw, status="online"),
    ]
    with psycopg.connect(db_url) as conn:
        (view,) = gateway_views(conn, gw)
    assert view.status == "online" and view.config_version == "4"
    seen = StoredStatus("online", 7, now + 1, "connected")
    with psycopg.connect(db_url, autocommit=True) as listening:
        EventListener().listen(listening)
        assert writer.set_liveness(gw, seen, "offline", now + 2, NO_HEARTBEAT, 7)
        assert not writer.set_liveness(gw, seen, "offline", now + 3, NO_HEARTBEAT, 7)  # no longer what was seen
        verdicts = [parse(n.payload) for n in listening.notifies(timeout=1, stop_after=2)]
    writer.close()
    assert verdicts == [GatewayStatusEvent(gateway_id=gw, status="offline")]
    assert view.last_config is not None and view.last_config.outcome == "applied"
    assert [(d.key, d.state, d.profile) for d in view.devices] == [("pump-1", "offline", "pump-p100@2")]


# --- the API --------------------------------------------------------------------------------------


def test_the_api_pushes_a_valid_config_retained_and_refuses_an_invalid_one(db_url: str) -> None:
    """A field engineer's valid config is recorded and published retained on the gateway's config topic; an
    invalid one is 422 naming the problem and changes nothing; a viewer is refused (403)."""
    fleet = seed(db_url)
    gw = fleet.gateways["gw-a"]
    engineer, viewer = token(db_url, "field_engineer"), token(db_url, "viewer")
    path = f"{BASE}/gateways/{gw}/config"
    try:
        with api_client(db_url) as api, listener(MQTT_URL, f"cfg-{new_uid()}", "fw/v1/plant-a/gw-a/config") as got:
            bad = api.post(path, json={"document": _doc(None)}, headers=auth(engineer))
            assert bad.status_code == 422 and "config_version" in bad.text
            assert api.post(path, json={"document": _doc("5")}, headers=auth(viewer)).status_code == 403
            ok = api.post(path, json={"document": _doc("5")}, headers=auth(engineer))
            assert ok.status_code == 202, ok.text
            assert ok.json()["version"] == "5"
            wait_until(lambda: got, 10, what="the config on the gateway's topic")
            assert yaml.safe_load(got[0])["config_version"] == "5"
        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT version FROM gateway_configs WHERE gateway_id = %s", (gw,)).fetchall()
        assert rows == [("5",)]
    finally:
        with publisher(MQTT_URL, f"clear-{new_uid()}") as pub:
            pub("fw/v1/plant-a/gw-a/config", b"", retain=True)


# --- the console's push endpoint ------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_push_from_the_console_exactly_as_the_policy_allows(db_url: str, role: str) -> None:
    """The console's push answers as fwcore.policy decides for each role (403 with the reason, else the check's
    422 for a config without a version); nothing is recorded either way; without the CSRF token it is 403."""
    fleet = seed(db_url)
    console_users(db_url, fleet.technicians[next(iter(fleet.technicians))])
    path = PUSH.format(gateway_id=fleet.gateways["gw-a"])
    app = console_app(db_url)
    app.include_router(gateway_config.router)
    with TestClient(app) as client:
        csrf = console_signed_in(client, role)
        r = client.post(path, json={"document": _doc(None)}, headers={CSRF_HEADER: csrf})
        allowed = policy.decide(policy.Principal(role, role, technician_id=1), "gateway.configure").allowed
        if allowed:
            assert r.status_code == 422 and "config_version" in r.json()["detail"]
        else:
            assert r.status_code == 403 and "may not" in r.json()["detail"]
        assert client.post(path, json={"document": _doc("1")}).status_code == 403  # no CSRF token
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM gateway_configs").fetchone() == (0,)
